"""A second reader of Graft's stored encodings (issue 27): the blob files `graft compact` writes
are decoded here with Python's `zstandard` and numpy alone, following the layout in
docs/ARCHITECTURE.md ("Stored encodings"), and every decoded blob must hash to the digest it is
filed under. If Graft's writer and this reader ever disagree, the format is not what the
document says.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import struct

import pytest

np = pytest.importorskip("numpy")
zstandard = pytest.importorskip("zstandard")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
torch = pytest.importorskip("torch")

from conftest import graft  # noqa: E402

MAGIC = b"GRAFTZ\x00\x01"


def parse(stored: bytes) -> dict:
    """The header and frame table of an encoded blob (raises on anything malformed)."""
    assert stored[:8] == MAGIC
    codec, width, zero16, chunk, raw_length = struct.unpack_from("<BBHIQ", stored, 8)
    assert codec in (1, 2) and width in (1, 2, 4, 8) and zero16 == 0
    base = stored[24:56]
    chunks, zero32 = struct.unpack_from("<II", stored, 56)
    assert zero32 == 0 and chunks == -(-raw_length // chunk)
    sizes = struct.unpack_from(f"<{chunks * width}I", stored, 64)
    offset = 64 + 4 * chunks * width
    assert offset + sum(sizes) == len(stored), "the frames end where the object does"
    return {"codec": codec, "width": width, "chunk": chunk, "raw_length": raw_length,
            "base": base.hex() if codec == 2 else None, "sizes": sizes, "offset": offset}


def decode(stored: bytes, read_base) -> bytes:
    """Raw bytes: per chunk, each plane's zstd frame decompressed, planes interleaved back
    (plane p holds bytes p, p+w, …), then XORed with the base's bytes for a delta."""
    layout = parse(stored)
    width, chunk, length = layout["width"], layout["chunk"], layout["raw_length"]
    base = read_base(layout["base"]) if layout["base"] else None
    decompressor = zstandard.ZstdDecompressor()
    out = bytearray(length)
    offset, frame = layout["offset"], 0
    for start in range(0, length, chunk):
        count = min(chunk, length - start)
        planes = []
        for _ in range(width):
            size = layout["sizes"][frame]
            plane = decompressor.decompress(stored[offset:offset + size], max_output_size=count // width)
            assert len(plane) == count // width
            planes.append(np.frombuffer(plane, dtype=np.uint8))
            offset += size
            frame += 1
        joined = np.stack(planes, axis=1).reshape(-1)
        if base is not None:
            joined = joined ^ np.frombuffer(base[start:start + count], dtype=np.uint8)
        out[start:start + count] = joined.tobytes()
    return bytes(out)


def test_graft_encodings_decode_with_zstandard(tmp_path: pathlib.Path):
    registry = str(tmp_path / "registry")
    rng = np.random.default_rng(27)
    base = {
        "encoder.weight": (rng.standard_normal((1100, 1024)) * 0.02).astype(np.float32),  # past one 4 MiB chunk
        "decoder.weight": (rng.standard_normal((128, 96)) * 0.05).astype(np.float32),
        "embed.weight": torch.from_numpy(rng.standard_normal((256, 200)).astype(np.float32) * 0.02).to(torch.bfloat16),
        "steps": np.arange(4096, dtype=np.int64),  # 8-byte planes
    }
    tuned = dict(base)
    tuned["encoder.weight"] = base["encoder.weight"] + (rng.standard_normal((1100, 1024)) * 1e-4).astype(np.float32)
    tuned["embed.weight"] = (base["embed.weight"].float() + 1e-4).to(torch.bfloat16)

    def save(tensors, path):
        from safetensors.torch import save_file
        save_file({k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(v)) for k, v in tensors.items()}, str(path))

    save(base, tmp_path / "base.safetensors")
    save(tuned, tmp_path / "tuned.safetensors")
    for args in (["init"], ["base", "add", str(tmp_path / "base.safetensors"), "--name", "base"],
                 ["student", "create", "ft", "--from", "base@1"], ["checkpoint", "add", "ft", str(tmp_path / "tuned.safetensors")]):
        result = graft(*args, registry=registry)
        assert result.returncode == 0, result.stderr
    result = graft("compact", "--json", registry=registry)
    assert result.returncode == 0, result.stderr
    encoded = {entry["codec"]: entry["blobs"] for entry in json.loads(result.stdout)["encoded"]}
    assert encoded["bg-zstd"] >= 3 and encoded["xor-bg-zstd"] >= 2, encoded

    files = {path.name: path for path in (pathlib.Path(registry) / "blobs" / "sha256").glob("*/*")}

    def read(digest: str) -> bytes:
        stored = files[digest].read_bytes()
        return decode(stored, read) if stored[:8] == MAGIC else stored

    seen = {1: 0, 2: 0}
    widths = set()
    for digest, path in files.items():
        stored = path.read_bytes()
        if stored[:8] != MAGIC:
            continue
        layout = parse(stored)
        seen[layout["codec"]] += 1
        widths.add(layout["width"])
        if layout["base"]:
            assert files[layout["base"]].read_bytes()[:8] != MAGIC or parse(files[layout["base"]].read_bytes())["codec"] == 1, \
                "a delta's base is never itself a delta"
        raw = decode(stored, read)
        assert len(raw) == layout["raw_length"]
        assert hashlib.sha256(raw).hexdigest() == digest, f"{digest}: decoded bytes do not hash to their address"
    assert seen[1] >= 3 and seen[2] >= 2 and {2, 4, 8} <= widths, (seen, widths)
