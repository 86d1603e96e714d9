"""Stored encodings (issue 27): what `graft compact` saves, side by side with ZipNN on the same
tensors, each codec's round trip checked byte for byte.

Tensors: all-MiniLM-L6-v2's architecture (BertModel, 6 layers, hidden 384, vocab 30522: 22.7 M
parameters) built from its config by `transformers` — randomly initialised, not the published
weights (no downloads here) — and a real full fine-tune of it (AdamW, lr 2e-5, `--steps` steps on
random token batches: every weight moves, as in a full fine-tune), each as FP32 and as BF16 (the
fine-tune's FP32 master weights cast, as LLM fine-tunes are stored).

For each of the four sets:
- Graft: a registry holding the base and the fine-tune (a full student); `graft compact` on the
  student first (XOR deltas against the base), then on the base (byte planes); ratio = raw bytes /
  stored bytes of the blobs compacted (inline tensors under 64 KiB are left out on both sides).
  Every checkpoint is exported afterwards and compared byte for byte with its source file.
- graft-codec-bench: the same codec on one core over the set's tensors (one buffer): ratio,
  encode and decode GB/s, round trip.
- zipnn 0.5.4 (threads=1) on the same buffer: ratio, compress/decompress GB/s, and whether its
  decompressed bytes equal the input — given `bytes`, and given a `bytearray`.
- plain zstd level 1 (Python `zstandard`) on the same buffer, without byte planes.

Then, on a 512 MiB FP32 checkpoint: import (`base add`) and export of the compacted checkpoint
against `cp` + `sync`, and compact's throughput; and the demo registry before and after.

    .venv/bin/python benchmarks/compress.py --graft .build/release/graft --codec-bench .build/release/graft-codec-bench
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# This directory holds copy.py, which would shadow the standard `copy` torch imports.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
_spec = importlib.util.spec_from_file_location("import_export", os.path.join(HERE, "import_export.py"))
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
timed = _module.timed  # seconds and peak RSS of one command, the page cache synced first

import numpy as np  # noqa: E402

MIB = 1 << 20


def models(steps: int):
    """The base and its full fine-tune as FP32 state dicts (torch tensors)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(27)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512)
    model = BertModel(config)
    base = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(8, 384, generator=generator)
    model.train()
    for _ in range(steps):
        tokens = torch.randint(0, 30522, (8, 64), generator=generator)
        out = model(input_ids=tokens).pooler_output
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return base, tuned


def save(tensors, path, dtype):
    import torch
    from safetensors.torch import save_file

    save_file({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}, path)


def floats(tensors, dtype) -> bytes:
    """The floating-point tensors of at least 4 KiB as one buffer (what the codecs see)."""
    import torch

    parts = []
    for name in sorted(tensors):
        value = tensors[name]
        if value.is_floating_point() and value.numel() * (2 if dtype == torch.bfloat16 else 4) >= 4096:
            parts.append(value.to(dtype).contiguous().view(torch.uint8).numpy().tobytes())
    return b"".join(parts)


def graft_json(graft, *args):
    return json.loads(subprocess.run([graft, *args], check=True, capture_output=True, text=True).stdout)


def run(graft, *args):
    subprocess.run([graft, *args], check=True, capture_output=True)


def sha(path):
    return hashlib.file_digest(open(path, "rb"), "sha256").hexdigest()


def zipnn_row(buffer: bytes, dtype: str, runs: int):
    from zipnn import ZipNN

    def make():
        return ZipNN(bytearray_dtype=dtype, input_format="byte", threads=1)

    times_c, times_d = [], []
    for _ in range(runs):
        z = make()
        start = time.perf_counter()
        packed = z.compress(bytearray(buffer))
        times_c.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = make().decompress(packed)
        times_d.append(time.perf_counter() - start)
    exact_bytearray = bytes(out) == buffer
    exact_bytes = bytes(make().decompress(make().compress(buffer))) == buffer
    return {"ratio": len(buffer) / len(packed), "encode_gbps": len(buffer) / statistics.median(times_c) / 1e9,
            "decode_gbps": len(buffer) / statistics.median(times_d) / 1e9, "round_trip_bytearray": exact_bytearray,
            "round_trip_bytes": exact_bytes}


def zstd_row(buffer: bytes):
    import zstandard

    packed = zstandard.ZstdCompressor(level=1).compress(buffer)
    assert zstandard.ZstdDecompressor().decompress(packed) == buffer
    return {"ratio": len(buffer) / len(packed)}


def codec_row(codec_bench, buffer: bytes, width: int, base: bytes | None, work: str, runs: int):
    raw = os.path.join(work, "codec.raw")
    with open(raw, "wb") as f:
        f.write(buffer)
    args = [codec_bench, raw, "--width", str(width), "--runs", str(runs)]
    if base is not None:
        with open(raw + ".base", "wb") as f:
            f.write(base)
        args += ["--base", raw + ".base"]
    row = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    os.remove(raw)
    if base is not None:
        os.remove(raw + ".base")
    return row


