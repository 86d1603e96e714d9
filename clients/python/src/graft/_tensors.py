"""State dicts to safetensors bytes, and those bytes to what an upload proposal carries.

A tensor's digest is the SHA-256 of its raw little-endian bytes in the file, exactly as the
registry computes it: a frozen tensor left untouched hashes to its parent's blob, so it never
travels again.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass
class Layout:
    """A safetensors file as bytes: the header (8-byte length + JSON) and each tensor's span."""

    data: Any  # bytes, bytearray, memoryview or mmap
    header_length: int  # 8 + JSON length
    tensors: list[tuple[str, int, int]]  # (name, start, end) in data order, offsets into `data`

    @property
    def header(self) -> bytes:
        return bytes(self.data[: self.header_length])

    def view(self, start: int, end: int) -> memoryview:
        return memoryview(self.data)[start:end]


def parse(data: Any) -> Layout:
    """Splits safetensors bytes into header and tensor spans (the server re-checks everything)."""
    if len(data) < 8:
        raise ValueError("not a safetensors file: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if length > len(data) - 8:
        raise ValueError("not a safetensors file: the header runs past the end")
    header = json.loads(bytes(data[8 : 8 + length]))
    start = 8 + length
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        spans.append((name, start + begin, start + end))
    spans.sort(key=lambda span: (span[1], span[2]))
    return Layout(data=data, header_length=start, tensors=spans)


def digest(view: memoryview) -> str:
    return "sha256:" + hashlib.sha256(view).hexdigest()


def checkpoint_digest(layout: Layout, digests: list[str]) -> str:
    """SHA-256 of the header bytes followed by each tensor's raw digest in data order."""
    hasher = hashlib.sha256(layout.header)
    for value in digests:
        hasher.update(bytes.fromhex(value[7:]))
    return "sha256:" + hasher.hexdigest()


def from_path(path: str | os.PathLike[str]) -> Layout:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        data = mmap.mmap(file.fileno(), size, prot=mmap.PROT_READ) if size else b""
    return parse(data)


def _is_torch(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("torch")


def from_state_dict(state_dict: Mapping[str, Any], metadata: dict[str, str] | None = None) -> Layout:
    """A state_dict of torch tensors or numpy arrays as safetensors bytes, through the reference
    `safetensors` package.

    Torch tensors are detached, moved to the CPU and made contiguous (a transposed view is
    stored as its values, row-major); bf16/fp16 keep their dtype; int64 buffers
    (``num_batches_tracked``, ``position_ids``) are stored as they are. Tensors that share
    storage (tied weights) are each stored under their own name: the registry deduplicates by
    digest, so tied weights cost their bytes once.
    """
    if not state_dict:
        raise ValueError("the state_dict is empty")
    values = list(state_dict.values())
    if all(_is_torch(v) for v in values):
        import torch
        from safetensors.torch import save

        seen: set[tuple[int, int]] = set()
        tensors = {}
        for name, tensor in state_dict.items():
            tensor = tensor.detach().to("cpu")
            key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()) if tensor.numel() else (id(tensor), 0)
            # A tensor sharing storage with one before it is copied, so each name has its own.
            tensor = tensor.contiguous().clone() if key in seen else tensor.contiguous()
            seen.add(key)
            tensors[name] = tensor
        return parse(save(tensors, metadata=metadata or {"format": "pt"}))
    import numpy as np
    from safetensors.numpy import save as save_numpy

    if not all(isinstance(v, np.ndarray) or np.isscalar(v) for v in values):
        raise TypeError("a state_dict holds torch tensors or numpy arrays, one kind throughout")
    arrays = {name: np.ascontiguousarray(value) for name, value in state_dict.items()}
    return parse(save_numpy(arrays, metadata=metadata or {"format": "np"}))
