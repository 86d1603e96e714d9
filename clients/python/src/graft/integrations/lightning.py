"""``GraftCheckpoint`` for Lightning: after each validation it logs the trainer's callback
metrics as curves at ``global_step`` and commits the module's state_dict with them. It works
beside ``ModelCheckpoint`` (which keeps writing its own files); the model must already exist in
the registry (a base, or a student made with ``client.create_student``). For a student, the
trainable parameters are checked against the manifest when fitting starts (a frozen layer left
trainable is said then, not refused after a whole epoch); ``check_manifest=False`` skips it.

For an adapter student (``client.create_student(name, parent, adapter=True)``) it commits the
adapter of the PEFT model the module is, or holds as a direct child (``self.model =
peft.get_peft_model(...)``): ``adapter_model.safetensors`` and ``adapter_config.json`` only.

>>> trainer = L.Trainer(callbacks=[ModelCheckpoint(...), GraftCheckpoint(client, "cnn-ft")])
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]

from ..client import Checkpoint, Client, _is_peft
from ._common import numeric_metrics


class GraftCheckpoint(Callback):
    def __init__(self, client: Client, model_name: str, *, split: str | None = "val", check_manifest: bool = True):
        super().__init__()
        self.client = client
        self.check = check_manifest
        self.model_name = model_name
        self.split = split
        self.committed: list[Checkpoint] = []
        self.adapter = False

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        manifest = self.client.model(self.model_name).manifest
        self.adapter = manifest is not None and manifest.get("mode") == "adapter"
        if self.check:
            self.client.check_manifest(_peft_of(pl_module) or pl_module if self.adapter else pl_module, self.model_name)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = numeric_metrics(trainer.callback_metrics)
        if metrics:
            self.client.log_curve(self.model_name, trainer.global_step, metrics)
        source: Any = pl_module.state_dict()
        if self.adapter:
            source = _peft_of(pl_module)
            if source is None:
                raise ValueError(f"{self.model_name} is an adapter student: the module must be, or hold as a direct child, "
                                 "a peft.PeftModel")
        checkpoint = self.client.commit(
            self.model_name, source, step=trainer.global_step, epoch=trainer.current_epoch,
            metrics=metrics or None, split=self.split if metrics else None)
        self.committed.append(checkpoint)


def _peft_of(module: Any) -> Any:
    """The PEFT model a LightningModule is, or holds as its one direct child; else None."""
    if _is_peft(module):
        return module
    found = [child for child in module.children() if _is_peft(child)]
    return found[0] if len(found) == 1 else None
