"""``GraftCallback`` for ``transformers.Trainer``: evaluation metrics logged as curves at
``global_step``, and a checkpoint committed to the registry on every save (with the latest
evaluation metrics). The model must already exist in the registry (a base, or a student made
with ``client.create_student``); for a student the manifest is enforced on every commit.

>>> trainer = Trainer(model=model, args=args, ..., callbacks=[GraftCallback(client, "bert-ft")])
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..client import Checkpoint, Client
from ._common import numeric_metrics


class GraftCallback(TrainerCallback):
    def __init__(self, client: Client, model_name: str, *, split: str | None = "eval", log_training: bool = True):
        self.client = client
        self.model_name = model_name
        self.split = split
        self.log_training = log_training
        self.last_metrics: dict[str, float] = {}
        self.committed: list[Checkpoint] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not self.log_training or not logs:
            return
        if any(key.startswith("eval_") for key in logs):
            return  # evaluations are logged by on_evaluate
        values = numeric_metrics({k: v for k, v in logs.items() if k not in ("epoch", "step")})
        if values:
            self.client.log_curve(self.model_name, state.global_step, values)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        values = numeric_metrics({k: v for k, v in (metrics or {}).items() if k != "epoch"})
        if values:
            self.last_metrics = values
            self.client.log_curve(self.model_name, state.global_step, values)

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        model = getattr(model, "module", model)  # unwrap DataParallel/DDP
        checkpoint = self.client.commit(
            self.model_name, model.state_dict(), step=state.global_step, epoch=int(state.epoch or 0),
            metrics=self.last_metrics or None, split=self.split if self.last_metrics else None)
        self.committed.append(checkpoint)
