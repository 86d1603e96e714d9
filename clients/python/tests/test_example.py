"""examples/pytorch_transfer.py runs end to end (quick mode) against a real graft serve: the
teacher and its three students land with their manifests enforced on every epoch's commit."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import graft

EXAMPLE = pathlib.Path(__file__).resolve().parents[3] / "examples" / "pytorch_transfer.py"


def test_example_quick(server):
    token = server.token("example", "write")
    env = dict(os.environ, GRAFT_URL=server.url, GRAFT_TOKEN=token)
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best under fmnist-teacher-pt: fmnist-5to9-pt-" in result.stdout
    client = graft.Client(server.url, token=token)
    for mode in ("fe", "partial", "full"):
        assert [c.ref for c in client.checkpoints(f"fmnist-5to9-pt-{mode}")] == [f"fmnist-5to9-pt-{mode}@1", f"fmnist-5to9-pt-{mode}@2"]
    # Feature extraction really froze the features, BatchNorm statistics included.
    teacher = client.load_state_dict("fmnist-teacher-pt@1")
    student = client.load_state_dict("fmnist-5to9-pt-fe@2")
    for name in ("features.0.weight", "features.1.running_mean", "features.1.num_batches_tracked", "features.4.weight"):
        assert (teacher[name] == student[name]).all(), name
    assert not (teacher["head.weight"] == student["head.weight"]).all()
    best = client.best("val/accuracy", under="fmnist-teacher-pt", split="val")
    assert best.model.startswith("fmnist-5to9-pt-")
