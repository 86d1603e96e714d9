"""Adapter students (issue 25) with real `peft` LoRA adapters on tiny `transformers` models built
from configs (no download), against a real graft serve: a PeftModel committed as its adapter
only, loaded back with identical outputs, exported for PEFT byte for byte, and merged by Graft to
match PEFT's own `merge_and_unload()` — fp32, bf16, GPT-2's transposed Conv1D weights, a new head
kept through `modules_to_save`."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import graft  # noqa: E402
from conftest import GRAFT  # noqa: E402


def tiny_bert(directory: pathlib.Path, *, labels: int = 3, dtype: torch.dtype = torch.float32) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=labels)
    transformers.BertForSequenceClassification(config).to(dtype).save_pretrained(directory)


def lora(model, *, seed: int, targets=("query", "value"), save=("classifier",), **options):
    """A LoRA on `model` whose B is not zero (a fresh LoRA is the identity, which proves nothing)."""
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), modules_to_save=list(save) or None, **options)
    wrapped = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator).to(parameter.dtype) * 0.5)
    return wrapped


def cli(*args: str, server) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRAFT_TOKEN=server.token("cli", "admin"))
    return subprocess.run([GRAFT, *args], capture_output=True, text=True, timeout=300, env=env)


def local(*args: str, registry: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([GRAFT, *args, "--registry", registry], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"graft {args}: {result.stderr}"
    return result


IDS = torch.randint(0, 100, (3, 10), generator=torch.Generator().manual_seed(1))


def logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits.float()


def test_peft_model_commits_its_adapter_only_and_loads_back_identically(server, tmp_path):
    client = graft.Client(server.url, token=server.token("w", "write"))
    tiny_bert(tmp_path / "base")
    client.register_base("bert", tmp_path / "base")
    student = client.create_student("bert-lora", "bert@1", adapter=True)
    assert student.manifest["mode"] == "adapter" and student.manifest["relation"] == "adapter"
    assert {e["state"] for e in student.manifest["entries"]} == {"frozen"}

    model = lora(transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1")), seed=3)
    client.check_manifest(model, "bert-lora")  # a PeftModel is what an adapter student trains
    checkpoint = client.commit("bert-lora", model, epoch=1, metrics={"accuracy": 0.5}, split="eval")
    assert checkpoint.ref == "bert-lora@1"
    files = {f["path"] for f in client._json("GET", ["v1", "checkpoints", "bert-lora@1"])["files"]}
    assert files == {"adapter_model.safetensors", "adapter_config.json"}

    # The stored adapter is the adapter file plus its config: no base tensor travelled or was stored.
    model.save_pretrained(tmp_path / "saved")
    adapter_bytes = (tmp_path / "saved" / "adapter_model.safetensors").stat().st_size
    assert checkpoint.raw["bytes_stored"] <= adapter_bytes + 4096, checkpoint.raw

    base = transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1"))
    loaded = client.load_adapter("bert-lora@1", base)
    assert isinstance(loaded, peft.PeftModel)
    assert torch.equal(logits(loaded), logits(model))

    # Exported for PEFT: byte for byte what save_pretrained wrote.
    out = tmp_path / "exported"
    result = cli("export", "bert-lora@1", "-o", str(out), "--registry", server.url, server=server)
    assert result.returncode == 0, result.stderr
    assert (out / "adapter_model.safetensors").read_bytes() == (tmp_path / "saved" / "adapter_model.safetensors").read_bytes()
    assert json.loads((out / "adapter_config.json").read_text()) == json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    reloaded = peft.PeftModel.from_pretrained(
        transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1")), str(out))
    assert torch.equal(logits(reloaded), logits(model))


def test_refusals_leave_nothing(server, tmp_path):
    client = graft.Client(server.url, token=server.token("w", "write"))
    tiny_bert(tmp_path / "base")
    client.register_base("bert", tmp_path / "base")
    client.create_student("lora", "bert@1", adapter=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1"))

    # A full state_dict is not an adapter.
    with pytest.raises(graft.FrozenTensorChanged) as refused:
        client.commit("lora", model.state_dict())
    assert {v["rule"] for v in refused.value.violations} == {"adapter"}
    with pytest.raises(ValueError, match="adapter student"):
        client.check_manifest(model, "lora")

    # A LoRA of another model's shapes: every pair is named with the shape its rank gives.
    torch.manual_seed(0)
    other = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3))
    with pytest.raises(graft.FrozenTensorChanged) as refused:
        client.commit("lora", lora(other, seed=1))
    assert refused.value.tensors and all("lora_" in t or "classifier" in t for t in refused.value.tensors)
    assert any("rank 4" in (v.get("expected") or "") for v in refused.value.violations)
    assert client.checkpoints("lora") == []

    # An adapter of an adapter, and adapter rules mixed with others, are refused.
    client.commit("lora", lora(model, seed=2))
    with pytest.raises(graft.InvalidInput, match="adapter"):
        client.create_student("stacked", "lora@1", adapter=True)
    with pytest.raises(ValueError):
        client.create_student("mixed", "bert@1", adapter=True, freeze=["bert.embeddings"])


def test_best_adapter_under_the_base_and_lineage(server, tmp_path):
    client = graft.Client(server.url, token=server.token("w", "write"))
    tiny_bert(tmp_path / "base")
    client.register_base("bert", tmp_path / "base")
    for name, accuracy in (("lora-a", 0.61), ("lora-b", 0.74)):
        client.create_student(name, "bert@1", adapter=True)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1"))
        client.commit(name, lora(model, seed=len(name) + int(accuracy * 100)), epoch=1, metrics={"accuracy": accuracy}, split="eval")
    best = client.best("accuracy", under="bert", split="eval")
    assert best.ref == "lora-b@1"
    lineage = client.lineage("bert")
    modes = {node["name"]: node.get("mode") for node in lineage["descendants"]}
    assert modes == {"lora-a": "adapter", "lora-b": "adapter"}
    loaded = client.load_adapter(best.ref, transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1")))
    assert loaded.peft_config["default"].r == 4


def merged_against_peft(tmp_path, base_dir: pathlib.Path, wrapped, model_class, *, registry: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Commits `wrapped`'s adapter to a local registry over `base_dir`, exports it merged, and
    compares every tensor with PEFT's merge_and_unload(): the worst difference relative to the
    tensor's largest magnitude, and the logits of both merged models."""
    wrapped.save_pretrained(tmp_path / "adapter")
    local("base", "add", str(base_dir), "--name", "base", registry=registry)
    local("student", "create", "lora", "--from", "base@1", "--adapter", registry=registry)
    local("checkpoint", "add", "lora", str(tmp_path / "adapter"), registry=registry)
    local("export", "lora@1", "--merged", "-o", str(tmp_path / "merged"), registry=registry)
    reference = wrapped.merge_and_unload()
    expected = reference.state_dict()
    from safetensors.torch import load_file

    got = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert set(got) <= set(expected) and len(got) >= len(expected) - 1  # tied weights are saved once
    worst = 0.0
    for name, tensor in got.items():
        assert tensor.dtype == expected[name].dtype and tensor.shape == expected[name].shape, name
        difference = (tensor.double() - expected[name].double()).abs().max().item()
        worst = max(worst, difference / max(expected[name].double().abs().max().item(), 1e-30))
    loaded = model_class.from_pretrained(str(tmp_path / "merged"))
    return worst, logits(loaded), logits(reference)


