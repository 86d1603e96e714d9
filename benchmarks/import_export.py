#!/usr/bin/env python3
"""Import/export benchmark for Graft, side by side with `cp` + `sync` in the same run.

Measures, for a generated safetensors file (default 1 GiB, F32 and BF16 tensors of mixed shapes):
  - `graft base add` into a fresh registry, against `cp FILE DEST && sync DEST` (the floor any
    store that copies and flushes the bytes must pay), and the ratio of the two;
  - peak RSS of the import (bounded memory: the goal is < 128 MiB for a 1 GiB file);
  - re-import of the same file under another name (no new bytes; time should be dominated by
    hashing, shown beside `sha256sum` of the file);
  - `graft export`, byte-identical to the input, against `cp`;
  - the inline threshold: a file of many tiny tensors imported with small tensors inline in
    SQLite (the default, < 4096 bytes) and with every tensor as its own file;
  - a model directory: the same tensors as `save_pretrained` shards them (--shard-mib), with
    their index, a config and a 2 MiB tokenizer: `graft base add DIR` against `cp -r` + `sync`,
    `graft export -o DIR` against the same, peak RSS of both.
Medians over --runs runs, interleaved so that noise hits every contender alike.
"""
import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import safetensors

MIB = 1 << 20


def generate(path, size_mib, seed=0):
    """F32 and BF16 tensors of mixed shapes (large matrices, small biases), random bytes."""
    rng = np.random.default_rng(seed)
    tensors, buffers, total, i = {}, [], 0, 0
    shapes = [(4096, 4096), (1024, 4096), (4096, 1024), (512, 512, 3, 3), (50257, 768), (3072,), (768,), (64,)]
    target = size_mib * MIB
    while total < target:
        shape = shapes[i % len(shapes)]
        dtype, width = ("float32", 4) if i % 2 == 0 else ("bfloat16", 2)
        count = int(np.prod(shape))
        nbytes = min(count * width, max(target - total, width))
        if nbytes < count * width:  # trim the last tensor to land on the target size
            count = nbytes // width
            shape = (count,)
            nbytes = count * width
        data = rng.integers(0, 256, size=nbytes, dtype=np.uint8)
        buffers.append(data)
        tensors[f"layers.{i}.{'weight' if len(shape) > 1 else 'bias'}"] = safetensors.TensorSpec(
            dtype=dtype, shape=list(shape), data_ptr=data.ctypes.data, data_len=nbytes)
        total += nbytes
        i += 1
    safetensors.serialize_file(tensors, path, metadata={"format": "pt", "generator": "graft benchmark"})
    return len(tensors)


def generate_tiny(path, count, seed=1):
    """Many small tensors (64 B to 4 KiB), like the biases and norms of a deep network."""
    rng = np.random.default_rng(seed)
    tensors, buffers = {}, []
    for i in range(count):
        n = int(rng.integers(16, 1024))
        data = rng.integers(0, 256, size=n * 4, dtype=np.uint8)
        buffers.append(data)
        tensors[f"blocks.{i}.norm.weight"] = safetensors.TensorSpec(dtype="float32", shape=[n], data_ptr=data.ctypes.data, data_len=n * 4)
    safetensors.serialize_file(tensors, path)


def shard(source, directory, shard_mib):
    """Splits a safetensors file into `model-0000K-of-0000N.safetensors` shards of at most
    `shard_mib` MiB with `model.safetensors.index.json`, as `save_pretrained` does, plus a
    config.json and a random 2 MiB tokenizer.json. Tensors are written from a map of the source."""
    import mmap
    import struct

    os.makedirs(directory)
    with open(source, "rb") as file:
        data = mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    start = 8 + length
    base = np.frombuffer(data, dtype=np.uint8).ctypes.data
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "I64": "int64", "U8": "uint8"}
    items = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    groups, current, size = [], [], 0
    for name, info in items:
        count = info["data_offsets"][1] - info["data_offsets"][0]
        if current and size + count > shard_mib * MIB:
            groups.append(current)
            current, size = [], 0
        current.append((name, info))
        size += count
    groups.append(current)
    weight_map, total = {}, 0
    for index, group in enumerate(groups):
        file_name = f"model-{index + 1:05d}-of-{len(groups):05d}.safetensors"
        specs = {}
        for name, info in group:
            begin, end = info["data_offsets"]
            specs[name] = safetensors.TensorSpec(dtype=names[info["dtype"]], shape=info["shape"], data_ptr=base + start + begin,
                                                 data_len=end - begin)
            weight_map[name] = file_name
            total += end - begin
        safetensors.serialize_file(specs, os.path.join(directory, file_name), metadata={"format": "pt"})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as index:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, index, indent=2, sort_keys=True)
    with open(os.path.join(directory, "config.json"), "w") as config:
        json.dump({"architectures": ["BenchModel"], "model_type": "bench", "hidden_size": 4096}, config, indent=2)
    with open(os.path.join(directory, "tokenizer.json"), "wb") as tokenizer:
        tokenizer.write(np.random.default_rng(3).integers(0, 256, size=2 * MIB, dtype=np.uint8).tobytes())
    return len(groups)


