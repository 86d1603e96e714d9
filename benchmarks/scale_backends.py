"""`make bench-scale-backends`: the scale benchmark's registry built and queried on SQLite and on
PostgreSQL, side by side in one run (issue 14).

Runs `graft-scale-bench` twice with the same arguments (BENCH_SCALE): once on a registry
directory (SQLite, WAL, synchronous=NORMAL for the bulk load) and once with `--metadata` on a
throwaway PostgreSQL cluster on loopback (Debian's server, fsync off as the bulk load's
equivalent; started and removed by this script, also on failure). Prints the build rate and
each query's median for both, and PostgreSQL's ratio to SQLite. Blob throughput to S3 against
local blobs is `make bench-s3`.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from pg_cluster import throwaway_cluster  # noqa: E402


def run(bench, arguments, extra):
    result = subprocess.run([bench, *arguments, *extra], capture_output=True, text=True, timeout=6 * 3600)
    if result.returncode != 0:
        raise RuntimeError(f"graft-scale-bench {' '.join(extra)}: {result.stderr.strip()[-2000:]}")
    build = re.search(r"([0-9.]+) checkpoints/s, ([0-9.]+) metric rows/s", result.stdout)
    queries = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (.+?) \| ([0-9.]+) \| [0-9.]+ \|$", result.stdout, re.M)}
    built = re.search(r"^Built .*$", result.stdout, re.M)
    return (float(build.group(1)) if build else 0.0), queries, built.group(0) if built else "", result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default=os.path.join(ROOT, ".build/release/graft-scale-bench"))
    parser.add_argument("--args", default="--bases 10 --students 2000 --checkpoints 5 --metrics 10 --chain 200", help="graft-scale-bench's arguments")
    args = parser.parse_args()
    arguments = shlex.split(args.args)
    with tempfile.TemporaryDirectory(prefix="graft-scale-backends-") as work, throwaway_cluster() as cluster:
        cluster.psql("CREATE DATABASE graft_scale")
        sqlite = run(args.bench, arguments, ["--registry", os.path.join(work, "sqlite")])
        postgres = run(args.bench, arguments, ["--registry", os.path.join(work, "postgres"), "--metadata", cluster.url("graft_scale")])
        version = cluster.psql("SHOW server_version").strip()
    print(f"graft-scale-bench {args.args}; PostgreSQL {version} on loopback\n")
    print(sqlite[2] + "\n")
    print("| | SQLite | PostgreSQL | PostgreSQL / SQLite |\n|---|---:|---:|---:|")
    print(f"| build, checkpoints/s (each one commit) | {sqlite[0]:.0f} | {postgres[0]:.0f} | {postgres[0] / sqlite[0]:.2f}x |")
    for label, value in sqlite[1].items():
        other = postgres[1].get(label)
        if other is not None:
            print(f"| {label}, median ms | {value:.2f} | {other:.2f} | {other / value:.2f}x |")


if __name__ == "__main__":
    main()
