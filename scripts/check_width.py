#!/usr/bin/env python3
"""No Swift line over the formatter's configured width (.swift-format's lineLength), in characters.

swift format breaks code but leaves long string literals and comments as they are; this names
each line it left over, so `make lint` fails on it. A long string breaks without changing its
value inside a multi-line literal: end the line with a backslash and continue on the next."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    with open(os.path.join(ROOT, ".swift-format"), encoding="utf-8") as handle:
        width = json.load(handle)["lineLength"]
    files = subprocess.check_output(["git", "ls-files", "*.swift"], cwd=ROOT, text=True).split()
    over = []
    for path in files:
        with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
            for number, line in enumerate(handle.read().split("\n"), 1):
                if len(line) > width:
                    over.append(f"{path}:{number}: {len(line)} characters (the limit is {width})")
    for line in over:
        print(line, file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
