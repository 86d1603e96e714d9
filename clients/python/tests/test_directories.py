"""Model directories as Hugging Face users ship them (issue 24), with real `transformers` models
built from configs (no download): sharded `save_pretrained` output in, the same tree out,
`from_pretrained` on Graft's export giving identical outputs, and a task model's `bert.` prefix
mapped onto its base so frozen layers are enforced and shared."""

from __future__ import annotations

import filecmp
import json
import os
import pathlib
import subprocess

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import graft  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["hello", "world"]


def tiny_bert(directory: pathlib.Path, shard: str) -> None:
    """A 2-layer BERT saved in shards of `shard` bytes, with a real fast tokenizer."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64)
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    transformers.BertModel(config).save_pretrained(directory, max_shard_size=shard)
    tokenizer.save_pretrained(directory)
    (directory / "README.md").write_text("---\nlicense: apache-2.0\ndatasets:\n- wiki-tiny\n---\n# tiny bert\n")


def same_tree(a: pathlib.Path, b: pathlib.Path) -> list[str]:
    """Relative paths that differ between two trees (missing on one side, or other bytes)."""
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    differ = sorted(files_a ^ files_b)
    differ += sorted(p for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False))
    return differ


def run(*args: str, registry: str) -> subprocess.CompletedProcess[str]:
    result = graft(*args, registry=registry)
    assert result.returncode == 0, f"graft {args}: {result.stderr}"
    return result


@pytest.fixture()
def registry(tmp_path):
    path = str(tmp_path / "registry")
    run("init", registry=path)
    return path


def test_sharded_base_round_trips_byte_exact_and_loads(tmp_path, registry):
    base = tmp_path / "bert-base"
    tiny_bert(base, "20KB")
    shards = sorted(p.name for p in base.glob("model-*.safetensors"))
    assert len(shards) > 2 and (base / "model.safetensors.index.json").exists()

    added = json.loads(run("base", "add", str(base), "--name", "tiny-bert", "--json", registry=registry).stdout)
    assert added["files"] == len([p for p in base.rglob("*") if p.is_file()])
    shown = json.loads(run("show", "tiny-bert@1", "--json", registry=registry).stdout)
    kinds = {f["path"]: f["kind"] for f in shown["files"]}
    assert {kinds[s] for s in shards} == {"shard"} and kinds["tokenizer.json"] == "file"
    model = json.loads(run("show", "tiny-bert", "--json", registry=registry).stdout)["model"]
    assert model["provenance"]["license"] == "apache-2.0" and model["provenance"]["dataset"] == "wiki-tiny"

    out = tmp_path / "exported"
    run("export", "tiny-bert@1", "-o", str(out), registry=registry)
    assert same_tree(base, out) == []

    original = transformers.AutoModel.from_pretrained(base).eval()
    loaded = transformers.AutoModel.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["hello world", "a b c d"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(original(**batch).last_hidden_state, loaded(**batch).last_hidden_state)


def test_classifier_student_through_the_bert_prefix(tmp_path, registry):
    base = tmp_path / "bert-base"
    tiny_bert(base, "20KB")
    run("base", "add", str(base), "--name", "tiny-bert", registry=registry)
    # Rules in the names the task model uses: Graft finds the base's tensors under `bert.`.
    created = json.loads(run(
        "student", "create", "clf", "--from", "tiny-bert@1", "--freeze", "bert.embeddings",
        "--freeze", "bert.encoder.layer.0", "--json", registry=registry).stdout)
    frozen = [e["name"] for e in created["manifest"]["entries"] if e["state"] == "frozen"]
    assert frozen and all(name.startswith("bert.embeddings") or name.startswith("bert.encoder.layer.0.") for name in frozen)

    torch.manual_seed(1)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(("bert.embeddings", "bert.encoder.layer.0.")))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = tokenizer(["hello world", "a b c"], return_tensors="pt", padding=True)
    model(**batch, labels=torch.tensor([0, 2])).loss.backward()
    optimizer.step()
    student = tmp_path / "clf-1"
    model.save_pretrained(student, max_shard_size="50KB")  # another shard size than the base's
    tokenizer.save_pretrained(student)

    committed = json.loads(run("checkpoint", "add", "clf", str(student), "--metric", "accuracy=0.5", "--json",
                               registry=registry).stdout)
    frozen_bytes = sum(e["parameters"] * 4 for e in created["manifest"]["entries"] if e["state"] == "frozen")
    tensor_bytes = sum(p.numel() * 4 for p in model.state_dict().values())
    # Frozen tensors are the base's blobs: only the trained and new tensors (and new files) are stored.
    assert committed["bytes_stored"] <= tensor_bytes - frozen_bytes + 64 * 1024
    assert set(committed["new_tensors"]) == {"classifier.weight", "classifier.bias"}

    out = tmp_path / "best"
    run("export", "clf", "-o", str(out), registry=registry)
    assert same_tree(student, out) == []
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert loaded.config.id2label == labels
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded(**batch).logits)

    # A frozen layer that moved is refused through the prefix, naming the task model's tensor.
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.add_(1.0)
    drifted = tmp_path / "clf-2"
    model.save_pretrained(drifted)
    refused = graft("checkpoint", "add", "clf", str(drifted), registry=registry)
    assert refused.returncode == 79, refused.stderr
    assert "bert.embeddings.word_embeddings.weight" in refused.stderr


def test_pickled_trainer_state_is_refused_unless_excluded(tmp_path, registry):
    base = tmp_path / "bert-base"
    tiny_bert(base, "200KB")
    torch.save({"step": 1}, base / "optimizer.pt")
    refused = graft("base", "add", str(base), "--name", "b", registry=registry)
    assert refused.returncode == 65 and "optimizer.pt" in refused.stderr and "--exclude" in refused.stderr
    assert json.loads(run("list", "--json", registry=registry).stdout) == []
    run("base", "add", str(base), "--name", "b", "--exclude", "*.pt", registry=registry)
    shown = json.loads(run("show", "b@1", "--json", registry=registry).stdout)
    assert "optimizer.pt" not in {f["path"] for f in shown["files"]}
    assert os.path.exists(base / "optimizer.pt")
