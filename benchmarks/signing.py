"""Model signing (issue 29), measured on a sharded model directory (default 2 GiB: four 512 MiB
safetensors shards, a config and a tokenizer file): `graft sign` of the registered checkpoint
(each shard hashed from its blobs while every blob is rehashed alongside) and `graft
verify-signature DIR` of the exported tree, against one SHA-256 pass over the same files on one
core (hashlib, the floor any signer pays; coreutils `sha256sum` beside it) and against the
reference `model_signing sign key` / `verify key` on the same directory. Every signature made is
verified by the other tool.

    .venv/bin/python benchmarks/signing.py --graft .build/release/graft [--size-mib 2048] [--runs 3]
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

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from import_export import timed  # noqa: E402  (seconds and peak RSS of one command, the page cache synced first)

MIB = 1 << 20


def model_directory(path: str, size_mib: int, shards: int = 4) -> list[str]:
    """A sharded directory of about `size_mib` MiB; returns every file's path."""
    os.makedirs(os.path.join(path, "tokenizer"))
    rng = np.random.default_rng(0)
    per_shard = size_mib // shards
    weight_map = {}
    for index in range(shards):
        name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {}
        for j in range(per_shard // 64):
            tensor = f"layers.{index}.{j}.weight"
            tensors[tensor] = rng.standard_normal((4096, 4096), dtype=np.float32)
            weight_map[tensor] = name
        save_file(tensors, os.path.join(path, name), metadata={"format": "pt"})
        del tensors
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as out:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, out)
    with open(os.path.join(path, "config.json"), "w") as out:
        out.write('{"model_type": "bench"}\n')
    with open(os.path.join(path, "tokenizer", "vocab.txt"), "w") as out:
        out.write("\n".join(f"token{i}" for i in range(50000)))
    return sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", required=True)
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    graft = os.path.abspath(args.graft)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out_dir = os.path.join(root, "benchmarks", "out")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="graft-bench-signing-", dir=root)
    model_signing = [sys.executable, "-m", "model_signing"]
    try:
        key, pub = os.path.join(work, "key.pem"), os.path.join(work, "pub.pem")
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], check=True)
        subprocess.run(["openssl", "ec", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
        model = os.path.join(work, "model")
        files = model_directory(model, args.size_mib)
        size = sum(os.path.getsize(f) for f in files)
        registry = os.path.join(work, "registry")
        subprocess.run([graft, "init", "--registry", registry], check=True, capture_output=True)
        subprocess.run([graft, "base", "add", model, "--name", "big", "--registry", registry], check=True, capture_output=True)
        exported = os.path.join(work, "exported")
        subprocess.run([graft, "export", "big", "-o", exported, "--registry", registry], check=True, capture_output=True)

        one_pass = (
            "import hashlib, sys\n"
            "for path in sys.argv[1:]:\n"
            "    h = hashlib.sha256()\n"
            "    with open(path, 'rb') as f:\n"
            "        while chunk := f.read(8 << 20):\n"
            "            h.update(chunk)\n")
        sha, coreutils, sign, verify, ref_sign, ref_verify, sign_rss = [], [], [], [], [], [], []
        for _ in range(args.runs):
            # Interleaved, each after a sync, all reading from the page cache (the files fit in memory here).
            sha.append(timed([sys.executable, "-c", one_pass, *files])[0])
            coreutils.append(timed(["sha256sum", *files])[0])
            seconds, rss = timed([graft, "sign", "big", "--key", key, "--registry", registry])
            sign.append(seconds)
            sign_rss.append(rss)
            subprocess.run([graft, "export", "big", "-o", exported, "--force", "--registry", registry], check=True, capture_output=True)
            verify.append(timed([graft, "verify-signature", exported, "--public-key", pub])[0])
            reference_sig = os.path.join(work, "reference.sig")
            ref_sign.append(timed([*model_signing, "sign", "key", model, "--private_key", key, "--signature", reference_sig])[0])
            ref_verify.append(timed([*model_signing, "verify", "key", exported, "--public_key", pub, "--signature",
                                     os.path.join(exported, "model.sig")])[0])
        # Cross-checks: the reference verified Graft's signature above (it exits non-zero otherwise);
        # Graft verifies the reference's.
        shutil.copy(os.path.join(work, "reference.sig"), os.path.join(model, "model.sig"))
        check = subprocess.run([graft, "verify-signature", model, "--public-key", pub], capture_output=True, text=True)
        if check.returncode != 0:
            sys.exit(f"graft does not verify the reference's signature: {check.stderr}")

        def row(label: str, times: list[float], floor: float) -> str:
            median = statistics.median(times)
            return f"| {label} | {median:.2f} | {size / median / (1 << 30):.2f} | {median / floor:.2f}× |"

        floor = statistics.median(sha)
        lines = [
            f"# Model signing: a {size / (1 << 30):.2f} GiB sharded directory ({len(files)} files; median of {args.runs})",
            "",
            "| operation | median s | GiB/s | vs one SHA-256 pass |",
            "|---|---:|---:|---:|",
            row("one SHA-256 pass over the files, one core (Python hashlib: OpenSSL, SHA-NI where present): the floor", sha, floor),
            row("`sha256sum` (coreutils, one core)", coreutils, floor),
            row("`graft sign` (registered checkpoint: shards hashed from blobs, every blob rehashed alongside)", sign, floor),
            row("`model_signing sign key` (reference, same directory)", ref_sign, floor),
            row("`graft verify-signature DIR` (exported tree)", verify, floor),
            row("`model_signing verify key` (reference, same tree)", ref_verify, floor),
            "",
            f"- Peak RSS of `graft sign`: {statistics.median(sign_rss) / 1024:.0f} MiB.",
            "- Each tool verified the other's signature.",
        ]
        report = "\n".join(lines) + "\n"
        print(report)
        with open(os.path.join(out_dir, "signing.md"), "w") as out:
            out.write(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
