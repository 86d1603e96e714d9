"""Exposure's drift (issue 26), measured: a base of F32 and BF16 float tensors and a full
fine-tune of it (every tensor moved a little), registered; `graft exposure` cold (reads both
checkpoints' blobs once and caches the sums), again (cached), and digests only, against the peer
a user would otherwise write: numpy loading both safetensors files (the reference package) and
computing ‖D − A‖ / ‖A‖. Both answers are checked to agree.

    .venv/bin/python benchmarks/exposure.py --graft .build/release/graft [--size-mib 256] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from import_export import timed  # noqa: E402  (seconds and peak RSS of one command, the page cache synced first)

MIB = 1 << 20


def tensors(size_mib: int, seed: int) -> dict[str, np.ndarray]:
    """Float tensors of mixed shapes, F32 (numpy has no BF16: the peer reads the same values as F32)."""
    rng = np.random.default_rng(seed)
    shapes = [(2048, 2048), (1024, 2048), (2048, 1024), (4096,), (1024,)]
    out, total, i = {}, 0, 0
    while total < size_mib * MIB:
        shape = shapes[i % len(shapes)]
        out[f"layers.{i}.{'weight' if len(shape) > 1 else 'bias'}"] = rng.standard_normal(shape, dtype=np.float32) * 0.02
        total += int(np.prod(shape)) * 4
        i += 1
    return out


def peer(base_path: str, tuned_path: str) -> float:
    a, d = load_file(base_path), load_file(tuned_path)
    difference = sum(float(np.sum((d[k].astype(np.float64) - a[k]) ** 2)) for k in a)
    magnitude = sum(float(np.sum(a[k].astype(np.float64) ** 2)) for k in a)
    return (difference / magnitude) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", required=True)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    graft = os.path.abspath(args.graft)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out_dir = os.path.join(root, "benchmarks", "out")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="graft-bench-exposure-", dir=root)
    try:
        base = tensors(args.size_mib, 0)
        rng = np.random.default_rng(1)
        tuned = {k: v + rng.standard_normal(v.shape, dtype=np.float32) * 0.001 for k, v in base.items()}
        base_path, tuned_path = os.path.join(work, "base.safetensors"), os.path.join(work, "tuned.safetensors")
        save_file(base, base_path, metadata={"format": "pt"})
        save_file(tuned, tuned_path, metadata={"format": "pt"})
        del base, tuned
        registry = os.path.join(work, "registry")

        def cli(*command: str) -> str:
            return subprocess.run([graft, *command, "--registry", registry], check=True, capture_output=True, text=True).stdout

        def fresh() -> None:
            shutil.rmtree(registry, ignore_errors=True)
            cli("init")
            cli("base", "add", base_path, "--name", "base")
            cli("student", "create", "tuned", "--from", "base@1")
            cli("checkpoint", "add", "tuned", tuned_path)

        exposure = [graft, "exposure", "tuned", "--to", "base@1", "--registry", registry]
        cold, cached, digests, numpy_times, rss = [], [], [], [], []
        for _ in range(args.runs):
            fresh()
            seconds, peak = timed(exposure)
            cold.append(seconds)
            rss.append(peak)
            cached.append(timed(exposure)[0])
            digests.append(timed(exposure + ["--digests-only"])[0])
            os.sync()
            start = time.perf_counter()
            expected = peer(base_path, tuned_path)
            numpy_times.append(time.perf_counter() - start)
        measured = json.loads(cli("exposure", "tuned", "--to", "base@1", "--json"))
        agree = abs(measured["drift"] - expected) <= 1e-6 * expected
        size = os.path.getsize(base_path) + os.path.getsize(tuned_path)
        cold_s, numpy_s = statistics.median(cold), statistics.median(numpy_times)
        lines = [
            f"# Exposure's drift: {args.size_mib} MiB base and its full fine-tune (median of {args.runs})",
            "",
            "| operation | median s | GiB/s of both checkpoints | vs numpy |",
            "|---|---:|---:|---:|",
            f"| numpy: load both files (safetensors), ‖D − A‖ / ‖A‖ (peer) | {numpy_s:.2f} | {size / numpy_s / (1 << 30):.2f} | 1.00× |",
            f"| `graft exposure` cold (reads both, caches the sums) | {cold_s:.2f} | {size / cold_s / (1 << 30):.2f} |"
            f" **{numpy_s / cold_s:.2f}×** |",
            f"| `graft exposure` again (cached) | {statistics.median(cached):.3f} | | {numpy_s / statistics.median(cached):.0f}× |",
            f"| `graft exposure --digests-only` | {statistics.median(digests):.3f} | | |",
            "",
            f"- Peak RSS of the cold run: {statistics.median(rss) / 1024:.0f} MiB (two lanes, two 4 MiB buffers each).",
            f"- Drift {measured['drift']:.6f} (graft) against {expected:.6f} (numpy, float64): "
            + ("they agree." if agree else "**they differ**."),
        ]
        report = "\n".join(lines) + "\n"
        print(report)
        with open(os.path.join(out_dir, "exposure.md"), "w") as out:
            out.write(report)
        if not agree:
            sys.exit("graft's drift differs from numpy's")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
