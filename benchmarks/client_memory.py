#!/usr/bin/env python3
"""Anonymous memory the Python client takes above the model while preparing a commit of a torch
state_dict (serialising and hashing every tensor), sampled every 2 ms from /proc/self/status
(RssAnon: the mapped file's pages are the kernel's to drop, so they are not counted), against
serialising with the reference `safetensors.torch.save` as the client did before.

    .venv/bin/python benchmarks/client_memory.py [--tensors 8] [--side 4096]
"""
import argparse
import os
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python", "src"))
from graft import _tensors  # noqa: E402


def anonymous_mib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return 0


def measure(model, prepare) -> int:
    peak, done = [0], [False]

    def sample():
        while not done[0]:
            peak[0] = max(peak[0], anonymous_mib())
            time.sleep(0.002)

    before = anonymous_mib()
    sampler = threading.Thread(target=sample)
    sampler.start()
    layout = prepare(model)
    [_tensors.digest(layout.view(start, end)) for _, start, end in layout.tensors]
    done[0] = True
    sampler.join()
    return peak[0] - before


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--side", type=int, default=4096)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = {f"layer.{i}.weight": torch.randn(args.side, args.side) for i in range(args.tensors)}
    size = sum(t.numel() * t.element_size() for t in model.values()) >> 20
    largest = max(t.numel() * t.element_size() for t in model.values()) >> 20

    def reference(state):
        from safetensors.torch import save

        return _tensors.parse(save(state, metadata={"format": "pt"}))

    streamed = measure(model, _tensors.from_state_dict)
    saved = measure(model, reference)
    print(f"model {size} MiB, largest tensor {largest} MiB; anonymous memory above the model while committing:")
    print(f"| client (one tensor at a time into a mapped file) | {streamed} MiB | goal ≤ 1.2 × {largest} + 64 = {int(1.2 * largest + 64)} MiB |")
    print(f"| `safetensors.torch.save` to bytes (before) | {saved} MiB | |")


if __name__ == "__main__":
    main()
