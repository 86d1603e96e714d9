"""`make bench-s3`: blob throughput to an S3-compatible endpoint against the local blob store.

Side by side in one run, interleaved: `graft base add` of a SIZE MiB file (16 MiB tensors, so
blobs under the 64 MiB multipart threshold go up as single PUTs; `--tensor-mib 128` sends
multipart uploads) and `graft export` of it, into a local registry and into one created with
`--blobs s3://…` against moto's S3 server on loopback. moto keeps objects in memory in a
Python process, so these figures bound the client's cost, not a real S3's: they show what the
S3 path adds (signing, hashing once, HTTP) and how it scales with size. The server is started
and stopped by this script, also on failure.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from serve import write_safetensors  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", default=os.path.join(ROOT, ".build/release/graft"))
    parser.add_argument("--python", default=os.path.join(ROOT, ".venv/bin/python"))
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--tensor-mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="graft-bench-s3-", dir=os.path.join(ROOT, "benchmarks"))
    log = open(os.path.join(work, "moto.log"), "w")
    moto = subprocess.Popen([args.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            time.sleep(0.1)
            with open(log.name) as handle:
                text = handle.read()
            if "Running on http://127.0.0.1:" in text:
                port = text.split("Running on http://127.0.0.1:")[1].split()[0].strip()
                url = f"http://127.0.0.1:{port}"
        if url is None:
            raise RuntimeError("moto's server did not start")
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret")
        chunk = args.tensor_mib << 20
        path = os.path.join(work, "base.safetensors")
        write_safetensors(path, [(f"layers.{i}.weight", "F32", [chunk // 4], os.urandom(chunk)) for i in range(max(1, args.size_mib // args.tensor_mib))])
        size = os.path.getsize(path)

        def timed(command):
            start = time.monotonic()
            result = subprocess.run([args.graft, *command], capture_output=True, text=True, env=env, timeout=3600)
            if result.returncode != 0:
                raise RuntimeError(f"graft {' '.join(command)}: {result.stderr.strip()}")
            return time.monotonic() - start

        times = {("local", "add"): [], ("s3", "add"): [], ("local", "export"): [], ("s3", "export"): []}
        for run in range(args.runs):
            for backend in ["local", "s3"]:
                registry = os.path.join(work, f"{backend}-{run}")
                init = ["init", "--registry", registry] + (["--blobs", f"s3://bench-{run}/r?endpoint={url}"] if backend == "s3" else [])
                timed(init)
                times[(backend, "add")].append(timed(["base", "add", path, "--name", "big", "--registry", registry]))
                out = os.path.join(work, "out.safetensors")
                times[(backend, "export")].append(timed(["export", "big", "--output", out, "--force", "--registry", registry]))
                with open(out, "rb") as a, open(path, "rb") as b:
                    if a.read() != b.read():
                        raise RuntimeError(f"{backend}: export differs from the input")
                shutil.rmtree(registry)
        print(f"{size / (1 << 20):.0f} MiB in {args.tensor_mib} MiB tensors, median of {args.runs}, interleaved; S3 = moto's server on loopback\n")
        print("| operation | local s (MB/s) | S3 s (MB/s) | S3 / local throughput |\n|---|---:|---:|---:|")
        for operation in ["add", "export"]:
            local, s3 = statistics.median(times[("local", operation)]), statistics.median(times[("s3", operation)])
            label = "base add (upload)" if operation == "add" else "export (download)"
            print(f"| {label} | {local:.2f} ({size / local / 1e6:.0f}) | {s3:.2f} ({size / s3 / 1e6:.0f}) | {local / s3:.2f}x |")
    finally:
        moto.kill()
        moto.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
