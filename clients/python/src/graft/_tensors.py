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


#: torch dtypes by their safetensors names.
_TORCH_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


def _stream_torch(state_dict: Mapping[str, Any], metadata: dict[str, str]) -> Layout:
    """A torch state_dict written as safetensors into an unlinked temporary file one tensor at a
    time, then mapped: the client holds at most one tensor's CPU copy beside the model (the
    file's pages are the kernel's to drop), where serializing to bytes held the model twice over.
    Tensors keep the state_dict's order, back to back, under a header of the format's rules."""
    import mmap
    import tempfile

    import torch

    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, tensor in state_dict.items():
        dtype = _TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise TypeError(f"tensor {name}: dtype {tensor.dtype} has no safetensors name")
        length = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + length]}
        offset += length
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with tempfile.TemporaryFile(prefix="graft-commit-") as file:
        file.write(struct.pack("<Q", len(text)))
        file.write(text)
        for tensor in state_dict.values():
            if tensor.numel() == 0:
                continue
            # One tensor at a time: detached, on the CPU, contiguous, as its raw little-endian bytes.
            flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            file.write(memoryview(flat.numpy()))
            del flat
        file.flush()
        data = mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
    return parse(data)


def _is_torch(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("torch")


def from_state_dict(state_dict: Mapping[str, Any], metadata: dict[str, str] | None = None) -> Layout:
    """A state_dict of torch tensors or numpy arrays as safetensors bytes, through the reference
    `safetensors` package.

    Torch tensors are detached, moved to the CPU and made contiguous (a transposed view is
    stored as its values, row-major) one at a time into a mapped temporary file; bf16/fp16 keep
    their dtype; int64 buffers (``num_batches_tracked``, ``position_ids``) are stored as they
    are. Tensors that share storage (tied weights) are each stored under their own name: the
    registry deduplicates by digest, so tied weights cost their bytes once.
    """
    if not state_dict:
        raise ValueError("the state_dict is empty")
    values = list(state_dict.values())
    if all(_is_torch(v) for v in values):
        return _stream_torch(state_dict, metadata or {"format": "pt"})
    import numpy as np
    from safetensors.numpy import save as save_numpy

    if not all(isinstance(v, np.ndarray) or np.isscalar(v) for v in values):
        raise TypeError("a state_dict holds torch tensors or numpy arrays, one kind throughout")
    arrays = {name: np.ascontiguousarray(value) for name, value in state_dict.items()}
    return parse(save_numpy(arrays, metadata=metadata or {"format": "np"}))


# -- model directories ---------------------------------------------------------------------------

#: Pickle-based files: never loaded, refused in a directory unless excluded.
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Nesting deeper than this is refused (the server's walk has the same bound).
MAX_DEPTH = 16


@dataclass
class Directory:
    """A model directory read for an upload: its safetensors shards (by relative path, each
    mapped) and its other files (relative path, the real path of its bytes, size), by path."""

    root: str
    shards: list[tuple[str, Layout]]
    files: list[tuple[str, str, int]]


def _utf8_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def read_directory(root: str | os.PathLike[str], exclude: tuple[str, ...] | list[str] = ()) -> Directory:
    """Walks a model directory as ``graft base add DIR`` does: names starting with ``.`` and
    paths ``exclude`` matches (fnmatch, against the relative path or the file's name) are left
    out; a symlink must resolve to a regular file inside the directory (or, for a Hugging Face
    cache snapshot, inside the cache's ``blobs/``); pickles and special files are refused with
    ``ValueError``. The server checks the shards and their index again."""
    import fnmatch

    top = os.path.realpath(os.fspath(root))
    if not os.path.isdir(top):
        raise ValueError(f"{root}: not a directory")
    parts = top.split(os.sep)
    cache_blobs = (os.sep.join(parts[:-2]) + os.sep + "blobs"
                   if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--") else None)
    shards: list[tuple[str, Layout]] = []
    files: list[tuple[str, str, int]] = []

    def excluded(relative: str) -> bool:
        name = relative.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(relative, p) or ("/" not in p and fnmatch.fnmatchcase(name, p)) for p in exclude)

    def visit(relative: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"{root}: {relative} nests deeper than {MAX_DEPTH} folders")
        folder = os.path.join(top, relative) if relative else top
        for entry in os.scandir(folder):
            if entry.name.startswith("."):
                continue
            path = f"{relative}/{entry.name}" if relative else entry.name
            if excluded(path):
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                inside = target.startswith(top + os.sep) or (cache_blobs is not None and target.startswith(cache_blobs + os.sep))
                if not inside:
                    raise ValueError(f"{root}: the symlink {path} leaves the directory (it points at {target})")
                if not os.path.isfile(target):
                    raise ValueError(f"{root}: the symlink {path} points at something that is not a regular file")
                add(path, target)
            elif entry.is_dir(follow_symlinks=False):
                visit(path, depth + 1)
            elif entry.is_file(follow_symlinks=False):
                add(path, entry.path)
            else:
                raise ValueError(f"{root}: {path} is not a regular file or a folder (a device, socket or FIFO)")

    def add(path: str, real: str) -> None:
        if path.lower().endswith(PICKLED):
            raise ValueError(
                f"{root}: {path} is a pickle-based file, which Graft never loads: convert weights to safetensors with the "
                "reference safetensors tools (safetensors.torch.save_file), or leave the file out (exclude=[...])")
        if path.endswith(".safetensors"):
            shards.append((path, from_path(real)))
        else:
            files.append((path, real, os.path.getsize(real)))

    visit("", 0)
    if not shards:
        raise ValueError(f"{root}: it holds no safetensors weights")
    shards.sort(key=lambda shard: _utf8_key(shard[0]))
    files.sort(key=lambda file: _utf8_key(file[0]))
    return Directory(root=top, shards=shards, files=files)


def file_digest(path: str) -> str:
    """SHA-256 of a file, read in 1 MiB pieces."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()
