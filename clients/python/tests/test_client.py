"""The Python client against a real graft serve: every call, bit-exact round trips, frozen
layers enforced before data moves, tokens, and an upload cut mid-way then retried."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import requests
import torch
from torch import nn

import graft
from conftest import graft as run_graft


class Net(nn.Module):
    """A small CNN: convolution + BatchNorm features (with int64 num_batches_tracked), a head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16 * 24 * 24, classes)


@pytest.fixture()
def setup(server):
    torch.manual_seed(0)
    client = graft.Client(server.url, token=server.token("w", "write"))
    teacher = Net()
    base = client.register_base("teacher", teacher.state_dict(), license="mit", architecture="tiny-cnn")
    return server, client, teacher, base


def test_version_and_defaults(monkeypatch, server):
    assert graft.__version__ == "0.6.0"
    monkeypatch.setenv("GRAFT_URL", server.url)
    monkeypatch.setenv("GRAFT_TOKEN", "graft_x")
    client = graft.Client()
    assert client.url == server.url and client.token == "graft_x"
    monkeypatch.delenv("GRAFT_URL")
    monkeypatch.delenv("GRAFT_REGISTRY", raising=False)
    with pytest.raises(ValueError):
        graft.Client()


def test_student_commit_sends_only_changed_tensors(setup):
    server, client, teacher, base = setup
    assert base.ref == "teacher@1" and base.digest.startswith("sha256:")
    student = client.create_student("fe", "teacher@1", freeze=["features"], train=["head"])
    assert "features.0.weight" in student.frozen and "features.1.num_batches_tracked" in student.frozen
    tuned = Net()
    tuned.features.load_state_dict(teacher.features.state_dict())  # frozen: untouched
    head = sum(t.numel() * t.element_size() for t in tuned.head.state_dict().values())
    checkpoint = client.commit("fe", tuned.state_dict(), step=10, epoch=1, metrics={"val/accuracy": 0.5}, split="val")
    assert checkpoint.ref == "fe@1"
    # The head (and the JSON around it) travelled; the frozen features did not.
    features = sum(t.numel() * t.element_size() for t in tuned.features.state_dict().values())
    assert head <= checkpoint.bytes_uploaded < head + 20_000, (checkpoint.bytes_uploaded, head, features)
    # The same state_dict through the CLI from a file gives the same checkpoint digest.
    path = os.path.join(os.path.dirname(server.registry), "fe.safetensors")
    client.download("fe@1", path)
    assert client.commit("fe", path).digest == checkpoint.digest


def test_torch_round_trip_is_bit_exact(setup):
    _, client, _, _ = setup
    torch.manual_seed(1)
    weight = torch.randn(6, 4)
    state = {
        "w.f32": torch.randn(3, 5),
        "w.bf16": torch.randn(4, 4).to(torch.bfloat16),
        "w.f16": torch.randn(8).to(torch.float16),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "embeddings.position_ids": torch.arange(16, dtype=torch.int64).unsqueeze(0),
        "transposed": torch.randn(5, 3).t(),  # non-contiguous
        "tied.a": weight,
        "tied.b": weight,  # shares storage with tied.a
    }
    checkpoint = client.register_base("zoo", state)
    loaded = client.load_state_dict(checkpoint.ref)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor.contiguous()), name
    # Tied weights are one blob: their digests agree.
    tensors = {t["name"]: t["digest"] for layer in client._json("GET", ["v1", "checkpoints", "zoo@1"])["layers"] for t in layer["tensors"]}
    assert tensors["tied.a"] == tensors["tied.b"]
    numpy_state = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2, 3], dtype=np.int64)}
    client.register_base("np", numpy_state)
    back = client.load_numpy("np@1")
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in numpy_state.items())


