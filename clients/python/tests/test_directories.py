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


def test_client_directories_through_a_server(server, tmp_path, monkeypatch):
    import graft

    client = graft.Client(server.url, token=server.token("w", "write"))
    base = tmp_path / "bert-base"
    tiny_bert(base, "20KB")
    registered = client.register_base("tiny-bert", base, license="apache-2.0")
    assert registered.raw["files"] == len([p for p in base.rglob("*") if p.is_file()])

    student = client.create_student("clf", "tiny-bert@1", freeze=["bert.embeddings", "bert.encoder.layer.0"])
    model = transformers.AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    # Before training: a frozen layer left trainable is said at once, and apply_manifest fixes it.
    with pytest.raises(ValueError, match="bert.embeddings"):
        client.check_manifest(model, "clf")
    frozen = client.apply_manifest(model, "clf")
    assert set(frozen) == set(student.frozen) and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    client.check_manifest(model, "clf")
    embeddings = model.bert.embeddings
    model.train()
    assert not embeddings.training, "a module frozen whole stays in eval mode"

    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = tokenizer(["hello world", "a b c"], return_tensors="pt", padding=True)
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    saved = tmp_path / "clf-1"
    model.save_pretrained(saved, max_shard_size="50KB")
    tokenizer.save_pretrained(saved)
    committed = client.commit("clf", saved, step=10, epoch=1, metrics={"accuracy": 0.5}, split="eval")
    sizes = {n: p.numel() * p.element_size() for n, p in model.state_dict().items()}
    changed = sum(size for n, size in sizes.items() if n not in frozen and size >= 4096)
    frozen_large = sum(size for n, size in sizes.items() if n in frozen and size >= 4096)
    # Large frozen tensors and unchanged files never travel. What does besides the changed
    # tensors is fixed overhead: the proposal's digests and shard headers (sent with the
    # commit again) and the tensors and files under 4 KiB, inline in base64 — for this tiny
    # model about 40 KiB, less than its frozen tensors would have cost.
    assert frozen_large > 40 * 1024
    assert committed.bytes_uploaded < changed + 44 * 1024, committed.raw
    with pytest.raises(ValueError, match="whole epoch"):
        client.commit("clf", saved, epoch=1.5)

    out = tmp_path / "downloaded"
    assert client.download("clf@1", out) == committed.digest
    assert same_tree(saved, out) == []
    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "cache"))
    snapshot = client.snapshot("clf")
    assert same_tree(saved, pathlib.Path(snapshot)) == []
    assert client.snapshot("clf@1") == snapshot
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(snapshot).eval()
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded(**batch).logits)
    state = client.load_state_dict("clf@1")  # the directory's tensors as one file, each digest checked
    assert torch.equal(state["classifier.weight"], model.state_dict()["classifier.weight"])

    torch.save({"step": 1}, saved / "optimizer.pt")
    with pytest.raises(graft.InvalidInput, match="optimizer.pt"):
        client.commit("clf", saved)
    assert [c.ref for c in client.checkpoints("clf")] == ["clf@1"]
    again = client.commit("clf", saved, exclude=["*.pt"])
    # Nothing the server holds travels again: the same commit less every blob it sent the first time.
    assert again.ref == "clf@2" and again.bytes_uploaded <= committed.bytes_uploaded - changed + 1024


def test_readme_hugging_face_example_runs_as_written(server, tmp_path, monkeypatch):
    """README.md's "Hugging Face model directories" block, run as written: only the base's
    directory, the Trainer's arguments and datasets are made here."""
    import re

    import graft

    readme = (pathlib.Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Hugging Face model directories", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    tiny_bert(tmp_path / "bert-base-uncased", "20KB")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAFT_TOKEN", server.token("w", "write"))
    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "cache"))

    class Sentences(torch.utils.data.Dataset):
        def __init__(self, count: int):
            tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "bert-base-uncased")
            self.items = [dict(tokenizer("hello world" if i % 2 else "a b c", padding="max_length", max_length=8),
                               labels=i % 2) for i in range(count)]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, index: int) -> dict:
            return {k: torch.tensor(v) for k, v in self.items[index].items()}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, report_to=[], use_cpu=True, learning_rate=1e-2, disable_tqdm=True)
    namespace = {"args": args, "train": Sentences(16), "evaluation": Sentences(8)}
    exec(compile(code.replace("http://127.0.0.1:8470", server.url), "README.md", "exec"), namespace)

    classifier, best = namespace["classifier"], namespace["best"]
    assert best.ref in ("sentiment@1", "sentiment@2") and classifier.config.id2label == {0: "negative", 1: "positive"}
    client = graft.Client(server.url, token=os.environ["GRAFT_TOKEN"])
    base = client.load_state_dict("bert-base@1")
    tuned = client.load_state_dict(best.ref)
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight"):
        assert torch.equal(base[name], tuned["bert." + name]), "frozen through the prefix"
    assert not torch.equal(base["encoder.layer.1.attention.self.query.weight"], tuned["bert.encoder.layer.1.attention.self.query.weight"])
    files = {f["path"] for f in client._json("GET", ["v1", "checkpoints", best.ref])["files"]}
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= files


def test_sentence_transformers_directory_round_trips(tmp_path, registry):
    """A real sentence-transformers model (the tiny BERT under a mean pooling module) saved as
    it ships — modules.json, 1_Pooling/config.json, its own configs — registered, exported, and
    loaded back by SentenceTransformer with identical embeddings."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from sentence_transformers import models

    bert = tmp_path / "bert"
    tiny_bert(bert, "200KB")
    word = models.Transformer(str(bert))
    pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    model = sentence_transformers.SentenceTransformer(modules=[word, pooling], device="cpu")
    saved = tmp_path / "st-model"
    model.save(str(saved))
    assert (saved / "modules.json").exists() and (saved / "1_Pooling" / "config.json").exists()

    run("base", "add", str(saved), "--name", "st-tiny", registry=registry)
    files = {f["path"] for f in json.loads(run("show", "st-tiny@1", "--json", registry=registry).stdout)["files"]}
    assert {"modules.json", "1_Pooling/config.json", "config_sentence_transformers.json", "model.safetensors"} <= files
    out = tmp_path / "exported"
    run("export", "st-tiny", "-o", str(out), registry=registry)
    assert same_tree(saved, out) == []
    loaded = sentence_transformers.SentenceTransformer(str(out), device="cpu")
    sentences = ["hello world", "a b c d e"]
    assert (model.encode(sentences) == loaded.encode(sentences)).all()
