"""The Hugging Face Trainer and Lightning callbacks on tiny models built from configs (no
weights downloaded), against a real graft serve: frozen layers really frozen, a commit per save
or validation, metrics as curves."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import graft

transformers = pytest.importorskip("transformers")
lightning = pytest.importorskip("lightning")


class Tokens(Dataset):
    def __init__(self, count: int = 16, length: int = 8):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (count, length), generator=generator)
        self.labels = torch.randint(0, 2, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": torch.ones_like(self.ids[index]), "labels": self.labels[index]}


def test_transformers_trainer_callback(server, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from graft.integrations.transformers import GraftCallback

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=2)
    teacher = BertForSequenceClassification(config)
    client = graft.Client(server.url, token=server.token("w", "write"))
    client.register_base("tiny-bert", teacher.state_dict(), architecture="bert")
    client.create_student("tiny-bert-ft", "tiny-bert@1", freeze=["bert.embeddings", "bert.encoder"])
    student = BertForSequenceClassification(config)
    student.load_state_dict(teacher.state_dict())
    for name, parameter in student.named_parameters():
        parameter.requires_grad = not (name.startswith("bert.embeddings") or name.startswith("bert.encoder"))
    callback = GraftCallback(client, "tiny-bert-ft")
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, logging_steps=1, report_to=[], use_cpu=True, learning_rate=1e-2,
        disable_tqdm=True)
    Trainer(model=student, args=args, train_dataset=Tokens(), eval_dataset=Tokens(8), callbacks=[callback]).train()
    assert [c.ref for c in callback.committed] == ["tiny-bert-ft@1", "tiny-bert-ft@2"]
    checkpoints = client.checkpoints("tiny-bert-ft")
    assert [c.raw["step"] for c in checkpoints] == [2, 4]
    metrics = client.metrics("tiny-bert-ft")
    curves = {curve["name"]: curve for curve in metrics["curves"]}
    assert curves["eval_loss"]["points"] == 2 and "loss" in curves
    assert any(m["name"] == "eval_loss" for m in metrics["checkpoints"][0]["metrics"])
    # Frozen really frozen: the second commit's encoder is the teacher's.
    loaded = client.load_state_dict("tiny-bert-ft@2")
    assert torch.equal(loaded["bert.encoder.layer.0.attention.self.query.weight"], teacher.state_dict()["bert.encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(loaded["classifier.weight"], teacher.state_dict()["classifier.weight"])
    # The Trainer's checkpoint directory is committed whole, without its pickled resume state.
    files = {f["path"] for f in client._json("GET", ["v1", "checkpoints", "tiny-bert-ft@2"])["files"]}
    assert {"config.json", "model.safetensors"} <= files and not any(f.endswith((".pt", ".pth", ".bin")) for f in files)
    # Timing is run information, never a rankable metric.
    assert "run/eval_runtime" in curves and "eval_runtime" not in curves
    assert not any(m["name"].endswith("_runtime") for m in metrics["checkpoints"][0]["metrics"])


def test_callback_says_a_trainable_frozen_layer_before_training(server, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from graft.integrations.transformers import GraftCallback

    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=2)
    teacher = BertForSequenceClassification(config)
    client = graft.Client(server.url, token=server.token("w", "write"))
    client.register_base("tiny", teacher.state_dict())
    client.create_student("tiny-ft", "tiny@1", freeze=["bert.embeddings"])
    student = BertForSequenceClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=student, args=args, train_dataset=Tokens(), callbacks=[GraftCallback(client, "tiny-ft")])
    with pytest.raises(ValueError, match="apply_manifest"):
        trainer.train()
    assert client.checkpoints("tiny-ft") == []


def test_lightning_callback_beside_model_checkpoint(server, tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from graft.integrations.lightning import GraftCheckpoint

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.features(x))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))
            self.log("val_accuracy", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)

    torch.manual_seed(0)
    teacher = Module()
    client = graft.Client(server.url, token=server.token("w", "write"))
    client.register_base("mlp", teacher.state_dict())
    client.create_student("mlp-fe", "mlp@1", freeze=["features"])
    student = Module()
    student.load_state_dict(teacher.state_dict())
    data = TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,)))
    # Not yet frozen: fitting stops before the first step, naming what the manifest freezes.
    early = L.Trainer(max_epochs=1, callbacks=[GraftCheckpoint(client, "mlp-fe")], logger=False, enable_progress_bar=False,
                      accelerator="cpu", enable_model_summary=False, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match="features.0.weight"):
        early.fit(student, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    assert client.checkpoints("mlp-fe") == []
    # The manifest applied: frozen parameters and the BatchNorm statistics stay the teacher's.
    client.apply_manifest(student, "mlp-fe")
    callback = GraftCheckpoint(client, "mlp-fe")
    keeper = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_top_k=-1)
    trainer = L.Trainer(max_epochs=2, callbacks=[keeper, callback], logger=False, enable_progress_bar=False, accelerator="cpu",
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(student, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    assert [c.ref for c in callback.committed] == ["mlp-fe@1", "mlp-fe@2"]
    assert len(os.listdir(tmp_path / "ckpt")) == 2  # ModelCheckpoint wrote its own files too
    best = client.best("val_accuracy", model="mlp-fe", split="val")
    assert best.ref in ("mlp-fe@1", "mlp-fe@2")
    loaded = client.load_state_dict("mlp-fe@2")
    assert torch.equal(loaded["features.1.running_mean"], teacher.state_dict()["features.1.running_mean"])
