"""Graft: a checkpoint and model registry for transfer learning — the Python client.

Talks to ``graft serve``: state_dicts in and out, only the tensors that changed uploaded, a
student's frozen layers enforced at commit, the best checkpoint under a base at any depth.
"""

from .client import Checkpoint, Client, Model
from .errors import Conflict, FrozenTensorChanged, GraftError, InvalidInput, NotFound, PermissionDenied, Unavailable

__version__ = "0.6.0"

__all__ = [
    "Checkpoint", "Client", "Conflict", "FrozenTensorChanged", "GraftError", "InvalidInput", "Model", "NotFound",
    "PermissionDenied", "Unavailable", "__version__",
]
