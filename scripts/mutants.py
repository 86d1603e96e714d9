#!/usr/bin/env python3
"""make mutants: apply each mutation in mutants/mutations.toml, run the tests, report survivors.

A mutation is one small change to the sources that breaks a documented behaviour. For each:
the file is changed, `swift build --build-tests` runs (a mutant that does not compile is
reported apart and not scored), then `swift test --skip-build --filter TESTS` (or the whole
suite with --full). The mutant is killed when a test fails, survives when all pass. The file is
restored afterwards whatever happens, also on Ctrl-C.

    scripts/mutants.py                 every mutation, its own tests
    scripts/mutants.py --full          every mutation against the whole suite (slow)
    scripts/mutants.py --only ID ...   some of them
    scripts/mutants.py --check         only check that every `find` occurs exactly once

Exit status: 0 when every mutant was killed, 1 when any survived, 2 on a broken list.
"""
import argparse
import os
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIST = os.path.join(ROOT, "mutants", "mutations.toml")
REPORT = os.path.join(ROOT, ".build", "mutants-report.md")


def load(path):
    with open(path, "rb") as handle:
        mutations = tomllib.load(handle).get("mutation", [])
    problems, seen = [], set()
    for m in mutations:
        for key in ("id", "behaviour", "file", "find", "replace", "tests"):
            if key not in m:
                problems.append(f"{m.get('id', '?')}: no `{key}`")
        if m.get("id") in seen:
            problems.append(f"{m['id']}: duplicate id")
        seen.add(m.get("id"))
        source = os.path.join(ROOT, m.get("file", ""))
        if not os.path.isfile(source):
            problems.append(f"{m.get('id')}: no file {m.get('file')}")
            continue
        with open(source, encoding="utf-8") as handle:
            found = handle.read().count(m.get("find", "\0"))
        if found != 1:
            problems.append(f"{m.get('id')}: `find` occurs {found} times in {m['file']} (must be once)")
        if m.get("find") == m.get("replace"):
            problems.append(f"{m.get('id')}: `replace` equals `find`")
    return mutations, problems


def run(command, env=None, timeout=1800):
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return result.returncode, result.stdout, time.monotonic() - started


def failing_tests(output):
    lines = [line for line in output.splitlines() if line.startswith("✘ Test ") and "recorded an issue" in line]
    names = []
    for line in lines:
        name = line[len("✘ Test "):].split(" recorded an issue")[0]
        if name not in names:
            names.append(name)
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None, help="mutation ids to run")
    parser.add_argument("--full", action="store_true", help="run the whole suite for each mutant")
    parser.add_argument("--check", action="store_true", help="only validate the list")
    arguments = parser.parse_args()

    mutations, problems = load(LIST)
    if problems:
        for problem in problems:
            print(f"mutations.toml: {problem}", file=sys.stderr)
        return 2
    if arguments.check:
        print(f"{len(mutations)} mutations, each `find` found exactly once")
        return 0
    if arguments.only:
        unknown = set(arguments.only) - {m["id"] for m in mutations}
        if unknown:
            print(f"unknown mutation id(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        mutations = [m for m in mutations if m["id"] in arguments.only]

    # The unmutated tree must build and pass the same tests, or a "kill" means nothing.
    code, output, _ = run(["swift", "build", "--build-tests"])
    if code != 0:
        print(output[-4000:])
        print("the unmutated tree does not build", file=sys.stderr)
        return 2

    rows, survivors, stillborn = [], [], []
    for index, m in enumerate(mutations, 1):
        path = os.path.join(ROOT, m["file"])
        with open(path, encoding="utf-8") as handle:
            original = handle.read()
        env = dict(os.environ)
        env.update({key: str(value) for key, value in m.get("env", {}).items()})
        print(f"[{index}/{len(mutations)}] {m['id']}: ", end="", flush=True)
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(original.replace(m["find"], m["replace"], 1))
            code, output, build_seconds = run(["swift", "build", "--build-tests"])
            if code != 0:
                stillborn.append(m["id"])
                rows.append((m, "does not compile", build_seconds, 0.0, []))
                print("does not compile (not scored)")
                continue
            command = ["swift", "test", "--skip-build"]
            if not arguments.full:
                command += ["--filter", m["tests"]]
            code, output, test_seconds = run(command, env=env)
            if code == 0 and "passed after" not in output:
                print("no test ran: check its `tests` filter", file=sys.stderr)
                rows.append((m, "NO TEST RAN", build_seconds, test_seconds, []))
                survivors.append(m["id"])
                continue
            if code == 0:
                survivors.append(m["id"])
                rows.append((m, "SURVIVED", build_seconds, test_seconds, []))
                print(f"SURVIVED ({test_seconds:.0f} s of tests)")
            else:
                caught = failing_tests(output)
                rows.append((m, "killed", build_seconds, test_seconds, caught))
                print(f"killed by {len(caught)} test(s) in {test_seconds:.0f} s" + (f": {caught[0]}" if caught else ""))
        finally:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(original)

    scored = len(mutations) - len(stillborn)
    killed = scored - len(survivors)
    lines = [
        "# make mutants", "",
        f"{killed} of {scored} mutants killed" + (f" ({len(stillborn)} did not compile, not scored)" if stillborn else "")
        + f"; {'whole suite' if arguments.full else 'each against its own tests'}.", "",
        "| mutation | behaviour | result | caught by |", "|---|---|---|---|",
    ]
    for m, result, _, _, caught in rows:
        lines.append(f"| `{m['id']}` | {m['behaviour']} | {result} | {'; '.join(caught[:2])} |")
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    # Rebuild the unmutated tree so what is left in .build/ is the real code.
    run(["swift", "build", "--build-tests"])
    print()
    print(f"mutation score: {killed}/{scored} killed" + (f"; survivors: {', '.join(survivors)}" if survivors else "; no survivor"))
    print(f"report: {os.path.relpath(REPORT, ROOT)}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
