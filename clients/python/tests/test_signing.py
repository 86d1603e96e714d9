"""OpenSSF model signing (issue 29) checked against the reference `model-signing` package, offline
with key pairs, in both directions: `model_signing verify key` accepts what `graft sign` + `graft
export` write (one file, a sharded directory, a directory with subfolders; P-256 and P-384), and
`graft verify-signature` / `graft base add --public-key` accept what `model_signing sign key`
writes; every tamper case is refused by both."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("model_signing")
np = pytest.importorskip("numpy")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from conftest import GRAFT, graft  # noqa: E402

MODEL_SIGNING = [sys.executable, "-m", "model_signing"]
SIGNATURE_FAILED = 82


def keys(directory: pathlib.Path, curve: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A fresh EC key pair in PEM files (openssl, as a user makes one)."""
    private, public = directory / f"{curve}.key.pem", directory / f"{curve}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", curve, "-genkey", "-noout", "-out", str(private)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)], check=True, capture_output=True)
    return private, public


def reference_verify(model: pathlib.Path, public: pathlib.Path, signature: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODEL_SIGNING, "verify", "key", str(model), "--public_key", str(public), "--signature", str(signature)],
        capture_output=True, text=True, timeout=120)


def reference_sign(model: pathlib.Path, private: pathlib.Path, signature: pathlib.Path) -> None:
    result = subprocess.run(
        [*MODEL_SIGNING, "sign", "key", str(model), "--private_key", str(private), "--signature", str(signature)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def sharded_model(directory: pathlib.Path) -> pathlib.Path:
    """Two safetensors shards with their index, a config and a tokenizer file in a subfolder."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True)
    safetensors_numpy.save_file(
        {"encoder.weight": rng.standard_normal((96, 64)).astype(np.float32), "encoder.bias": np.zeros(64, np.float32)},
        str(directory / "model-00001-of-00002.safetensors"))
    safetensors_numpy.save_file(
        {"head.weight": rng.standard_normal((64, 10)).astype(np.float32)}, str(directory / "model-00002-of-00002.safetensors"))
    index = {"metadata": {"total_size": 0}, "weight_map": {
        "encoder.weight": "model-00001-of-00002.safetensors", "encoder.bias": "model-00001-of-00002.safetensors",
        "head.weight": "model-00002-of-00002.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text('{"model_type": "tiny"}\n')
    (directory / "tokenizer").mkdir()
    (directory / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    return directory


@pytest.mark.parametrize("curve", ["prime256v1", "secp384r1"])
def test_graft_signatures_verify_with_the_reference(tmp_path, curve):
    registry = str(tmp_path / "registry")
    assert graft("init", registry=registry).returncode == 0
    private, public = keys(tmp_path, curve)
    model = sharded_model(tmp_path / "model")
    single = tmp_path / "single.safetensors"
    shutil.copy(model / "model-00002-of-00002.safetensors", single)
    assert graft("base", "add", str(model), "--name", "tiny", registry=registry).returncode == 0
    assert graft("base", "add", str(single), "--name", "one", registry=registry).returncode == 0

    for name in ("tiny", "one"):
        signed = graft("sign", name, "--key", str(private), "--json", registry=registry)
        assert signed.returncode == 0, signed.stderr
        assert json.loads(signed.stdout)["signature"]["verified"] is True
    shown = json.loads(graft("show", "tiny@1", "--json", registry=registry).stdout)
    assert shown["signature"]["files"] == 5 and len(shown["signature"]["key_hint"]) == 64

    # A sharded directory with a subfolder: model.sig inside, every file listed.
    out = tmp_path / "out"
    exported = graft("export", "tiny", "-o", str(out), "--json", registry=registry)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["signature"] == str(out / "model.sig")
    result = reference_verify(out, public, out / "model.sig")
    assert result.returncode == 0 and "Verification succeeded" in result.stdout, result.stderr
    # One file: FILE.sig beside it, the file itself named `.` as the reference names it.
    one = tmp_path / "one.safetensors"
    assert graft("export", "one", "-o", str(one), registry=registry).returncode == 0
    result = reference_verify(one, public, tmp_path / "one.safetensors.sig")
    assert result.returncode == 0 and "Verification succeeded" in result.stdout, result.stderr
    # --no-signature leaves it out.
    bare = tmp_path / "bare"
    assert graft("export", "tiny", "-o", str(bare), "--no-signature", registry=registry).returncode == 0
    assert not (bare / "model.sig").exists()

    # Tampering with Graft's export: both verifiers refuse, Graft naming the file.
    (out / "config.json").write_text('{"model_type": "evil"}\n')
    assert reference_verify(out, public, out / "model.sig").returncode != 0
    ours = subprocess.run([GRAFT, "verify-signature", str(out), "--public-key", str(public)], capture_output=True, text=True)
    assert ours.returncode == SIGNATURE_FAILED and 'changed file "config.json"' in ours.stderr


@pytest.mark.parametrize("curve", ["prime256v1", "secp384r1"])
def test_reference_signatures_verify_with_graft_and_survive_registration(tmp_path, curve):
    registry = str(tmp_path / "registry")
    assert graft("init", registry=registry).returncode == 0
    private, public = keys(tmp_path, curve)
    _, other = keys(tmp_path, "prime256v1" if curve == "secp384r1" else "secp384r1")
    model = sharded_model(tmp_path / "model")
    reference_sign(model, private, model / "model.sig")
    original = (model / "model.sig").read_bytes()

    ok = subprocess.run([GRAFT, "verify-signature", str(model), "--public-key", str(public)], capture_output=True, text=True)
    assert ok.returncode == 0 and "Verification succeeded" in ok.stdout, ok.stderr
    wrong = subprocess.run([GRAFT, "verify-signature", str(model), "--public-key", str(other)], capture_output=True, text=True)
    assert wrong.returncode == SIGNATURE_FAILED and "key mismatch" in wrong.stderr

    # Registered with the key: verified first, kept byte for byte, exported back unchanged.
    added = graft("base", "add", str(model), "--name", "signed", "--public-key", str(public), registry=registry)
    assert added.returncode == 0 and "verified" in added.stdout, added.stderr
    out = tmp_path / "out"
    assert graft("export", "signed", "-o", str(out), registry=registry).returncode == 0
    assert (out / "model.sig").read_bytes() == original
    assert reference_verify(out, public, out / "model.sig").returncode == 0
    same = {p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    assert same == {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # Without a key: kept, shown as signed but not verified.
    assert graft("base", "add", str(model), "--name", "unverified", registry=registry).returncode == 0
    info = json.loads(graft("show", "unverified@1", "--json", registry=registry).stdout)["signature"]
    assert info["verified"] is False and info["origin"] == "imported"

    # With the wrong key, or a changed file: refused before anything is written.
    refused = graft("base", "add", str(model), "--name", "wrongkey", "--public-key", str(other), registry=registry)
    assert refused.returncode == SIGNATURE_FAILED and "key mismatch" in refused.stderr
    (model / "tokenizer" / "vocab.txt").write_text("a\nb\nX\n")
    refused = graft("base", "add", str(model), "--name", "changed", "--public-key", str(public), registry=registry)
    assert refused.returncode == SIGNATURE_FAILED and 'changed file "tokenizer/vocab.txt"' in refused.stderr
    listed = graft("list", "--json", registry=registry)
    assert {m["name"] for m in json.loads(listed.stdout)} == {"signed", "unverified"}


def test_every_tamper_case_is_refused_by_both(tmp_path):
    private, public = keys(tmp_path, "prime256v1")
    model = sharded_model(tmp_path / "model")
    reference_sign(model, private, model / "model.sig")
    pristine = (model / "model.sig").read_bytes()

    def both_refuse(expect: str) -> None:
        assert reference_verify(model, public, model / "model.sig").returncode != 0
        ours = subprocess.run([GRAFT, "verify-signature", str(model), "--public-key", str(public)], capture_output=True, text=True)
        assert ours.returncode == SIGNATURE_FAILED, ours.stderr
        assert expect in ours.stderr, ours.stderr

    bundle = json.loads(pristine)
    # An edited payload (a resource's digest changed, root digest recomputed to stay consistent is not needed:
    # the signature no longer covers it).
    import base64
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    edited = dict(bundle, dsseEnvelope=dict(bundle["dsseEnvelope"], payload=base64.b64encode(json.dumps(statement).encode()).decode()))
    (model / "model.sig").write_text(json.dumps(edited))
    both_refuse("does not verify")
    # An edited signature (one byte of the DER flipped).
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    edited = dict(bundle, dsseEnvelope=dict(bundle["dsseEnvelope"], signatures=[{"sig": base64.b64encode(bytes(sig)).decode(), "keyid": ""}]))
    (model / "model.sig").write_text(json.dumps(edited))
    both_refuse("the signature does not verify with this key")
    # A key hint that is not the key's.
    edited = dict(bundle, verificationMaterial={"publicKey": {"hint": "ab" * 32}, "tlogEntries": []})
    (model / "model.sig").write_text(json.dumps(edited))
    both_refuse("key mismatch")
    # Files: extra, missing, changed.
    (model / "model.sig").write_bytes(pristine)
    (model / "extra.txt").write_text("x")
    both_refuse('extra file "extra.txt"')
    os.remove(model / "extra.txt")
    os.remove(model / "config.json")
    both_refuse('missing file "config.json"')
    (model / "config.json").write_text('{"model_type": "tiny"}\n')
    ok = reference_verify(model, public, model / "model.sig")
    assert ok.returncode == 0, ok.stderr
    shard = model / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    both_refuse('changed file "model-00002-of-00002.safetensors"')


def test_python_client_shows_and_downloads_signatures(tmp_path, server):
    private, public = keys(tmp_path, "prime256v1")
    model = sharded_model(tmp_path / "model")
    reference_sign(model, private, model / "model.sig")
    registry = server.registry
    assert graft("base", "add", str(model), "--name", "signed", "--public-key", str(public), registry=registry).returncode == 0
    assert graft("base", "add", str(model / "model-00002-of-00002.safetensors"), "--name", "plain", registry=registry).returncode != 0
    single = tmp_path / "single.safetensors"
    shutil.copy(model / "model-00002-of-00002.safetensors", single)
    assert graft("base", "add", str(single), "--name", "one", registry=registry).returncode == 0
    import graft as graft_client

    client = graft_client.Client(server.url, token=server.token("reader", "read"))
    info = client.signature("signed@1")
    expected_hint = json.loads((model / "model.sig").read_text())["verificationMaterial"]["publicKey"]["hint"]
    assert info["verified"] is True and info["key_hint"] == expected_hint and info["files"] == 5
    assert client.signature("one@1") is None

    out = tmp_path / "out"
    client.download("signed@1", out)
    assert (out / "model.sig").read_bytes() == (model / "model.sig").read_bytes()
    result = reference_verify(out, public, out / "model.sig")
    assert result.returncode == 0 and "Verification succeeded" in result.stdout, result.stderr
    bare = tmp_path / "bare"
    client.download("signed@1", bare, signature=False)
    assert not (bare / "model.sig").exists()
    client.download("one@1", tmp_path / "one.safetensors")
    assert not (tmp_path / "one.safetensors.sig").exists()