def test_frozen_drift_raises_naming_the_tensor_and_stores_nothing(setup):
    server, client, teacher, _ = setup
    client.create_student("ft", "teacher@1", freeze=["features"])
    drifted = Net()
    drifted.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        drifted.features[3].weight[0, 0, 0, 0] += 1.0
        drifted.features[1].running_mean += 0.5  # a BatchNorm buffer moved: also frozen
    blobs = sorted(os.listdir(os.path.join(server.registry, "blobs", "sha256")))
    with pytest.raises(graft.FrozenTensorChanged) as refused:
        client.commit("ft", drifted.state_dict())
    assert sorted(refused.value.tensors) == ["features.1.running_mean", "features.3.weight"]
    assert {v["rule"] for v in refused.value.violations} == {"changed"}
    assert all(v["expected"].startswith("sha256:") and v["found"] != v["expected"] for v in refused.value.violations)
    assert isinstance(refused.value, graft.Conflict) and isinstance(refused.value, graft.GraftError)
    assert client.checkpoints("ft") == []
    assert sorted(os.listdir(os.path.join(server.registry, "blobs", "sha256"))) == blobs


def test_reads_metrics_best_lineage_affected_tag(setup):
    server, client, teacher, _ = setup
    for name, accuracy in (("a", 0.6), ("b", 0.8)):
        client.create_student(name, "teacher@1", freeze=["features"])
        tuned = Net()
        tuned.features.load_state_dict(teacher.features.state_dict())
        client.commit(name, tuned.state_dict(), epoch=1, metrics={"val/accuracy": accuracy}, split="val")
        client.log_curve(name, 10, {"train/loss": 1.5})
    assert client.log_metrics("a@1", {"test/accuracy": 0.55}) == "a@1"
    best = client.best("val/accuracy", under="teacher", split="val")
    assert best.ref == "b@1" and best.value == 0.8
    assert client.best("val/accuracy", under="teacher", split="val", mode="min").ref == "a@1"
    assert client.best("test/accuracy", model="a").value == 0.55
    # The split travels: the value is found on that split and only there.
    assert client.log_metrics("a@1", {"test/f1": 0.4}, split="holdout") == "a@1"
    assert client.best("test/f1", model="a", split="holdout").value == 0.4
    with pytest.raises(graft.NotFound):
        client.best("test/f1", model="a")
    logged = [(m["name"], m.get("split")) for c in client.metrics("a")["checkpoints"] for m in c["metrics"]]
    assert ("test/f1", "holdout") in logged
    lineage = client.lineage("teacher")
    assert sorted(node["name"] for node in lineage["descendants"]) == ["a", "b"]
    assert all(node["parent"] == "teacher@1" for node in lineage["descendants"])
    assert client.tag("b@1", "production")["checkpoint"] == "b@1"
    assert client.checkpoints("b")[0].ref == "b@1"
    metrics = client.metrics("a")
    assert metrics["curves"][0]["name"] == "train/loss"
    assert client.affected("teacher") == []
    admin = graft.Client(server.url, token=server.token("adm", "admin"))
    admin._json("POST", ["v1", "advisories"], body={"on": "teacher", "id": "leak-1", "severity": "high"})
    affected = client.affected("teacher")
    assert sorted(entry["model"] for entry in affected) == ["a", "b"]
    # Exposure: the frozen features are held byte for byte, the new head is not; drift as torch computes it.
    entry = next(e for e in affected if e["model"] == "a")
    state, original = client.load_state_dict("a@1"), teacher.state_dict()
    floats = [k for k, v in original.items() if v.is_floating_point()]
    difference = sum(float(((state[k].double() - original[k].double()) ** 2).sum()) for k in floats)
    magnitude = sum(float((original[k].double() ** 2).sum()) for k in floats)
    assert entry["ancestor"] == "teacher@1" and entry["measured"] == "a@1"
    held = sum(v.numel() * v.element_size() for k, v in original.items() if k.startswith("features."))
    total = sum(v.numel() * v.element_size() for v in original.values())
    assert entry["exposure"] == pytest.approx(held / total) and entry["frozen_depth"] >= 1
    assert abs(entry["drift"] - (difference / magnitude) ** 0.5) < 1e-6
    assert [layer["identical"] for layer in entry["layers"]][-1] is False
    pair = client.exposure("a", to="teacher@1")
    assert pair["exposure"] == entry["exposure"] and pair["layers"] == entry["layers"]
    assert "drift" not in client.affected("teacher", exposure="none")[0]
    with pytest.raises(ValueError):
        client.affected("teacher", exposure="all")
    with pytest.raises(graft.NotFound):
        client.best("val/accuracy", under="teacher", split="val")  # every candidate flagged
    assert client.best("val/accuracy", under="teacher", split="val", include_flagged=True).ref == "b@1"
    with pytest.raises(graft.NotFound):
        client.model("nobody")
    with pytest.raises(graft.InvalidInput):
        client.model("../etc")


