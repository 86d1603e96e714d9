#!/usr/bin/env python3
"""make mutants-sample: generated mutants of the rule-bearing files, a random sample of them run.

`make mutants` replays a hand-written list; this finds what nobody listed. Every line of the
files in FILES is offered to a few mutation operators, each making one small change a careless
edit could make:

    comparison   flip one comparison (== and !=, < and >=, > and <=)
    logic        swap one && and ||
    negate       negate the condition of an if, guard or while (not a binding one)
    delete       delete one plain statement (a call or an assignment on one line)
    guard        delete a one-line guard (not a binding one)
    element      drop one element of a one-line array literal
    constant     change an integer literal by one
    boolean      swap true and false

A seeded sample of N of them is applied one at a time: the tree is built (a mutant that does not
compile is reported and not scored), then the tests for that file (TESTS below) run. A mutant is
killed when a test fails, survives when all pass. The file is restored whatever happens. The
score is killed / compiled; survivors are listed with the change, to get a test or a written
reason (docs/ROBUSTNESS.md). Some survivors are equivalent mutants (the change cannot alter
behaviour): say so with the reason.

    scripts/mutants_sample.py --count 40 --seed 1     run a sample
    scripts/mutants_sample.py --count 40 --list       only print the sample
"""
import argparse
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutants import ROOT, failing_tests, run  # noqa: E402

REPORT = os.path.join(ROOT, ".build", "mutants-sample-report.md")

CORE_TESTS = "GraftTests|GraftCLITests.RegistryCLITests|GraftCLITests.ExitCodeCLITests"
SERVER_TESTS = "GraftServerTests|GraftCLITests.Server|GraftCLITests.ServerAccessTests|GraftCLITests.ServerUploadTests"

# The files whose rules users rely on, with the tests that guard them.
FILES = {
    "Sources/GraftCore/Policies.swift": CORE_TESTS,
    "Sources/GraftCore/RetentionPolicy.swift": CORE_TESTS,
    "Sources/GraftCore/Manifest.swift": CORE_TESTS,
    "Sources/GraftCore/Registry+Lineage.swift": CORE_TESTS,
    "Sources/GraftCore/Registry+Tokens.swift": CORE_TESTS + "|" + SERVER_TESTS,
    "Sources/GraftServer/API.swift": SERVER_TESTS,
    "Sources/GraftServer/Context.swift": SERVER_TESTS,
}

STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
COMPARISONS = {" == ": " != ", " != ": " == ", " < ": " >= ", " >= ": " < ", " > ": " <= ", " <= ": " > "}
LOGIC = {" && ": " || ", " || ": " && "}
CONDITION = re.compile(r"^(\s*)(if|guard|while) (.+?)( else)? \{(.*)$")
INTEGER = re.compile(r"(?<![\w.$])(\d+)(?![\w.])")
KEYWORDS = ("let ", "var ", "return", "guard ", "if ", "}", "{", "case ", "default", "func ", "init", "@", "package ", "public ",
            "private ", "fileprivate ", "internal ", "static ", "struct ", "enum ", "extension ", "for ", "while ", "switch ",
            "else", "do ", "do{", "catch", "throw", "import ", "typealias ", "protocol ", "final ", "class ", "actor ", "#",
            "try ", "defer", "break", "continue", "fallthrough", ".", ")", "]", "\"")


def code_mask(line):
    """The line with string literals' contents blanked, so operators only see code."""
    return STRING.sub(lambda m: '"' + "_" * (len(m.group(0)) - 2) + '"', line)


def balanced(text):
    depth = 0
    for character in text:
        depth += character in "([" and 1 or 0
        depth -= character in ")]" and 1 or 0
        if depth < 0:
            return False
    return depth == 0


def _single_condition(text):
    """Whether a condition is one expression (not a comma-separated condition list)."""
    depth = 0
    for character in text:
        if character in "([":
            depth += 1
        elif character in ")]":
            depth -= 1
        elif character == "," and depth == 0:
            return False
    return True