def test_merged_export_matches_merge_and_unload_fp32(tmp_path):
    registry = str(tmp_path / "registry")
    local("init", registry=registry)
    tiny_bert(tmp_path / "base")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base")
    wrapped = lora(model, seed=5, targets=("query", "key", "value", "dense", "word_embeddings"), use_rslora=True)
    worst, ours, theirs = merged_against_peft(tmp_path, tmp_path / "base", wrapped, transformers.BertForSequenceClassification,
                                              registry=registry)
    print(f"fp32 merge: worst {worst:.3g} of the largest magnitude")
    assert worst < 1e-5
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_merged_export_matches_merge_and_unload_bf16(tmp_path):
    registry = str(tmp_path / "registry")
    local("init", registry=registry)
    tiny_bert(tmp_path / "base", dtype=torch.bfloat16)
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base", dtype=torch.bfloat16)
    wrapped = lora(model, seed=6)
    worst, _, _ = merged_against_peft(tmp_path, tmp_path / "base", wrapped, transformers.BertForSequenceClassification,
                                      registry=registry)
    # Within one bf16 step (7 mantissa bits) of the tensor's largest magnitude: OpenBLAS and torch
    # may sum the rank-4 product in another order, and a float32 difference can round apart.
    assert worst <= 2 ** -7
    from safetensors.torch import load_file

    got, expected = load_file(str(tmp_path / "merged" / "model.safetensors")), wrapped.base_model.model.state_dict()
    differing = sum(int((got[n] != expected[n]).sum()) for n in got)
    print(f"bf16 merge: worst {worst:.3g} of the largest magnitude, {differing} of {sum(t.numel() for t in got.values())} values differ")
    assert differing <= sum(t.numel() for t in got.values()) // 1000, differing  # nearly every value bit-identical


