from __future__ import annotations

import math
import re
from typing import Any, Mapping

_BAD = re.compile(r"[^\x21-\x7e]|[=,\"]")


def numeric_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite numbers of a metrics dict (tensors included), under names the registry takes."""
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        if hasattr(value, "item"):
            try:
                value = value.item()
            except (ValueError, RuntimeError):
                continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        key = _BAD.sub("_", str(name))[:128]
        if key:
            out[key] = float(value)
    return out


#: Measurements of a run, not of a model: kept as curves under ``run/``, never as a checkpoint's
#: rankable metrics (a faster machine is not a better checkpoint).
_RUN_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
_RUN_NAMES = {"total_flos", "epoch", "step"}


def split_run_information(metrics: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(model metrics, run information) of numeric metrics."""
    model: dict[str, float] = {}
    run: dict[str, float] = {}
    for name, value in metrics.items():
        if name in _RUN_NAMES or name.endswith(_RUN_SUFFIXES):
            run["run/" + name] = value
        else:
            model[name] = value
    return model, run