def candidates(path, lines):
    """Every (line number, operator, new line) the operators offer for a file's lines."""
    found = []
    in_multiline = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.count('"""') % 2 == 1:
            in_multiline = not in_multiline
            continue
        if in_multiline or not stripped or stripped.startswith("//"):
            continue
        code = code_mask(line.split(" //")[0] if " //" in code_mask(line) else line)
        if stripped.startswith(("import ", "///")):
            continue
        for old, new in list(COMPARISONS.items()) + list(LOGIC.items()):
            start = code.find(old)
            while start != -1:
                kind = "logic" if old in LOGIC else "comparison"
                found.append((number, kind, line[:start] + new + line[start + len(old):]))
                start = code.find(old, start + 1)
        match = CONDITION.match(code)
        if match and not re.search(r"\b(let|var|case)\b", match.group(3)) and "{" not in match.group(3) \
                and _single_condition(match.group(3)):
            condition = line[match.start(3):match.end(3)]
            found.append((number, "negate", line[:match.start(3)] + "!(" + condition + ")" + line[match.end(3):]))
            if match.group(2) == "guard" and stripped.endswith("}"):
                found.append((number, "guard", ""))
        if not stripped.startswith(KEYWORDS) and not stripped.endswith(("{", "(", ",", "[", "in", "->")) and balanced(code) \
                and ("(" in code or " = " in code or "+=" in code or "-=" in code) and not re.match(r"^\s*\w+:\s", code):
            found.append((number, "delete", ""))
        for bracket in re.finditer(r"(?<=[\s(=,])\[([^\[\]]+)\]", code):
            body = bracket.group(1)
            if ":" in body or not balanced(body):
                continue
            elements = [part for part in body.split(",")]
            if len(elements) < 2 or any("(" in e and not balanced(e) for e in elements):
                continue
            original = line[bracket.start(1):bracket.end(1)].split(",")
            if len(original) != len(elements):
                continue
            for drop in range(len(original)):
                kept = ",".join(part for index, part in enumerate(original) if index != drop).strip()
                found.append((number, "element", line[:bracket.start(1)] + kept + line[bracket.end(1):]))
        for literal in INTEGER.finditer(code):
            value = int(literal.group(1))
            found.append((number, "constant", line[:literal.start(1)] + str(value + 1) + line[literal.end(1):]))
        for word, other in (("true", "false"), ("false", "true")):
            for hit in re.finditer(rf"\b{word}\b", code):
                found.append((number, "boolean", line[:hit.start()] + other + line[hit.end():]))
    return [(path, number, kind, new) for number, kind, new in found if new != lines[number - 1]]


def sample(count, seed):
    everything = []
    for path in FILES:
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            everything += candidates(path, handle.read().split("\n"))
    rng = random.Random(seed)
    return rng.sample(everything, min(count, len(everything))), len(everything)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40, help="how many mutants to run (default 40)")
    parser.add_argument("--seed", type=int, default=1, help="the sample's seed (default 1)")
    parser.add_argument("--list", action="store_true", help="only print the sample")
    arguments = parser.parse_args()
    mutants, total = sample(arguments.count, arguments.seed)
    print(f"{total} candidate mutants in {len(FILES)} files; sample of {len(mutants)} (seed {arguments.seed})")
    if arguments.list:
        for path, number, kind, new in mutants:
            print(f"{path}:{number} {kind}: {new.strip() or '(line deleted)'}")
        return 0
    code, output, _ = run(["swift", "build", "--build-tests"])
    if code != 0:
        print(output[-4000:])
        print("the unmutated tree does not build", file=sys.stderr)
        return 2
    rows = []
    for index, (path, number, kind, new) in enumerate(mutants, 1):
        full = os.path.join(ROOT, path)
        with open(full, encoding="utf-8") as handle:
            original = handle.read()
        lines = original.split("\n")
        old = lines[number - 1]
        lines[number - 1] = new
        label = f"{path}:{number} {kind}"
        print(f"[{index}/{len(mutants)}] {label}: ", end="", flush=True)
        try:
            with open(full, "w", encoding="utf-8") as handle:
                handle.write("\n".join(lines))
            code, output, _ = run(["swift", "build", "--build-tests"])
            if code != 0:
                rows.append((label, old, new, "does not compile", []))
                print("does not compile (not scored)")
                continue
            code, output, seconds = run(["swift", "test", "--skip-build", "--filter", FILES[path]])
            if code == 0:
                rows.append((label, old, new, "SURVIVED", []))
                print(f"SURVIVED ({seconds:.0f} s)")
            else:
                caught = failing_tests(output)
                rows.append((label, old, new, "killed", caught))
                print(f"killed in {seconds:.0f} s" + (f" by {caught[0]}" if caught else ""))
        finally:
            with open(full, "w", encoding="utf-8") as handle:
                handle.write(original)
    run(["swift", "build", "--build-tests"])
    scored = [row for row in rows if row[3] != "does not compile"]
    killed = [row for row in scored if row[3] == "killed"]
    lines = ["# make mutants-sample", "",
             f"seed {arguments.seed}: {len(killed)} of {len(scored)} compiled mutants killed "
             f"({len(rows) - len(scored)} did not compile); {total} candidates in all.", "",
             "| mutant | was | became | result | caught by |", "|---|---|---|---|---|"]
    for label, old, new, result, caught in rows:
        cell = lambda text: "`" + text.strip().replace("|", "\\|")[:100] + "`" if text.strip() else "(deleted)"
        lines.append(f"| {label} | {cell(old)} | {cell(new)} | {result} | {'; '.join(caught[:1])} |")
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    score = len(killed) / len(scored) if scored else 0
    print(f"\nscore: {len(killed)}/{len(scored)} killed ({score:.0%}); report: {os.path.relpath(REPORT, ROOT)}")
    for label, old, new, result, _ in rows:
        if result == "SURVIVED":
            print(f"  survivor {label}: {old.strip()}  →  {new.strip() or '(deleted)'}")
    return 0 if score >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