def timed(command, env=None):
    """Runs a command; returns (seconds, peak RSS in KiB of that process, as GNU time reports it)."""
    with tempfile.NamedTemporaryFile(mode="r") as rss:
        # Start from a clean writeback state: otherwise a command pays for the dirty pages of
        # the one before it, and whichever runs after a big write looks slow.
        os.sync()
        start = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + command,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"benchmark command failed: {' '.join(command)}\n{result.stderr.decode()}")
        return elapsed, int(rss.read().split()[-1])


def du(path):
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout.split()[0]) * 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", required=True)
    parser.add_argument("--baseline", help="another graft binary (an earlier build) to time side by side, interleaved")
    parser.add_argument("--open-bench", help="the graft-open-bench binary: time openCheckpoint on the imported file")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tiny-count", type=int, default=5000)
    parser.add_argument("--shard-mib", type=int, default=512, help="shard size of the model-directory rows (0 leaves them out)")
    parser.add_argument("--workdir", default=None, help="where to put files (default: a temp dir on the same disk as the repo)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(generate(args.generate, args.size_mib))
        return
    graft = os.path.abspath(args.graft)
    work = tempfile.mkdtemp(prefix="graft-bench-", dir=args.workdir or os.path.join(os.getcwd(), "benchmarks"))
    out_dir = os.path.join(os.getcwd(), "benchmarks", "out")
    os.makedirs(out_dir, exist_ok=True)
    try:
        source = os.path.join(work, "model.safetensors")
        # Generate in a child process, so this driver stays small.
        count = int(subprocess.run([sys.executable, __file__, "--generate", source, "--size-mib", str(args.size_mib), "--graft", graft],
                                   check=True, capture_output=True, text=True).stdout)
        size = os.path.getsize(source)
        print(f"generated {size / MIB:.0f} MiB, {count} tensors (F32 and BF16) in {work}", file=sys.stderr)
        results = {"cp_sync": [], "import": [], "import_rss_kib": [], "reimport": [], "openssl_sha256": [], "export": [], "export_rss_kib": [], "cp_sync_export": [],
                   "baseline_import": [], "baseline_export": []}
        baseline = os.path.abspath(args.baseline) if args.baseline else None
        def run_baseline():
            other = os.path.join(work, "baseline-registry")
            shutil.rmtree(other, ignore_errors=True)
            subprocess.run([baseline, "init", "--registry", other], check=True, stdout=subprocess.DEVNULL)
            t, _ = timed([baseline, "base", "add", source, "--name", "bench", "--registry", other])
            results["baseline_import"].append(t)
            exported = os.path.join(work, "baseline-export.safetensors")
            t, _ = timed([baseline, "export", "bench", "-o", exported, "--force", "--registry", other])
            results["baseline_export"].append(t)
            os.remove(exported)
            shutil.rmtree(other, ignore_errors=True)

        for run in range(args.runs):
            # The baseline runs before this build on even runs and after it on odd ones.
            if baseline and run % 2 == 0:
                run_baseline()
            copy = os.path.join(work, "copy.safetensors")
            t, _ = timed(["sh", "-c", f'cp "{source}" "{copy}" && sync "{copy}"'])
            results["cp_sync"].append(t)
            os.remove(copy)
            registry = os.path.join(work, "registry")
            shutil.rmtree(registry, ignore_errors=True)
            subprocess.run([graft, "init", "--registry", registry], check=True, stdout=subprocess.DEVNULL)
            t, rss = timed([graft, "base", "add", source, "--name", "bench", "--registry", registry])
            results["import"].append(t)
            results["import_rss_kib"].append(rss)
            t, _ = timed([graft, "base", "add", source, "--name", "bench-again", "--registry", registry])
            results["reimport"].append(t)
            t, _ = timed(["openssl", "dgst", "-sha256", source])
            results["openssl_sha256"].append(t)
            exported = os.path.join(work, "export.safetensors")
            t, rss = timed([graft, "export", "bench", "-o", exported, "--force", "--registry", registry])
            results["export"].append(t)
            results["export_rss_kib"].append(rss)
            if run == 0 and subprocess.run(["cmp", "-s", source, exported]).returncode != 0:
                sys.exit("export is not byte-identical to the input")
            os.remove(exported)
            t, _ = timed(["sh", "-c", f'cp "{source}" "{exported}" && sync "{exported}"'])
            results["cp_sync_export"].append(t)
            os.remove(exported)
            if baseline and run % 2 == 1:
                run_baseline()
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
        opened = None
        if args.open_bench:
            opened = json.loads(subprocess.run([os.path.abspath(args.open_bench), os.path.join(work, "registry"), "bench@1", "50"],
                                               capture_output=True, text=True, check=True).stdout)
        stats = json.loads(subprocess.run([graft, "stats", "--json", "--registry", os.path.join(work, "registry")], capture_output=True, text=True, check=True).stdout)

        directory_rows, directory_times = [], None
        if args.shard_mib > 0:
            tree = os.path.join(work, "model-dir")
            shards = shard(source, tree, args.shard_mib)
            tree_bytes = sum(os.path.getsize(os.path.join(tree, name)) for name in os.listdir(tree))
            os.remove(source)  # the shards hold the same bytes: keep the page cache and the disk for them
            times = {"cp": [], "import": [], "import_rss": [], "export": [], "export_rss": [], "cp_export": []}
            for run in range(args.runs):
                copy = os.path.join(work, "tree-copy")
                t, _ = timed(["sh", "-c", f'cp -r "{tree}" "{copy}" && sync "{copy}"/* "{copy}"'])
                times["cp"].append(t)
                shutil.rmtree(copy)
                registry = os.path.join(work, "dir-registry")
                shutil.rmtree(registry, ignore_errors=True)
                subprocess.run([graft, "init", "--registry", registry], check=True, stdout=subprocess.DEVNULL)
                t, rss = timed([graft, "base", "add", tree, "--name", "bench-dir", "--registry", registry])
                times["import"].append(t)
                times["import_rss"].append(rss)
                exported = os.path.join(work, "tree-export")
                t, rss = timed([graft, "export", "bench-dir", "-o", exported, "--force", "--registry", registry])
                times["export"].append(t)
                times["export_rss"].append(rss)
                if run == 0 and subprocess.run(["diff", "-r", "-q", tree, exported]).returncode != 0:
                    sys.exit("the exported directory differs from the imported one")
                shutil.rmtree(exported)
                t, _ = timed(["sh", "-c", f'cp -r "{tree}" "{exported}" && sync "{exported}"/* "{exported}"'])
                times["cp_export"].append(t)
                shutil.rmtree(exported)
                shutil.rmtree(registry, ignore_errors=True)
            dmed = {k: statistics.median(v) for k, v in times.items()}
            dgib = tree_bytes / (1 << 30)
            directory_rows = [
                "",
                f"## Model directory ({tree_bytes / MIB:.0f} MiB: {shards} shards of at most {args.shard_mib} MiB, index, config, "
                f"2 MiB tokenizer; median of {args.runs} runs)",
                "",
                "| operation | median s | GiB/s | vs peer |",
                "|---|---:|---:|---:|",
                f"| `cp -r` + `sync` (peer) | {dmed['cp']:.2f} | {dgib / dmed['cp']:.2f} | 1.00× |",
                f"| `graft base add DIR` (new registry) | {dmed['import']:.2f} | {dgib / dmed['import']:.2f} | "
                f"{dmed['cp'] / dmed['import']:.2f}× cp+sync speed |",
                f"| `cp -r` + `sync` (peer for export) | {dmed['cp_export']:.2f} | {dgib / dmed['cp_export']:.2f} | 1.00× |",
                f"| `graft export -o DIR` (rehashes every blob, byte-identical tree) | {dmed['export']:.2f} | "
                f"{dgib / dmed['export']:.2f} | {dmed['cp_export'] / dmed['export']:.2f}× cp+sync speed |",
                "",
                f"Peak RSS: directory import median {dmed['import_rss'] / 1024:.0f} MiB (max {max(times['import_rss']) / 1024:.0f} MiB); "
                f"export median {dmed['export_rss'] / 1024:.0f} MiB.",
            ]
            directory_times = times

        tiny = os.path.join(work, "tiny.safetensors")
        generate_tiny(tiny, args.tiny_count)
        inline = {}
        for label, threshold in [("inline < 4096 B (default)", None), ("every tensor a file", "0")]:
            times, sizes = [], []
            for _ in range(args.runs):
                registry = os.path.join(work, "tiny-registry")
                shutil.rmtree(registry, ignore_errors=True)
                subprocess.run([graft, "init", "--registry", registry], check=True, stdout=subprocess.DEVNULL)
                env = dict(os.environ)
                if threshold is not None:
                    env["GRAFT_INLINE_THRESHOLD"] = threshold
                t, _ = timed([graft, "base", "add", tiny, "--name", "tiny", "--registry", registry], env=env)
                times.append(t)
                sizes.append(du(registry))
            inline[label] = (statistics.median(times), statistics.median(sizes))

        med = {k: statistics.median(v) for k, v in results.items() if v}
        gib = size / (1 << 30)
        lines = [
            f"# Graft import/export benchmark ({size / MIB:.0f} MiB, {count} tensors, F32 + BF16; median of {args.runs} runs)",
            "",
            "| operation | median s | GiB/s | vs peer |",
            "|---|---:|---:|---:|",
            f"| `cp` + `sync` (peer) | {med['cp_sync']:.2f} | {gib / med['cp_sync']:.2f} | 1.00× |",
            f"| `graft base add` (new registry) | {med['import']:.2f} | {gib / med['import']:.2f} | {med['cp_sync'] / med['import']:.2f}× cp+sync speed |",
            f"| `graft base add` again (all bytes present) | {med['reimport']:.2f} | {gib / med['reimport']:.2f} | {med['openssl_sha256'] / med['reimport']:.2f}× one-core SHA-256 speed |",
            f"| `openssl dgst -sha256` (one core, SHA-NI; reference) | {med['openssl_sha256']:.2f} | {gib / med['openssl_sha256']:.2f} | |",
            f"| `cp` + `sync` of the file (peer for export) | {med['cp_sync_export']:.2f} | {gib / med['cp_sync_export']:.2f} | 1.00× |",
            f"| `graft export` (rehashes every blob as it copies, flushes) | {med['export']:.2f} | {gib / med['export']:.2f} | {med['cp_sync_export'] / med['export']:.2f}× cp+sync speed |",
        ]
        if baseline:
            lines += [
                f"| baseline `graft base add` ({os.path.relpath(baseline)}) | {med['baseline_import']:.2f} | {gib / med['baseline_import']:.2f} | {med['cp_sync'] / med['baseline_import']:.2f}× cp+sync speed |",
                f"| baseline `graft export` | {med['baseline_export']:.2f} | {gib / med['baseline_export']:.2f} | {med['cp_sync_export'] / med['baseline_export']:.2f}× cp+sync speed |",
            ]
        if opened:
            lines += ["", f"`openCheckpoint` of the imported file ({opened['tensors']} tensors, median of {opened['runs']}): all mapped in "
                      f"{opened['open_ms']:.3f} ms, first tensor's first byte read {opened['first_tensor_ms']:.3f} ms after the call; "
                      f"verify (rehash in place) {opened['verify_ms']:.0f} ms."]
        lines += [
            "",
            f"Peak RSS: `graft base add` median {med['import_rss_kib'] / 1024:.0f} MiB (max {max(results['import_rss_kib']) / 1024:.0f} MiB); "
            f"`graft export` median {med['export_rss_kib'] / 1024:.0f} MiB.",
            f"After two imports: logical {stats['logical_bytes'] / MIB:.0f} MiB, physical {stats['physical_bytes'] / MIB:.0f} MiB, dedup ratio {stats['dedup_ratio']:.2f}.",
            "",
            f"## Inline threshold ({args.tiny_count} tensors of 64 B to 4 KiB)",
            "",
            "| storage | import s | registry on disk |",
            "|---|---:|---:|",
        ]
        for label, (t, s) in inline.items():
            lines.append(f"| {label} | {t:.2f} | {s / MIB:.1f} MiB |")
        lines += directory_rows
        report = "\n".join(lines) + "\n"
        print(report)
        with open(os.path.join(out_dir, "import_export.md"), "w") as f:
            f.write(report)
        with open(os.path.join(out_dir, "import_export.json"), "w") as f:
            json.dump({"size_bytes": size, "tensors": count, "runs": results, "inline": inline, "open": opened,
                       "directory": directory_times}, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
