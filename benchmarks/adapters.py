"""Adapter students (issue 25), measured: a 22M-parameter base shaped like all-MiniLM-L6-v2 (BERT,
6 layers, hidden 384, vocabulary 30,522; built from its config with random weights, no download)
and a rank-8 LoRA on every attention projection (query, key, value, attention.output.dense).

- bytes an adapter checkpoint stores, against its adapter file;
- bytes a remote commit sends to `graft serve` on loopback;
- `graft export --merged` against `graft export` of the base directory (median of --runs), peak
  RSS of each, and the merged tensors against PEFT's own merge_and_unload().

    .venv/bin/python benchmarks/adapters.py --graft .build/release/graft [--runs 5]
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graft_process  # noqa: E402
from import_export import timed  # noqa: E402  (seconds and peak RSS of one command, the page cache synced first)

MIB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()
    graft = os.path.abspath(args.graft)

    import peft
    import torch
    import transformers
    from safetensors.torch import load_file

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out_dir = os.path.join(root, "benchmarks", "out")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="graft-bench-adapters-", dir=root)
    server = None
    try:
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                         intermediate_size=1536, max_position_embeddings=512)
        base_dir, adapter_dir = os.path.join(work, "minilm"), os.path.join(work, "lora")
        model = transformers.BertModel(config)
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(base_dir)
        lora = peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                               target_modules=["query", "key", "value", "attention.output.dense"])
        wrapped = peft.get_peft_model(model, lora)
        # Two trained-looking adapters (B not zero): the second is committed remotely, so that
        # none of its blobs is in the registry already.
        remote_dir = os.path.join(work, "lora-remote")
        for seed, directory in ((1, remote_dir), (0, adapter_dir)):
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for name, parameter in wrapped.named_parameters():
                    if "lora_" in name:
                        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
            wrapped.save_pretrained(directory)
            os.remove(os.path.join(directory, "README.md"))  # PEFT's boilerplate card: the adapter is its weights and config
        adapter_file = os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors"))
        adapter_parameters = sum(p.numel() for n, p in wrapped.named_parameters() if "lora_" in n)

        registry = os.path.join(work, "registry")
        run = lambda *a: subprocess.run([graft, *a, "--registry", registry], check=True, capture_output=True, text=True).stdout
        run("init")
        run("base", "add", base_dir, "--name", "minilm")
        run("student", "create", "minilm-lora", "--from", "minilm@1", "--adapter")
        local = json.loads(run("checkpoint", "add", "minilm-lora", adapter_dir, "--json"))

        # A remote commit of the same adapter to a second adapter student, through graft serve on loopback.
        run("student", "create", "minilm-lora-remote", "--from", "minilm@1", "--adapter")
        token = run("token", "create", "bench", "--scope", "write").strip().splitlines()[-1]
        server = graft_process.Server(graft, registry, os.path.join(work, "serve.log"))
        env = dict(os.environ, GRAFT_TOKEN=token)
        remote = json.loads(subprocess.run(
            [graft, "checkpoint", "add", "minilm-lora-remote", remote_dir, "--registry", server.url, "--json"],
            check=True, capture_output=True, text=True, env=env).stdout)
        server.stop()
        server = None

        times = {"export": [], "export_rss": [], "merged": [], "merged_rss": []}
        for index in range(args.runs):
            target = os.path.join(work, "out")
            t, rss = timed([graft, "export", "minilm@1", "-o", target, "--force", "--registry", registry])
            times["export"].append(t)
            times["export_rss"].append(rss)
            shutil.rmtree(target)
            t, rss = timed([graft, "export", "minilm-lora@1", "--merged", "-o", target, "--force", "--registry", registry])
            times["merged"].append(t)
            times["merged_rss"].append(rss)
            if index == 0:
                ours = load_file(os.path.join(target, "model.safetensors"))
                theirs = wrapped.merge_and_unload().state_dict()
                worst = max((ours[k].double() - v.double()).abs().max().item() / max(v.double().abs().max().item(), 1e-30)
                            for k, v in theirs.items() if k in ours)
                merged_bytes = sum(os.path.getsize(os.path.join(target, f)) for f in os.listdir(target))
            shutil.rmtree(target)
        med = {k: statistics.median(v) for k, v in times.items()}
        stats = json.loads(run("stats", "--json"))
        lines = [
            f"# Adapters: a {parameters / 1e6:.1f}M-parameter base (MiniLM-L6 shape) and a rank-{args.rank} LoRA on every "
            f"attention projection ({adapter_parameters:,} parameters; median of {args.runs} runs)",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| adapter file (`adapter_model.safetensors`) | {adapter_file / 1024:.1f} KiB |",
            f"| bytes stored by `graft checkpoint add` (tensors and config; the header is in the metadata) | "
            f"{local['bytes_stored'] / 1024:.1f} KiB ({local['bytes_stored'] - adapter_file:+,} B against the adapter file) |",
            f"| bytes sent by a remote commit of another adapter (`--registry http://…`; stored there: "
            f"{remote['bytes_stored'] / 1024:.1f} KiB) | {remote['bytes_sent'] / 1024:.1f} KiB "
            f"({remote['bytes_sent'] - adapter_file:+,} B against the adapter file) |",
            f"| adapters against full copies (`graft stats`) | {stats['adapter_bytes'] / 1024:.0f} KiB against "
            f"{stats['adapter_parent_bytes'] / MIB:.1f} MiB ({100 * stats['adapter_bytes'] / stats['adapter_parent_bytes']:.2f}%) |",
            f"| `graft export` of the base (directory, {merged_bytes / MIB:.0f} MiB) | {med['export']:.3f} s, "
            f"peak RSS {med['export_rss'] / 1024:.0f} MiB |",
            f"| `graft export --merged` of the adapter | {med['merged']:.3f} s, peak RSS {med['merged_rss'] / 1024:.0f} MiB |",
            f"| merged speed / export speed | {med['export'] / med['merged']:.2f}× |",
            f"| merged tensors against PEFT `merge_and_unload()` | worst {worst:.2e} of a tensor's largest magnitude |",
        ]
        report = "\n".join(lines) + "\n"
        print(report)
        with open(os.path.join(out_dir, "adapters.md"), "w") as f:
            f.write(report)
        with open(os.path.join(out_dir, "adapters.json"), "w") as f:
            json.dump({"parameters": parameters, "adapter_file": adapter_file, "local": local, "remote": remote, "times": times,
                       "worst_relative": worst}, f, indent=2)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
