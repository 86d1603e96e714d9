"""`graft copy` (issue 28), measured against what a user would otherwise do: copy the registry
directory (`cp -r` + `sync`). Two sources: the demo registry (`graft demo`, or `--quick`) and a
family of a base and its full fine-tune (`--size-mib` each, 1 GiB by default: 2 GiB of unique
blobs). For each: a copy to a fresh local registry (durable when it exits: every blob and commit
is flushed) against `cp -r` + `sync` of the source directory; the same copy again with nothing new;
and a copy to a `graft serve` on loopback through a byte-counting TCP relay, whose upload bytes are
compared with the source's unique blob bytes. Every copy's answers are checked against the source.

    .venv/bin/python benchmarks/copy.py --graft .build/release/graft [--size-mib 1024] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from import_export import timed  # noqa: E402  (seconds and peak RSS of one command, the page cache synced first)

MIB = 1 << 20


def family(graft: str, root: str, size_mib: int) -> str:
    """A base of F32 tensors and its full fine-tune (every tensor changed): 2 × size_mib of blobs."""
    rng = np.random.default_rng(28)
    shape = (2048, 2048)  # 16 MiB a tensor
    count = max(1, size_mib * MIB // (shape[0] * shape[1] * 4))
    base = {f"layers.{i}.weight": rng.standard_normal(shape, dtype=np.float32) for i in range(count)}
    registry = os.path.join(root, "family")
    files = os.path.join(root, "files")
    os.makedirs(files)
    save_file(base, os.path.join(files, "base.safetensors"), metadata={"format": "pt"})
    tuned = {name: value + np.float32(1e-3) for name, value in base.items()}
    save_file(tuned, os.path.join(files, "tuned.safetensors"), metadata={"format": "pt"})
    run = lambda *a: subprocess.run([graft, *a, "--registry", registry], check=True, capture_output=True)  # noqa: E731
    run("init")
    run("base", "add", os.path.join(files, "base.safetensors"), "--name", "base")
    run("student", "create", "tuned", "--from", "base@1")
    run("checkpoint", "add", "tuned", os.path.join(files, "tuned.safetensors"), "--metric", "accuracy=0.9")
    run("tag", "tuned@1", "production")
    run("advisory", "add", "base", "--id", "BENCH-1", "--severity", "low")
    shutil.rmtree(files)
    return registry


def answers(graft: str, registry: str) -> list[str]:
    out = []
    names = [m["name"] for m in json.loads(subprocess.run([graft, "list", "--json", "--registry", registry], check=True,
                                                          capture_output=True, text=True).stdout)]
    for name in sorted(names):
        for command in (["show", name, "--json"], ["lineage", name, "--format", "json"], ["metrics", name, "--json"]):
            out.append(subprocess.run([graft, *command, "--registry", registry], check=True, capture_output=True, text=True).stdout)
    out.append(subprocess.run([graft, "advisory", "list", "--all", "--json", "--registry", registry], check=True,
                              capture_output=True, text=True).stdout)
    return out


def unique_blob_bytes(graft: str, registry: str) -> int:
    stats = json.loads(subprocess.run([graft, "stats", "--json", "--registry", registry], check=True, capture_output=True,
                                      text=True).stdout)
    return stats["physical_bytes"]


class Relay:
    """A TCP relay on loopback that counts the bytes each way (client → server is the upload)."""

    def __init__(self, target_port: int):
        self.up = self.down = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, False), daemon=True).start()

    def pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while data := source.recv(1 << 20):
                sink.sendall(data)
                with self.lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def serve(graft: str, root: str):
    subprocess.run([graft, "init", "--registry", root], check=True, capture_output=True)
    token = subprocess.run([graft, "token", "create", "bench", "--scope", "admin", "--registry", root], check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    process = subprocess.Popen([graft, "serve", "--registry", root, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    line = ""
    while time.time() < deadline and "http://" not in line:
        line = process.stdout.readline()
    url = line[line.index("http://"):].split()[0]
    return process, int(url.rsplit(":", 1)[1]), token


def measure(graft: str, name: str, source: str, work: str, runs: int) -> list[str]:
    rows = []
    cp_times, copy_times, again_times, rss = [], [], [], []
    expected = answers(graft, source)
    for run in range(runs):
        target = os.path.join(work, f"cp-{run}")
        seconds, _ = timed(["sh", "-c", f"cp -r '{source}' '{target}' && sync"])
        cp_times.append(seconds)
        shutil.rmtree(target)
        target = os.path.join(work, f"copy-{run}")
        seconds, peak = timed([graft, "copy", "--registry", source, "--to", target])
        copy_times.append(seconds)
        rss.append(peak)
        again, _ = timed([graft, "copy", "--registry", source, "--to", target])
        again_times.append(again)
        if answers(graft, target) != expected:
            sys.exit(f"{name}: the copy answers differently from the source")
        shutil.rmtree(target)
    cp_s, copy_s = statistics.median(cp_times), statistics.median(copy_times)
    unique = unique_blob_bytes(graft, source)
    # To a server, through the relay: bytes uploaded against the unique blob bytes.
    server_root = os.path.join(work, "server")
    process, port, token = serve(graft, server_root)
    relay = Relay(port)
    try:
        env = dict(os.environ, GRAFT_TO_TOKEN=token)
        start = time.perf_counter()
        subprocess.run([graft, "copy", "--registry", source, "--to", f"http://127.0.0.1:{relay.port}"], check=True,
                       capture_output=True, env=env)
        remote_s = time.perf_counter() - start
        up = relay.up
    finally:
        relay.close()
        process.terminate()
        process.wait(timeout=30)
    if answers(graft, server_root) != expected:
        sys.exit(f"{name}: the server's copy answers differently from the source")
    shutil.rmtree(server_root)
    rows.append(f"| {name}: `cp -r` + `sync` | {cp_s:.3f} | 1.00× | |")
    rows.append(f"| {name}: `graft copy` to a new local registry | {copy_s:.3f} | {cp_s / copy_s:.2f}× | "
                f"{statistics.median(rss) / 1024:.0f} MiB |")
    rows.append(f"| {name}: `graft copy` again, nothing new | {statistics.median(again_times):.3f} | | |")
    rows.append(f"| {name}: `graft copy` to `graft serve` (loopback) | {remote_s:.3f} | | upload {up / MIB:.1f} MiB = "
                f"{up / unique:.4f}× of {unique / MIB:.1f} MiB unique blobs |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", required=True)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the quick demo and a smaller family")
    args = parser.parse_args()
    graft = os.path.abspath(args.graft)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out_dir = os.path.join(root, "benchmarks", "out")
    os.makedirs(out_dir, exist_ok=True)
    # On the repository's disk (not a tmpfs): cp and graft both write to the same file system.
    work = tempfile.mkdtemp(prefix="graft-copy-bench-", dir=os.path.join(root, "benchmarks", "out"))
    try:
        demo = os.path.join(work, "demo")
        subprocess.run([graft, "demo", "--registry", demo] + (["--quick"] if args.quick else []), check=True,
                       capture_output=True)
        rows = measure(graft, "demo registry", demo, work, args.runs)
        size = min(args.size_mib, 64) if args.quick else args.size_mib
        rows += measure(graft, f"{2 * size} MiB family", family(graft, work, size), work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"# graft copy against cp -r + sync (median of {args.runs}; faster than cp: ratio above 1)",
        "",
        "| operation | median s | speed vs `cp -r` + `sync` | notes |",
        "|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(out_dir, "copy.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
