#!/usr/bin/env bash
# Graft's benchmark suite: `make bench` builds release and runs this.
#   benchmarks/run.sh [--size-mib N] [--runs N] [--baseline OTHER_GRAFT]
# Results (medians and ratios) print as Markdown and land in benchmarks/out/ (import_export.md,
# adapters.md, exposure.md, signing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/import_export.py --graft .build/release/graft --open-bench .build/release/graft-open-bench "$@"
# Adapter students: bytes stored and sent, merged export against export (benchmarks/adapters.py).
.venv/bin/python benchmarks/adapters.py --graft .build/release/graft
# Exposure's drift against numpy on the same two checkpoints (benchmarks/exposure.py).
.venv/bin/python benchmarks/exposure.py --graft .build/release/graft
# Signing a 2 GiB sharded directory and verifying it, against one SHA-256 pass and model_signing.
exec .venv/bin/python benchmarks/signing.py --graft .build/release/graft