def sets(args, work):
    import torch

    base, tuned = models(args.steps)
    rows = []
    for dtype, name, width in ((torch.float32, "FP32", 4), (torch.bfloat16, "BF16", 2)):
        registry = os.path.join(work, f"reg-{name}")
        files = os.path.join(work, f"files-{name}")
        os.makedirs(files)
        save(base, os.path.join(files, "base.safetensors"), dtype)
        save(tuned, os.path.join(files, "tuned.safetensors"), dtype)
        run(args.graft, "init", "--registry", registry)
        run(args.graft, "base", "add", os.path.join(files, "base.safetensors"), "--name", "minilm", "--registry", registry)
        run(args.graft, "student", "create", "tuned", "--from", "minilm@1", "--registry", registry)
        run(args.graft, "checkpoint", "add", "tuned", os.path.join(files, "tuned.safetensors"), "--registry", registry)
        student = graft_json(args.graft, "compact", "--under", "tuned", "--json", "--registry", registry)
        whole = graft_json(args.graft, "compact", "--json", "--registry", registry)
        for ref, file in (("minilm@1", "base.safetensors"), ("tuned@1", "tuned.safetensors")):
            out = os.path.join(work, "out.safetensors")
            run(args.graft, "export", ref, "-o", out, "--registry", registry)
            assert sha(out) == sha(os.path.join(files, file)), f"{name} {ref}: export differs"
            os.remove(out)
        run(args.graft, "verify", "--read-data", "--registry", registry)
        base_buffer, tuned_buffer = floats(base, dtype), floats(tuned, dtype)
        zipnn_dtype = "float32" if dtype == torch.float32 else "bfloat16"
        for label, graft_result, buffer, delta in (
            (f"{name} base", whole, base_buffer, None),
            (f"{name} full fine-tune vs parent", student, tuned_buffer, base_buffer),
        ):
            rows.append({
                "set": label,
                "graft": {"ratio": graft_result["raw_bytes"] / graft_result["stored_bytes"], "raw": graft_result["raw_bytes"],
                          "codecs": {c["codec"]: c["blobs"] for c in graft_result["encoded"] if c["blobs"]}},
                "codec": codec_row(args.codec_bench, buffer, width, delta, work, args.runs),
                "zipnn": zipnn_row(buffer, zipnn_dtype, args.runs),
                "zstd1": zstd_row(buffer),
            })
            print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(registry)
        shutil.rmtree(files)
    return rows


