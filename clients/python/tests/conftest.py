"""A real `graft serve` on a free loopback port for each test module, stopped afterwards."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import graft_process  # noqa: E402

GRAFT = os.environ.get("GRAFT_BINARY", str(ROOT / ".build" / "debug" / "graft"))


def graft(*args: str, registry: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRAFT, *args, "--registry", registry], capture_output=True, text=True, timeout=120)


class Server(graft_process.Server):
    def __init__(self, registry: str):
        super().__init__(GRAFT, registry, os.path.join(os.path.dirname(registry), "serve.log"))

    def token(self, name: str, scope: str, models: str | None = None) -> str:
        args = ["token", "create", name, "--scope", scope] + (["--models", models] if models else [])
        result = graft(*args, registry=self.registry)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]


@pytest.fixture()
def server(tmp_path):
    registry = str(tmp_path / "registry")
    assert graft("init", registry=registry).returncode == 0
    running = Server(registry)
    try:
        yield running
    finally:
        running.stop()
