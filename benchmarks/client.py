"""`make bench-client`: a student committed from a state_dict through the Python client, side by
side with what a user would otherwise do.

A 22M-parameter base (six blocks of 1840x1840 linear layers with LayerNorm, a head) is
registered on a real `graft serve` (loopback, free port) and in a local registry. A student
freezes blocks 0-3 and trains blocks 4-5 and a new head. Each run perturbs the trainable
tensors (what an epoch does) and commits:

- client: `client.commit(name, model.state_dict())` — proposal, only the changed blobs, commit;
- peer: `safetensors.torch.save_file` + local `graft checkpoint add` (the file the Hub or
  MLflow would upload whole).

Runs are interleaved; medians and ratios print as Markdown and land in benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clients", "python", "src"))
import graft  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Net(nn.Module):
    def __init__(self, width: int = 1840, blocks: int = 6, classes: int = 1000):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width)) for _ in range(blocks))
        self.head = nn.Linear(width, classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", default=os.path.join(ROOT, ".build/release/graft"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="graft-bench-client-", dir=os.path.join(ROOT, "benchmarks"))
    server = None
    try:
        torch.manual_seed(0)
        base = Net()
        parameters = sum(p.numel() for p in base.parameters())
        remote_registry, local_registry = os.path.join(work, "remote"), os.path.join(work, "local")
        for registry in (remote_registry, local_registry):
            subprocess.run([args.graft, "init", "--registry", registry], check=True, capture_output=True)
        token = subprocess.run([args.graft, "token", "create", "bench", "--scope", "write", "--registry", remote_registry],
                               check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        log = open(os.path.join(work, "serve.log"), "w")
        server = subprocess.Popen([args.graft, "serve", "--registry", remote_registry, "--listen", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=log, text=True)
        url = server.stdout.readline().split("listening on ")[1].split(" ")[0]
        client = graft.Client(url, token=token)
        base_file = os.path.join(work, "base.safetensors")
        save_file(base.state_dict(), base_file)
        client.register_base("base22m", base.state_dict())
        subprocess.run([args.graft, "base", "add", base_file, "--name", "base22m", "--registry", local_registry], check=True, capture_output=True)
        rules = ["--freeze", "blocks.0", "--freeze", "blocks.1", "--freeze", "blocks.2", "--freeze", "blocks.3", "--reinit", "head"]
        client.create_student("student", "base22m@1", freeze=["blocks.0", "blocks.1", "blocks.2", "blocks.3"], reinit=["head"])
        subprocess.run([args.graft, "student", "create", "student", "--from", "base22m@1", *rules, "--registry", local_registry],
                       check=True, capture_output=True)
        student = Net()
        student.load_state_dict(base.state_dict())
        trainable = [p for name, p in student.named_parameters() if name.startswith(("blocks.4", "blocks.5", "head"))]
        trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
        client_s, peer_s, uploaded, file_bytes = [], [], [], []
        for run in range(args.runs):
            with torch.no_grad():
                for p in trainable:
                    p.add_(torch.randn_like(p) * 1e-3)
            start = time.perf_counter()
            checkpoint = client.commit("student", student.state_dict(), epoch=run)
            client_s.append(time.perf_counter() - start)
            uploaded.append(checkpoint.bytes_uploaded)
            path = os.path.join(work, f"student-{run}.safetensors")
            start = time.perf_counter()
            save_file(student.state_dict(), path)
            subprocess.run([args.graft, "checkpoint", "add", "student", path, "--registry", local_registry], check=True, capture_output=True)
            peer_s.append(time.perf_counter() - start)
            file_bytes.append(os.path.getsize(path))
            os.unlink(path)
        results = {
            "parameters": parameters, "runs": args.runs, "file_bytes": statistics.median(file_bytes),
            "trainable_bytes": trainable_bytes, "uploaded_bytes": statistics.median(uploaded),
            "client_s": statistics.median(client_s), "peer_s": statistics.median(peer_s),
        }
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "benchmarks/out"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks/out/client.json"), "w") as out:
        json.dump(results, out, indent=2)
    r = results
    print("| measure | value |\n|---|---|")
    print(f"| base | {r['parameters'] / 1e6:.1f}M parameters, {r['file_bytes'] / 1e6:.1f} MB as safetensors |")
    print(f"| trainable tensors (blocks 4-5, head) | {r['trainable_bytes'] / 1e6:.1f} MB |")
    print(f"| bytes uploaded by `client.commit` (median of {r['runs']}) | {r['uploaded_bytes'] / 1e6:.1f} MB = **{100 * r['uploaded_bytes'] / r['file_bytes']:.1f} %** of the file a whole-file upload sends |")
    print(f"| `client.commit(state_dict)` over loopback | {r['client_s']:.2f} s |")
    print(f"| `save_file` + local `graft checkpoint add` | {r['peer_s']:.2f} s |")
    print(f"| client / peer time | **{r['client_s'] / r['peer_s']:.2f}x** |")


if __name__ == "__main__":
    main()