def big(args, work):
    """A 512 MiB FP32 checkpoint: import and export of the compacted checkpoint against cp + sync."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(27)
    shape = (2048, 2048)
    count = args.size_mib * MIB // (shape[0] * shape[1] * 4)
    source = os.path.join(work, "big.safetensors")
    save_file({f"layers.{i}.weight": (rng.standard_normal(shape, dtype=np.float32) * 0.02) for i in range(count)}, source)
    times = {"cp": [], "import": [], "export_raw": [], "compact": [], "export": []}
    digest = sha(source)
    for _ in range(args.runs):
        registry = os.path.join(work, "big-reg")
        run(args.graft, "init", "--registry", registry)
        target = os.path.join(work, "copy.safetensors")
        times["cp"].append(timed(["sh", "-c", f"cp '{source}' '{target}' && sync '{target}'"])[0])
        os.remove(target)
        times["import"].append(timed([args.graft, "base", "add", source, "--name", "big", "--registry", registry])[0])
        out = os.path.join(work, "out.safetensors")
        times["export_raw"].append(timed([args.graft, "export", "big@1", "-o", out, "--registry", registry])[0])
        os.remove(out)
        times["compact"].append(timed([args.graft, "compact", "--registry", registry])[0])
        times["export"].append(timed([args.graft, "export", "big@1", "-o", out, "--registry", registry])[0])
        assert sha(out) == digest, "export of the compacted checkpoint differs"
        os.remove(out)
        stats = graft_json(args.graft, "stats", "--json", "--registry", registry)
        shutil.rmtree(registry)
    median = {k: statistics.median(v) for k, v in times.items()}
    size = os.path.getsize(source)
    os.remove(source)
    stored = sum(c["stored_bytes"] for c in stats["codecs"])
    raw = sum(c["raw_bytes"] for c in stats["codecs"])
    return {"bytes": size, "median_s": median, "import_vs_cp": median["cp"] / median["import"],
            "export_vs_cp": median["cp"] / median["export"], "compact_gbps": size / median["compact"] / 1e9,
            "compact_gbps_per_core": size / median["compact"] / 1e9 / os.cpu_count(), "ratio": raw / stored}


def demo(args, work):
    registry = os.path.join(work, "demo")
    run(args.graft, "demo", "--registry", registry)
    before = graft_json(args.graft, "stats", "--json", "--registry", registry)
    refs = []
    for model in graft_json(args.graft, "list", "--json", "--registry", registry):
        for checkpoint in graft_json(args.graft, "show", model["name"], "--json", "--registry", registry)["checkpoints"]:
            refs.append(f"{model['name']}@{checkpoint['number']}")

    def exports():
        out = {}
        for ref in refs:
            target = os.path.join(work, "demo-out")
            run(args.graft, "export", ref, "-o", target, "--registry", registry)
            if os.path.isdir(target):
                out[ref] = sorted((os.path.relpath(os.path.join(d, f), target), sha(os.path.join(d, f)))
                                  for d, _, fs in os.walk(target) for f in fs)
                shutil.rmtree(target)
            else:
                out[ref] = sha(target)
                os.remove(target)
        return out

    first = exports()
    result = graft_json(args.graft, "compact", "--json", "--registry", registry)
    after = graft_json(args.graft, "stats", "--json", "--registry", registry)
    assert exports() == first, "a demo export changed after compact"
    run(args.graft, "verify", "--read-data", "--registry", registry)
    return {"checkpoints": len(refs), "physical_before": before["physical_bytes"], "physical_after": after["physical_bytes"],
            "blobs_raw": result["raw_bytes"], "blobs_stored": result["stored_bytes"], "saving": result["saving"],
            "seconds": result["seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", required=True)
    parser.add_argument("--codec-bench", required=True)
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--only-big", action="store_true", help="only the 512 MiB checkpoint")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="graft-compress-", dir=os.environ.get("BENCH_DIR", os.getcwd()))
    try:
        rows = [] if args.only_big else sets(args, work)
        large = big(args, work)
        print(json.dumps(large), flush=True)
        demo_row = None if args.skip_demo or args.only_big else demo(args, work)
        print(json.dumps(demo_row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floors = {"BF16 base": 1.38, "FP32 base": 1.15, "FP32 full fine-tune vs parent": 1.25, "BF16 full fine-tune vs parent": 1.8}
    print()
    print(f"# graft compact against zipnn 0.5.4 and zstd -1 (same tensors; speeds one core, median of {args.runs})")
    print()
    print("| tensors | graft compact | floor | codec encode / decode GB/s | zipnn ratio | zipnn GB/s c / d |"
          " zipnn exact (bytes / bytearray) | zstd -1 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        g, c, z = row["graft"], row["codec"], row["zipnn"]
        assert c["round_trip"], f"{row['set']}: graft's codec did not round-trip"
        print(f"| {row['set']} | {g['ratio']:.3f}× | ≥ {floors[row['set']]}× | {c['encode_gbps']:.2f} / {c['decode_gbps']:.2f} |"
              f" {z['ratio']:.3f}× | {z['encode_gbps']:.2f} / {z['decode_gbps']:.2f} |"
              f" {'yes' if z['round_trip_bytes'] else 'no'} / {'yes' if z['round_trip_bytearray'] else 'no'} |"
              f" {row['zstd1']['ratio']:.3f}× |")
    m = large["median_s"]
    print()
    print(f"| {large['bytes'] // MIB} MiB FP32 checkpoint | median s | vs `cp` + `sync` |")
    print("|---|---|---|")
    print(f"| `cp` + `sync` | {m['cp']:.3f} | 1.00× |")
    print(f"| import (`base add`) | {m['import']:.3f} | {large['import_vs_cp']:.2f}× (goal ≥ 0.9×) |")
    print(f"| `compact` ({large['ratio']:.3f}×) | {m['compact']:.3f} | {large['compact_gbps']:.2f} GB/s,"
          f" {large['compact_gbps_per_core']:.2f} GB/s per core (goal ≥ 0.5) |")
    print(f"| export before compact (raw blobs) | {m['export_raw']:.3f} | {m['cp'] / m['export_raw']:.2f}× |")
    print(f"| export of the compacted checkpoint | {m['export']:.3f} | {large['export_vs_cp']:.2f}× (goal ≥ 0.6×) |")
    if demo_row:
        print()
        print(f"Demo registry ({demo_row['checkpoints']} checkpoints, every export byte-identical after compact):"
              f" blobs {demo_row['blobs_raw']} → {demo_row['blobs_stored']} bytes ({100 * demo_row['saving']:.1f}% saved),"
              f" physical {demo_row['physical_before']} → {demo_row['physical_after']} bytes, compact {demo_row['seconds']:.2f} s")


if __name__ == "__main__":
    main()
