"""``GraftCallback`` for ``transformers.Trainer``: evaluation metrics logged as curves at
``global_step``, and on every save the checkpoint directory the Trainer wrote (weights, config,
tokenizer) committed to the registry with the latest evaluation metrics; only changed tensors
and files travel. The model must already exist in the registry (a base, or a student made with
``client.create_student``); for a student the manifest is checked against the trainable
parameters before training starts and enforced on every commit. Timing and throughput
(``eval_runtime``, ``*_samples_per_second``, ``total_flos``) are run information: curves under
``run/``, never rankable metrics. The Trainer's resume state (``optimizer.pt``,
``scheduler.pt``, ``rng_state.pth``, ``training_args.bin``) is pickled: it stays local (said
once), and never fails the run. A PEFT model (LoRA) commits its adapter only
(``adapter_model.safetensors`` and ``adapter_config.json``) to an adapter student
(``client.create_student(name, parent, adapter=True)``).

>>> trainer = Trainer(model=model, args=args, ..., callbacks=[GraftCallback(client, "bert-ft")])
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from transformers import TrainerCallback

from ..client import Checkpoint, Client, _is_peft
from ._common import numeric_metrics, split_run_information

#: What Trainer saves beside the model that is pickled (resume state): left out of commits.
TRAINER_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin", "*.pt", "*.pth", "*.bin")


class GraftCallback(TrainerCallback):
    def __init__(self, client: Client, model_name: str, *, split: str | None = "eval", log_training: bool = True,
                 check_manifest: bool = True):
        self.client = client
        self.check = check_manifest
        self.said_resume_state = False
        self.model_name = model_name
        self.split = split
        self.log_training = log_training
        self.last_metrics: dict[str, float] = {}
        self.committed: list[Checkpoint] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.check and model is not None and state.is_world_process_zero:
            # A frozen layer left trainable is refused at the first save, a whole epoch later: say it now.
            self.client.check_manifest(getattr(model, "module", model), self.model_name)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not self.log_training or not logs:
            return
        if any(key.startswith("eval_") for key in logs):
            return  # evaluations are logged by on_evaluate
        values, run = split_run_information(numeric_metrics({k: v for k, v in logs.items() if k not in ("epoch", "step")}))
        if values or run:
            self.client.log_curve(self.model_name, state.global_step, {**values, **run})

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        values, run = split_run_information(numeric_metrics({k: v for k, v in (metrics or {}).items() if k != "epoch"}))
        if values:
            self.last_metrics = values
        if values or run:
            self.client.log_curve(self.model_name, state.global_step, {**values, **run})

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        model = getattr(model, "module", model)  # unwrap DataParallel/DDP
        epoch = state.epoch if state.epoch is not None and float(state.epoch).is_integer() else None
        metrics = self.last_metrics or None
        split = self.split if self.last_metrics else None
        directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        source: Any = model.state_dict()
        if _is_peft(model):
            source = model  # a PEFT model commits its adapter only, to an adapter student
        elif os.path.isdir(directory) and any(name.endswith(".safetensors") for name in os.listdir(directory)):
            source = directory  # the whole checkpoint: config and tokenizer included
            pickled = [name for name in os.listdir(directory) if name.endswith((".pt", ".pth", ".bin"))]
            if pickled and not self.said_resume_state:
                warnings.warn(f"Graft keeps the Trainer's resume state ({', '.join(sorted(pickled))}) local: it is pickled, "
                              "and Graft never loads pickles; the weights, config and tokenizer are committed", stacklevel=2)
                self.said_resume_state = True
        checkpoint = self.client.commit(
            self.model_name, source, step=state.global_step, epoch=int(epoch) if epoch is not None else None,
            metrics=metrics, split=split, exclude=TRAINER_STATE)
        self.committed.append(checkpoint)