def test_download_is_byte_identical(setup, tmp_path):
    server, client, teacher, base = setup
    path = tmp_path / "out.safetensors"
    digest = client.download("teacher@1", path)
    assert digest == base.digest
    reference = tmp_path / "ref.safetensors"
    assert run_graft("export", "teacher@1", "-o", str(reference), registry=server.registry).returncode == 0
    assert path.read_bytes() == reference.read_bytes()


def test_tokens(setup):
    server, client, teacher, _ = setup
    reader = graft.Client(server.url, token=server.token("r", "read"))
    with pytest.raises(graft.PermissionDenied) as denied:
        reader.create_student("x", "teacher@1")
    assert denied.value.status == 403
    with pytest.raises(graft.PermissionDenied) as unknown:
        graft.Client(server.url, token="graft_" + "A" * 43).models()
    assert unknown.value.status == 401
    assert [m["name"] for m in reader.models()] == ["teacher"]


def test_upload_cut_midway_then_retried(setup):
    server, client, teacher, _ = setup
    client.create_student("cut", "teacher@1", freeze=["features"])
    tuned = Net()
    tuned.features.load_state_dict(teacher.features.state_dict())
    state = tuned.state_dict()

    class Cut(graft.Client):
        """Sends half of the first blob, then the connection breaks."""

        def _request(self, method, path, **kwargs):
            if method == "PUT":
                data = bytes(kwargs["data"])

                def half():
                    yield data[: len(data) // 2]
                    raise ConnectionError("cable pulled")

                kwargs = dict(kwargs, data=half(), headers={"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"})
            return super()._request(method, path, **kwargs)

    with pytest.raises((graft.Unavailable, requests.RequestException, ConnectionError)):
        Cut(server.url, token=client.token).commit("cut", state)
    assert client.checkpoints("cut") == []
    checkpoint = client.commit("cut", state)
    assert checkpoint.ref == "cut@1"
    verify = run_graft("verify", "--read-data", registry=server.registry)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    head = tuned.head.weight.detach().numpy().tobytes()
    stored = [t for layer in client._json("GET", ["v1", "checkpoints", "cut@1"])["layers"] for t in layer["tensors"] if t["name"] == "head.weight"][0]
    assert stored["digest"] == "sha256:" + hashlib.sha256(head).hexdigest()


def test_download_checked_against_announced_digest(setup, tmp_path, monkeypatch):
    server, client, teacher, base = setup
    # The server announces the checkpoint digest as the ETag; bytes that do not hash to it are refused.
    original = graft.Client._download_to

    def lying(self, ref, out):
        original(self, ref, out)
        return "sha256:" + "0" * 64

    monkeypatch.setattr(graft.Client, "_download_to", lying)
    with pytest.raises(graft.GraftError) as damaged:
        client.load_state_dict("teacher@1")
    assert damaged.value.kind == "damage"
    target = tmp_path / "never.safetensors"
    with pytest.raises(graft.GraftError):
        client.download("teacher@1", target)
    assert not target.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".graft-download-")]
