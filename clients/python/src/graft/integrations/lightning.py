"""``GraftCheckpoint`` for Lightning: after each validation it logs the trainer's callback
metrics as curves at ``global_step`` and commits the module's state_dict with them. It works
beside ``ModelCheckpoint`` (which keeps writing its own files); the model must already exist in
the registry (a base, or a student made with ``client.create_student``). For a student, the
trainable parameters are checked against the manifest when fitting starts (a frozen layer left
trainable is said then, not refused after a whole epoch); ``check_manifest=False`` skips it.

>>> trainer = L.Trainer(callbacks=[ModelCheckpoint(...), GraftCheckpoint(client, "cnn-ft")])
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]

from ..client import Checkpoint, Client
from ._common import numeric_metrics


class GraftCheckpoint(Callback):
    def __init__(self, client: Client, model_name: str, *, split: str | None = "val", check_manifest: bool = True):
        super().__init__()
        self.client = client
        self.check = check_manifest
        self.model_name = model_name
        self.split = split
        self.committed: list[Checkpoint] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.check and trainer.is_global_zero:
            self.client.check_manifest(pl_module, self.model_name)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = numeric_metrics(trainer.callback_metrics)
        if metrics:
            self.client.log_curve(self.model_name, trainer.global_step, metrics)
        checkpoint = self.client.commit(
            self.model_name, pl_module.state_dict(), step=trainer.global_step, epoch=trainer.current_epoch,
            metrics=metrics or None, split=self.split if metrics else None)
        self.committed.append(checkpoint)
