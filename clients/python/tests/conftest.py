"""A real `graft serve` on a free loopback port for each test module, stopped afterwards."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
GRAFT = os.environ.get("GRAFT_BINARY", str(ROOT / ".build" / "debug" / "graft"))


def graft(*args: str, registry: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRAFT, *args, "--registry", registry], capture_output=True, text=True, timeout=120)


class Server:
    def __init__(self, registry: str):
        self.registry = registry
        self.log = open(os.path.join(os.path.dirname(registry), "serve.log"), "w")
        self.process = subprocess.Popen([GRAFT, "serve", "--registry", registry, "--listen", "127.0.0.1:0"],
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"graft serve did not start: {line!r}")
        self.url = line.split("listening on ")[1].split(" ")[0]

    def token(self, name: str, scope: str, models: str | None = None) -> str:
        args = ["token", "create", name, "--scope", scope] + (["--models", models] if models else [])
        result = graft(*args, registry=self.registry)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture()
def server(tmp_path):
    registry = str(tmp_path / "registry")
    assert graft("init", registry=registry).returncode == 0
    running = Server(registry)
    try:
        yield running
    finally:
        running.stop()
