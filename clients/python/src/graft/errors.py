"""Exceptions mirroring the server's answers (docs/API.md): each carries the server's error
kind, its one-line message and, where the server names them, the offending tensors or blobs."""

from __future__ import annotations


class GraftError(Exception):
    """Any refusal or failure from a Graft server (or from reaching one)."""

    def __init__(self, message: str, *, kind: str = "internal", status: int | None = None, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.details = list(details or [])


class NotFound(GraftError):
    """No such model, checkpoint, alias, metric or blob (or one the token may not see)."""


class PermissionDenied(GraftError):
    """The token is missing, malformed, unknown or revoked (401), or its scope or model
    pattern does not allow the call (403)."""


class Conflict(GraftError):
    """The registry's state refuses the call: a taken name, a protected removal, a commit whose
    blobs went missing, a frozen-layer violation."""


class FrozenTensorChanged(Conflict):
    """A checkpoint breaks its student's frozen-layer manifest: a frozen tensor changed, a
    dropped one is present or a kept one missing. Nothing was stored. ``violations`` holds one
    dict per offending tensor as the server typed it (``tensor``, ``rule``: ``changed``,
    ``retyped``, ``missing`` or ``dropped_present``, and where the rule has them ``expected``
    and ``found``); ``tensors`` names each tensor."""

    def __init__(self, message: str, *, violations: list[dict] | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.violations = [dict(v) for v in violations or []]

    @property
    def tensors(self) -> list[str]:
        return [str(v["tensor"]) for v in self.violations]


class InvalidInput(GraftError):
    """A bad name, reference, metric, parameter or file."""


class Unavailable(GraftError):
    """The server cannot be reached, or is busy (retry)."""


def from_answer(status: int, body: dict | None, fallback: str) -> GraftError:
    """The exception for an error answer ``{"error": KIND, "message": ..., "details": [...]}``."""
    body = body or {}
    kind = str(body.get("error", ""))
    message = str(body.get("message") or fallback)
    details = [str(d) for d in body.get("details") or []]
    if kind == "manifest_violation":
        violations = [v for v in body.get("violations") or [] if isinstance(v, dict) and "tensor" in v]
        return FrozenTensorChanged(message, kind=kind, status=status, details=details, violations=violations)
    if kind == "not_found" or status == 404:
        cls: type[GraftError] = NotFound
    elif kind in ("unauthorized", "forbidden") or status in (401, 403):
        cls = PermissionDenied
    elif kind in ("exists", "protected", "conflict") or status == 409:
        cls = Conflict
    elif kind in ("usage", "invalid_input", "too_large") or status in (400, 413):
        cls = InvalidInput
    elif kind in ("busy", "unavailable") or status == 503:
        cls = Unavailable
    else:
        cls = GraftError
    return cls(message, kind=kind or "internal", status=status, details=details)
