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