def test_merged_export_of_gpt2_transposed_weights(tmp_path):
    """GPT-2's Conv1D holds weights [in, out]: PEFT sets fan_in_fan_out, and the merge transposes."""
    registry = str(tmp_path / "registry")
    local("init", registry=registry)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "base")
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base")
    wrapped = lora(model, seed=7, targets=("c_attn", "c_proj"), save=(), fan_in_fan_out=True)
    assert json.loads(json.dumps(wrapped.peft_config["default"].fan_in_fan_out)) is True
    worst, ours, theirs = merged_against_peft(tmp_path, tmp_path / "base", wrapped, transformers.GPT2LMHeadModel, registry=registry)
    print(f"gpt2 merge: worst {worst:.3g} of the largest magnitude")
    assert worst < 1e-5
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,named", [("ia3", "IA3"), ("dora", "DoRA"), ("lora_bias", "lora_bias"), ("bias", "bias = all")])
def test_other_adapters_are_stored_but_not_merged(tmp_path, kind, named):
    """IA3, DoRA, LoRA biases and trained base biases: stored and exported as adapters (their
    extra tensors checked against the parent), refused by --merged with the reason."""
    registry = str(tmp_path / "registry")
    local("init", registry=registry)
    tiny_bert(tmp_path / "base")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base")
    if kind == "ia3":
        config = peft.IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"])
    else:
        options = {"dora": {"use_dora": True}, "lora_bias": {"lora_bias": True}, "bias": {"bias": "all"}}[kind]
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], **options)
    peft.get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    local("base", "add", str(tmp_path / "base"), "--name", "base", registry=registry)
    local("student", "create", "other", "--from", "base@1", "--adapter", registry=registry)
    local("checkpoint", "add", "other", str(tmp_path / "adapter"), registry=registry)
    local("export", "other@1", "-o", str(tmp_path / "out"), registry=registry)  # stored and exported as an adapter
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()
    refused = subprocess.run([GRAFT, "export", "other@1", "--merged", "-o", str(tmp_path / "merged"), "--registry", registry],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 65 and named in refused.stderr, refused.stderr
    assert not (tmp_path / "merged").exists()


def test_trainer_callback_on_a_peft_model_commits_the_adapter(server, tmp_path):
    from torch.utils.data import Dataset

    from graft.integrations.transformers import GraftCallback

    class Tokens(Dataset):
        def __init__(self, count: int = 16):
            generator = torch.Generator().manual_seed(0)
            self.ids = torch.randint(0, 100, (count, 8), generator=generator)
            self.labels = torch.randint(0, 3, (count,), generator=generator)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[index], "attention_mask": torch.ones_like(self.ids[index]), "labels": self.labels[index]}

    client = graft.Client(server.url, token=server.token("w", "write"))
    tiny_bert(tmp_path / "base")
    client.register_base("bert", tmp_path / "base")
    client.create_student("bert-lora", "bert@1", adapter=True)
    model = lora(transformers.AutoModelForSequenceClassification.from_pretrained(client.snapshot("bert@1")), seed=9)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n}
    callback = GraftCallback(client, "bert-lora")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, logging_steps=1, report_to=[], use_cpu=True, learning_rate=1e-2, disable_tqdm=True)
    transformers.Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(8), callbacks=[callback]).train()
    assert [c.ref for c in callback.committed] == ["bert-lora@1", "bert-lora@2"]
    for ref in ("bert-lora@1", "bert-lora@2"):
        files = {f["path"] for f in client._json("GET", ["v1", "checkpoints", ref])["files"]}
        assert files == {"adapter_model.safetensors", "adapter_config.json"}
    # The base stayed frozen through training, and the two adapters differ.
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    first, second = (client.load_adapter(ref, transformers.AutoModelForSequenceClassification.from_pretrained(
        client.snapshot("bert@1"))) for ref in ("bert-lora@1", "bert-lora@2"))
    assert not torch.equal(logits(first), logits(second))
    assert torch.equal(logits(second), logits(model))


