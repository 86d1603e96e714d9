"""`make bench-serve`: graft serve on loopback, side by side with the local CLI in one run.

1. remote `base add` of a SIZE MiB file vs local `base add` (fresh registries, interleaved runs);
2. the bytes a feature-extraction student's commit sends against its new bytes (a base of
   about 90 MB with a 4 MB classifier head);
3. WRITERS remote writers x COMMITS commits to shared students while READERS readers loop
   `best` and `lineage` over HTTP: errors, every commit present, read latency p50/p99;
4. the server's peak RSS through a 1 GiB upload;
5. the web view's pages on the tenth-size scale registry (built with graft-scale-bench, or
   --pages-registry to reuse one): server time per page from the access log, side by side
   with the JSON API route that reads the same data.

Every server listens on 127.0.0.1 on a free port and is stopped by this script (also on failure);
every loop is bounded in count and time. Results print as Markdown and land in benchmarks/out/.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from graft_process import Server  # noqa: E402


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes) in order."""
    header = {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for _, _, _, data in tensors:
            out.write(data)


def big_file(path, mib):
    """A base of `mib` MiB in 16 MiB tensors of random bytes."""
    chunk = 16 << 20
    count = max(1, (mib << 20) // chunk)
    tensors = [(f"layers.{i}.weight", "F32", [chunk // 4], os.urandom(chunk)) for i in range(count)]
    write_safetensors(path, tensors)


def run(graft, args, env=None, check=True):
    result = subprocess.run([graft] + args, capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise RuntimeError(f"graft {' '.join(args)}: {result.stderr.strip()}")
    return result


def token(graft, registry, name, scope):
    return run(graft, ["token", "create", name, "--scope", scope, "--registry", registry]).stdout.strip().splitlines()[-1]


def remote_env(server, secret):
    env = dict(os.environ)
    env["GRAFT_REGISTRY"] = server.url
    env["GRAFT_TOKEN"] = secret
    return env


def timed(graft, args, env=None):
    start = time.perf_counter()
    result = run(graft, args, env=env)
    return time.perf_counter() - start, result


def bench_import(graft, work, mib, runs):
    path = os.path.join(work, "big.safetensors")
    big_file(path, mib)
    local, remote = [], []
    for index in range(runs):
        for kind in ("local", "remote"):
            registry = os.path.join(work, f"reg-{kind}-{index}")
            run(graft, ["init", "--registry", registry])
            if kind == "local":
                seconds, _ = timed(graft, ["base", "add", path, "--name", "big", "--registry", registry])
                local.append(seconds)
            else:
                secret = token(graft, registry, "w", "write")
                server = Server(graft, registry, os.path.join(work, f"serve-import-{index}.log"))
                try:
                    seconds, _ = timed(graft, ["base", "add", path, "--name", "big"], env=remote_env(server, secret))
                    remote.append(seconds)
                finally:
                    server.stop()
            shutil.rmtree(registry)
    os.unlink(path)
    size = mib * 1.048576
    return {
        "mib": mib, "runs": runs,
        "local_s": statistics.median(local), "remote_s": statistics.median(remote),
        "local_mbps": size / statistics.median(local), "remote_mbps": size / statistics.median(remote),
        "ratio": statistics.median(local) / statistics.median(remote),
    }


def bench_student_bytes(graft, work):
    """A ~90 MB base (conv-like features) with a 1000 x 1024 float32 head (4 MB)."""
    features = [(f"features.{i}.weight", "F32", [1024, 1024], os.urandom(1024 * 1024 * 4)) for i in range(21)]
    head = ("classifier.weight", "F32", [1000, 1024], os.urandom(1000 * 1024 * 4))
    bias = ("classifier.bias", "F32", [1000], os.urandom(4000))
    base = os.path.join(work, "base90.safetensors")
    write_safetensors(base, features + [head, bias], {"format": "pt"})
    tuned = os.path.join(work, "fe.safetensors")
    new_head = ("classifier.weight", "F32", [1000, 1024], os.urandom(1000 * 1024 * 4))
    new_bias = ("classifier.bias", "F32", [1000], os.urandom(4000))
    write_safetensors(tuned, features + [new_head, new_bias], {"format": "pt"})
    registry = os.path.join(work, "reg-student")
    run(graft, ["init", "--registry", registry])
    secret = token(graft, registry, "w", "write")
    server = Server(graft, registry, os.path.join(work, "serve-student.log"))
    try:
        env = remote_env(server, secret)
        run(graft, ["base", "add", base, "--name", "base90"], env=env)
        run(graft, ["student", "create", "fe", "--from", "base90@1", "--freeze", "features"], env=env)
        result = json.loads(run(graft, ["checkpoint", "add", "fe", tuned, "--json"], env=env).stdout)
    finally:
        server.stop()
    shutil.rmtree(registry)
    new_bytes = 1000 * 1024 * 4 + 4000
    return {
        "base_mb": os.path.getsize(base) / 1e6, "new_bytes": new_bytes, "sent": result["bytes_sent"],
        "overhead_pct": 100 * (result["bytes_sent"] - new_bytes) / new_bytes,
    }


def bench_load(graft, work, writers, commits, readers, limit_s):
    registry = os.path.join(work, "reg-load")
    run(graft, ["init", "--registry", registry])
    base = os.path.join(work, "load-base.safetensors")
    tensors = [(f"features.{i}.weight", "F32", [64, 64], os.urandom(64 * 64 * 4)) for i in range(4)]
    write_safetensors(base, tensors + [("head.weight", "F32", [10, 64], os.urandom(2560))])
    run(graft, ["base", "add", base, "--name", "teacher", "--registry", registry])
    students = ["s0", "s1", "s2", "s3"]
    for name in students:
        run(graft, ["student", "create", name, "--from", "teacher@1", "--freeze", "features", "--registry", registry])
    files = []
    for index in range(8):
        path = os.path.join(work, f"load-{index}.safetensors")
        write_safetensors(path, tensors + [("head.weight", "F32", [10, 64], os.urandom(2560))])
        files.append(path)
    write_secret = token(graft, registry, "w", "write")
    read_secret = token(graft, registry, "r", "read")
    server = Server(graft, registry, os.path.join(work, "serve-load.log"))
    errors = []
    latencies = {"best": [], "lineage": []}
    done = threading.Event()
    acknowledged = []
    lock = threading.Lock()
    deadline = time.monotonic() + limit_s

    def writer(index):
        env = remote_env(server, write_secret)
        for count in range(commits):
            if time.monotonic() > deadline:
                break
            student = students[(index + count) % len(students)]
            result = run(graft, ["checkpoint", "add", student, files[(index + count) % len(files)], "--metric", f"acc={(count % 97) / 100}"], env=env, check=False)
            with lock:
                if result.returncode == 0:
                    acknowledged.append(result.stdout.split()[1])
                else:
                    errors.append(result.stderr.strip())

    def reader(index):
        paths = {"best": "/v1/best?metric=acc&under=teacher", "lineage": "/v1/models/teacher/lineage"}
        kind = "best" if index % 2 == 0 else "lineage"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        rounds = 0
        while not done.is_set() and time.monotonic() < deadline and rounds < 100_000:
            rounds += 1
            start = time.perf_counter()
            try:
                connection.request("GET", paths[kind], headers={"Authorization": f"Bearer {read_secret}"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except Exception as error:  # a dropped keep-alive connection: reconnect
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                with lock:
                    errors.append(f"{kind}: {error}")
                continue
            elapsed = time.perf_counter() - start
            with lock:
                if status == 200 or (kind == "best" and status == 404):
                    latencies[kind].append(elapsed)
                else:
                    errors.append(f"{kind}: HTTP {status}")
        connection.close()

    try:
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
        for thread in threads:
            thread.start()
        start = time.perf_counter()
        write_threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        for thread in write_threads:
            thread.start()
        for thread in write_threads:
            thread.join()
        elapsed = time.perf_counter() - start
        done.set()
        for thread in threads:
            thread.join()
        peak = server.peak_rss_mib()
    finally:
        server.stop()
    present = set()
    for name in students:
        listed = json.loads(run(graft, ["checkpoint", "list", name, "--json", "--registry", registry]).stdout)
        numbers = [entry["number"] for entry in listed]
        if numbers != list(range(1, len(numbers) + 1)):
            errors.append(f"{name}: numbering has gaps: {numbers}")
        present.update(entry["ref"] for entry in listed)
    missing = [ref for ref in acknowledged if ref not in present]
    verify = run(graft, ["verify", "--registry", registry], check=False).returncode
    shutil.rmtree(registry)

    def pct(values, q):
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "writers": writers, "commits_per_writer": commits, "readers": readers,
        "acknowledged": len(acknowledged), "missing": len(missing), "errors": len(errors), "error_samples": errors[:5],
        "verify_exit": verify, "write_seconds": elapsed, "commits_per_s": len(acknowledged) / elapsed,
        "best_reads": len(latencies["best"]), "best_p50_ms": pct(latencies["best"], 0.5), "best_p99_ms": pct(latencies["best"], 0.99),
        "lineage_reads": len(latencies["lineage"]), "lineage_p50_ms": pct(latencies["lineage"], 0.5), "lineage_p99_ms": pct(latencies["lineage"], 0.99),
        "server_peak_rss_mib": peak,
    }


def bench_rss(graft, work, mib):
    path = os.path.join(work, "huge.safetensors")
    big_file(path, mib)
    registry = os.path.join(work, "reg-rss")
    run(graft, ["init", "--registry", registry])
    secret = token(graft, registry, "w", "write")
    server = Server(graft, registry, os.path.join(work, "serve-rss.log"))
    try:
        seconds, _ = timed(graft, ["base", "add", path, "--name", "huge"], env=remote_env(server, secret))
        peak = server.peak_rss_mib()
    finally:
        server.stop()
    shutil.rmtree(registry)
    os.unlink(path)
    return {"mib": mib, "seconds": seconds, "server_peak_rss_mib": peak}


PAGES = [
    # (label, page path, the API route reading the same data or None)
    ("index: every model, first page", "/", "/v1/models"),
    ("index: search", "/?q=s12", None),
    ("index: flagged only", "/?flagged=1", None),
    ("model page (student, 5 checkpoints x 10 metrics)", "/models/s12", "/v1/models/s12"),
    ("model page, students of its teacher overlaid", "/models/s12?overlay=1", None),
    ("model page of the big family's base", "/models/base1", "/v1/models/base1"),
    ("lineage of the big family's base", "/models/base1/lineage", "/v1/models/base1/lineage"),
    ("lineage, searched", "/models/base1/lineage?q=s11", None),
    ("lineage of the deepest chain student", "/models/{deepest}/lineage", "/v1/models/{deepest}/lineage"),
    ("checkpoint page", "/checkpoints/s12@3", "/v1/checkpoints/s12@3"),
    ("advisories (one on base0, with its reach)", "/advisories", "/v1/advisories"),
]


def bench_pages(graft, scale_bench, work, registry, scale_args, runs):
    built = None
    if registry is None:
        registry = os.path.join(work, "reg-pages")
        started = time.monotonic()
        subprocess.run([scale_bench, *scale_args.split(), "--registry", registry, "--runs", "1"], check=True,
                       stdout=subprocess.DEVNULL, timeout=3600)
        built = time.monotonic() - started
    stats = json.loads(run(graft, ["stats", "--json", "--registry", registry]).stdout)
    families = json.loads(run(graft, ["lineage", "base1", "--json", "--registry", registry]).stdout)
    chain = json.loads(run(graft, ["lineage", "base0", "--json", "--registry", registry]).stdout)["descendants"]
    deepest = max(chain, key=lambda node: node["depth"])["name"] if chain else "base0"
    secret = token(graft, registry, f"pages-{os.getpid()}", "read")
    log = os.path.join(work, "serve-pages.log")
    server = Server(graft, registry, log)
    rows = []
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

        def get(path):
            connection.request("GET", path, headers={"Authorization": "Bearer " + secret})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
            return len(body)

        def server_times(path, count):
            """Server milliseconds of the next `count` requests to `path`, from the access log."""
            with open(log) as handle:
                before = len(handle.readlines())
            sizes = [get(path) for _ in range(count)]
            time.sleep(0.2)
            with open(log) as handle:
                lines = handle.readlines()[before:]
            times = [float(line.split("ms token=")[0].rsplit(" ", 1)[1]) for line in lines if " 200 " in line and "ms token=" in line]
            return times, sizes[-1]

        for label, page, api in PAGES:
            page = page.format(deepest=deepest)
            api = api.format(deepest=deepest) if api else None
            get(page)  # warm-up
            if api:
                get(api)
            page_ms, page_bytes = server_times(page, runs)
            row = {"label": label, "path": page, "bytes": page_bytes, "median_ms": statistics.median(page_ms),
                   "p90_ms": sorted(page_ms)[int(0.9 * (len(page_ms) - 1))]}
            if api:
                api_ms, _ = server_times(api, runs)
                row["api"] = api
                row["api_median_ms"] = statistics.median(api_ms)
            rows.append(row)
        connection.close()
    finally:
        server.stop()
    return {"registry": registry, "built_s": built, "models": stats["models"], "checkpoints": stats["checkpoints"],
            "big_family": len(families["descendants"]), "deepest": deepest, "runs": runs, "pages": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graft", default=os.path.join(ROOT, ".build/release/graft"))
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--load-limit-s", type=float, default=600)
    parser.add_argument("--rss-mib", type=int, default=1024)
    parser.add_argument("--scale-bench", default=os.path.join(ROOT, ".build/release/graft-scale-bench"))
    parser.add_argument("--pages-registry", help="time the pages on this registry instead of building one")
    parser.add_argument("--pages-scale", default="--bases 10 --students 10000 --checkpoints 5 --metrics 10 --chain 100 --big-family 1200",
                        help="graft-scale-bench arguments for the pages' registry (the tenth-size scale, base1 with ~2,000 descendants)")
    parser.add_argument("--pages-runs", type=int, default=30)
    parser.add_argument("--only", choices=["import", "student", "load", "rss", "pages"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["import", "student", "load", "rss", "pages"])
    work = tempfile.mkdtemp(prefix="graft-bench-serve-", dir=os.path.join(ROOT, "benchmarks"))
    results = {}
    try:
        if "import" in only:
            results["import"] = bench_import(args.graft, work, args.size_mib, args.runs)
        if "student" in only:
            results["student"] = bench_student_bytes(args.graft, work)
        if "load" in only:
            results["load"] = bench_load(args.graft, work, args.writers, args.commits, args.readers, args.load_limit_s)
        if "rss" in only:
            results["rss"] = bench_rss(args.graft, work, args.rss_mib)
        if "pages" in only:
            results["pages"] = bench_pages(args.graft, args.scale_bench, work, args.pages_registry, args.pages_scale, args.pages_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "benchmarks/out"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks/out/serve.json"), "w") as out:
        json.dump(results, out, indent=2)
    print("| measure | value |\n|---|---|")
    if "import" in results:
        r = results["import"]
        print(f"| base add {r['mib']} MiB, local (median of {r['runs']}) | {r['local_s']:.2f} s ({r['local_mbps']:.0f} MB/s) |")
        print(f"| base add {r['mib']} MiB, remote over loopback | {r['remote_s']:.2f} s ({r['remote_mbps']:.0f} MB/s) |")
        print(f"| remote / local throughput | **{r['ratio']:.2f}x** (target >= 0.5x) |")
    if "student" in results:
        r = results["student"]
        print(f"| feature-extraction commit on a {r['base_mb']:.0f} MB base: new bytes | {r['new_bytes']:,} |")
        print(f"| ... bytes sent (request bodies) | {r['sent']:,} (**+{r['overhead_pct']:.2f}%**, target <= 1%) |")
    if "load" in results:
        r = results["load"]
        print(f"| {r['writers']} writers x {r['commits_per_writer']} commits, {r['readers']} readers | {r['acknowledged']} acknowledged, {r['missing']} missing, {r['errors']} errors, verify exit {r['verify_exit']} |")
        print(f"| commit rate under load | {r['commits_per_s']:.1f}/s |")
        print(f"| best --under p50 / p99 ({r['best_reads']} reads) | {r['best_p50_ms']:.1f} / {r['best_p99_ms']:.1f} ms |")
        print(f"| lineage p50 / p99 ({r['lineage_reads']} reads) | {r['lineage_p50_ms']:.1f} / {r['lineage_p99_ms']:.1f} ms |")
        print(f"| server peak RSS under load | {r['server_peak_rss_mib']:.0f} MiB |")
        if r["error_samples"]:
            print("\nerrors:", *r["error_samples"], sep="\n  ")
    if "rss" in results:
        r = results["rss"]
        print(f"| server peak RSS through a {r['mib']} MiB upload | **{r['server_peak_rss_mib']:.0f} MiB** (target < 256) in {r['seconds']:.1f} s |")
    if "pages" in results:
        r = results["pages"]
        built = f", built in {r['built_s']:.0f} s" if r["built_s"] else ""
        print(f"\nPages on a registry of {r['models']:,} models and {r['checkpoints']:,} checkpoints{built}; base1 has "
              f"{r['big_family']:,} descendants, the deepest chain student is {r['deepest']}. Server time from the access log, "
              f"median of {r['runs']} after a warm-up:\n")
        print("| page | bytes | median ms | p90 ms | same data as JSON (/v1) | median ms | page / API |\n|---|---:|---:|---:|---|---:|---:|")
        for row in r["pages"]:
            api = f"`{row['api']}` | {row['api_median_ms']:.1f} | {row['median_ms'] / row['api_median_ms']:.1f}x" if "api" in row else "| |"
            print(f"| {row['label']} (`{row['path']}`) | {row['bytes']:,} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {api} |")
    failed = ("load" in results and (results["load"]["errors"] or results["load"]["missing"] or results["load"]["verify_exit"]))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