def test_readme_lora_example_runs_as_written(server, tmp_path, monkeypatch):
    """README.md's LoRA block in "From PyTorch", run as written: only the base's directory and
    the `train` and `evaluate` functions are made here."""
    import re

    readme = (pathlib.Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## From PyTorch", 1)[1]
    code = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "adapter=True" in block][0]
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(tmp_path / "all-MiniLM-L6-v2")  # a bare encoder, as the Hub ships it
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAFT_TOKEN", server.token("w", "write"))
    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", os.path.dirname(GRAFT) + os.pathsep + os.environ["PATH"])
    labels = torch.randint(0, 2, (3,), generator=torch.Generator().manual_seed(2))

    def train(model):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        for _ in range(3):
            loss = model(input_ids=IDS, attention_mask=torch.ones_like(IDS), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def evaluate(model):
        return float((logits(model).argmax(-1) == labels).float().mean()) + model.peft_config["default"].r / 100  # ranks r8 first

    namespace = {"train": train, "evaluate": evaluate}
    exec(compile(code.replace("http://127.0.0.1:8470", server.url), "README.md", "exec"), namespace)
    best, tuned, served, model = namespace["best"], namespace["tuned"], namespace["served"], namespace["model"]
    assert best.ref == "minilm-lora-r8@1"
    assert torch.equal(logits(tuned), logits(model))  # the adapter came back bit-exact
    # The merged export, loaded without peft, computes what the adapter computes.
    assert torch.allclose(logits(served), logits(model), rtol=1e-4, atol=1e-5)
    client = graft.Client(server.url, token=os.environ["GRAFT_TOKEN"])
    assert client.model("minilm-lora-r8").manifest["mode"] == "adapter"


def test_lightning_callback_commits_the_adapter_of_a_peft_module(server, tmp_path):
    lightning = pytest.importorskip("lightning")
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from graft.integrations.lightning import GraftCheckpoint

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    class Module(lightning.LightningModule):
        def __init__(self, base):
            super().__init__()
            self.model = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc1"], modules_to_save=["fc2"]))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.model(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=0.05)

    torch.manual_seed(0)
    base = MLP()
    client = graft.Client(server.url, token=server.token("w", "write"))
    client.register_base("mlp", base.state_dict())
    client.create_student("mlp-lora", "mlp@1", adapter=True)
    callback = GraftCheckpoint(client, "mlp-lora")
    data = TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))
    module = Module(base)
    trainer = lightning.Trainer(max_epochs=2, callbacks=[callback], logger=False, enable_progress_bar=False, accelerator="cpu",
                                enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False)
    trainer.fit(module, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    assert [c.ref for c in callback.committed] == ["mlp-lora@1", "mlp-lora@2"]
    files = {f["path"] for f in client._json("GET", ["v1", "checkpoints", "mlp-lora@2"])["files"]}
    assert files == {"adapter_model.safetensors", "adapter_config.json"}
    fresh = MLP()
    fresh.load_state_dict(client.load_state_dict("mlp@1"))
    loaded = client.load_adapter("mlp-lora@2", fresh)
    x = torch.randn(5, 6)
    module.model.eval()
    assert torch.equal(loaded(x), module.model(x))
