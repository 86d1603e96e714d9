# Graft: `make demo` runs the quick-start demo, `make test` the whole suite.
# Both install what they need when it is missing (Debian packages, a Python venv).

SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
APT_PACKAGES := libsqlite3-dev sqlite3 python3-venv libopenblas-dev zlib1g-dev libzstd-dev dataset-fashion-mnist openssl curl chromium chromium-driver postgresql
SWIFT_BUILD_FLAGS ?=

.PHONY: all build demo test lint format mutants-sample screenshots system-deps python-deps fuzz-api bench bench-serve bench-s3 bench-copy bench-compress bench-pg-lineage bench-client bench-scale bench-scale-backends bench-train results results-vulnerability fuzz soak mutants clean

all: build

system-deps:
	@missing=""; \
	for package in $(APT_PACKAGES); do dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: scripts/requirements-test.txt clients/python/pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
	touch $@

python-deps: $(VENV)/.installed

build: system-deps
	swift build $(SWIFT_BUILD_FLAGS)

demo: system-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	.build/release/graft demo

# The formatter's rules (.swift-format) over every Swift file; `make format` applies them.
SWIFT_SOURCES := Sources Tests benchmarks Plugins fuzz Package.swift
lint:
	swift format lint --strict --recursive $(SWIFT_SOURCES)
	python3 scripts/check_width.py

format:
	swift format format --in-place --recursive $(SWIFT_SOURCES)

test: system-deps python-deps lint
	swift build --build-tests $(SWIFT_BUILD_FLAGS)
	GRAFT_TEST_DEADLINE=900 GRAFT_TEST_PYTHON=$(abspath $(PYTHON)) swift test --skip-build --parallel --num-workers 2
	GRAFT_BINARY=$(abspath .build/debug/graft) $(PYTHON) -m pytest -q -p no:cacheprovider clients/python/tests
	GRAFT_BINARY=$(abspath .build/debug/graft) $(PYTHON) -m pytest -q -p no:cacheprovider tests/web
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/scripts

# The web view's screenshots in docs/screenshots/ (README, docs/WEB.md), taken by the browser tests.
screenshots: system-deps python-deps
	swift build --product graft $(SWIFT_BUILD_FLAGS)
	GRAFT_SCREENSHOTS=$(abspath docs/screenshots) GRAFT_BINARY=$(abspath .build/debug/graft) $(PYTHON) -m pytest -q -p no:cacheprovider tests/web -k console

# BENCH_ARGS="--size-mib 512 --runs 5 --baseline PATH/TO/OLDER/graft" compares builds side by side.
BENCH_ARGS ?=
bench: system-deps python-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	swift build -c release --product graft-open-bench $(SWIFT_BUILD_FLAGS)
	benchmarks/run.sh $(BENCH_ARGS)

# graft serve on loopback beside the local CLI: remote vs local import, bytes a student commit
# sends, 8 writers x 100 commits under 32 readers, server RSS through a 1 GiB upload, the web
# view's pages on the tenth-size scale registry (SERVE_BENCH_ARGS="--only pages --pages-registry R" reuses one).
# SERVE_BENCH_ARGS="--size-mib 128 --runs 1 --commits 10 --only load" for a quick look.
SERVE_BENCH_ARGS ?=
bench-serve: system-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	swift build -c release --product graft-scale-bench $(SWIFT_BUILD_FLAGS)
	python3 benchmarks/serve.py --graft .build/release/graft $(SERVE_BENCH_ARGS)

# graft copy (issue 28): the demo registry and a 2 GiB family copied to a fresh local registry
# against cp -r + sync of the directory, a re-run with nothing new, and the bytes a copy to a
# graft serve puts on the wire against the unique blob bytes. COPY_BENCH_ARGS="--runs 5 --quick".
COPY_BENCH_ARGS ?=
bench-copy: system-deps python-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	$(PYTHON) benchmarks/copy.py --graft .build/release/graft $(COPY_BENCH_ARGS)

# Stored encodings (issue 27): graft compact's ratios against zipnn and zstd on the same tensors
# (round trips checked), one-core codec speeds, compact/export of a 512 MiB checkpoint against
# cp + sync, the demo registry before/after. COMPRESS_BENCH_ARGS="--runs 5 --steps 200".
COMPRESS_BENCH_ARGS ?=
bench-compress: system-deps python-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	swift build -c release --product graft-codec-bench $(SWIFT_BUILD_FLAGS)
	$(PYTHON) benchmarks/compress.py --graft .build/release/graft --codec-bench .build/release/graft-codec-bench $(COMPRESS_BENCH_ARGS)

# Blob throughput to an S3-compatible endpoint (moto's server on loopback) vs the local blob
# store: base add and export, side by side. S3_BENCH_ARGS="--size-mib 512 --tensor-mib 128 --runs 5".
S3_BENCH_ARGS ?=
bench-s3: system-deps python-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	$(PYTHON) benchmarks/s3.py --graft .build/release/graft $(S3_BENCH_ARGS)

# How PostgreSQL should keep lineage (issue 14): a full-size tree in a throwaway cluster, stored
# as a text path, an id array (GIN), ltree (GiST) and bare edges (recursive CTE), timed side by side.
bench-pg-lineage: system-deps
	python3 benchmarks/pg_lineage.py

# The Python client: a student of a 22M-parameter base committed from a state_dict, bytes and
# time against safetensors.save_file + a local graft checkpoint add. CLIENT_BENCH_ARGS="--runs N".
CLIENT_BENCH_ARGS ?=
bench-client: system-deps python-deps
	swift build -c release --product graft $(SWIFT_BUILD_FLAGS)
	$(PYTHON) benchmarks/client.py --graft .build/release/graft $(CLIENT_BENCH_ARGS)

# The training engine: GEMM against OpenBLAS's own, samples/s per transfer mode.
bench-train: system-deps
	swift build -c release --product graft-train-bench $(SWIFT_BUILD_FLAGS)
	.build/release/graft-train-bench

# The transferability experiment (docs/RESULTS.md, docs/results.svg); about half an hour on 2 cores.
RESULTS_ARGS ?=
results: system-deps
	swift build -c release --product graft-results $(SWIFT_BUILD_FLAGS)
	.build/release/graft-results --registry results-registry $(RESULTS_ARGS)

# Students inherit their teacher's vulnerabilities (issue 26): the mimicry attack on every transfer
# mode, with each student's exposure and drift; writes docs/vulnerability.json and a section of
# docs/RESULTS.md (about 20 minutes on 2 cores). QUICK=1 (1 seed, 50 pairs, 50 steps, under 5 minutes)
# OUT=FILE writes the JSON to FILE and leaves docs/RESULTS.md alone.
QUICK ?=
OUT ?=
results-vulnerability: system-deps
	swift build -c release --product graft-vulnerability $(SWIFT_BUILD_FLAGS)
	.build/release/graft-vulnerability --registry vulnerability-registry $(if $(QUICK),--quick) \
		$(if $(OUT),--json $(OUT) --no-page) $(VULNERABILITY_ARGS)

# The crash, concurrency and open-race harnesses at soak length (the test suite runs 80 crash
# trials and 25 race rounds).
SOAK_TRIALS ?= 1000
SOAK_RACE_ROUNDS ?= 500
soak: system-deps python-deps
	swift build --build-tests $(SWIFT_BUILD_FLAGS)
	GRAFT_CRASH_TRIALS=$(SOAK_TRIALS) GRAFT_STRESS_COMMITS=200 GRAFT_RACE_ROUNDS=$(SOAK_RACE_ROUNDS) \
		swift test --skip-build --filter 'HarnessTests|OpenRaceTests'

# Mutation testing: each change in mutants/mutations.toml must make a test fail (about half an
# hour on 2 cores). MUTANTS_ARGS="--only ID ..." or "--full" (each against the whole suite).
MUTANTS_ARGS ?=
mutants: system-deps python-deps
	GRAFT_TEST_PYTHON=$(abspath $(PYTHON)) python3 scripts/mutants.py $(MUTANTS_ARGS)

# Generated mutants (scripts/mutants_sample.py): operators applied to sampled lines of the rule-bearing
# files (GraftCore's policies, the server's routes and authorisation), each built and run against
# that file's tests; the score and the survivors in .build/mutants-sample-report.md. Each mutant
# costs a build and its tests (about 2-4 minutes here). N=40 SEED=1 by default.
N ?= 40
SEED ?= 1
mutants-sample: system-deps python-deps
	GRAFT_TEST_PYTHON=$(abspath $(PYTHON)) python3 scripts/mutants_sample.py --count $(N) --seed $(SEED)

# schemathesis against a real graft serve from docs/openapi.json: no 5xx, no crash, responses
# as documented, nothing changed outside the registry. FUZZ_API_EXAMPLES per operation.
FUZZ_API_EXAMPLES ?= 200
$(VENV)/.fuzz-installed: scripts/requirements-fuzz.txt $(VENV)/.installed
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r scripts/requirements-fuzz.txt
	touch $@

fuzz-api: system-deps $(VENV)/.fuzz-installed
	swift build --product graft $(SWIFT_BUILD_FLAGS)
	scripts/fuzz_api.sh .build/debug/graft $(PYTHON) $(FUZZ_API_EXAMPLES)

# libFuzzer on the safetensors parser, with AddressSanitizer; new inputs land in .build/fuzz-corpus.
SECONDS ?= 60
fuzz:
	mkdir -p .build/fuzz-corpus
	swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name SafeTensors \
		Sources/SafeTensors/*.swift fuzz/SafeTensorsFuzz.swift -o .build/fuzz-safetensors 2>&1 | grep -v "Cannot export local symbol" || true
	.build/fuzz-safetensors -max_total_time=$(SECONDS) -max_len=4096 -print_final_stats=1 .build/fuzz-corpus fuzz/corpus

# Scale: BENCH_SCALE="--bases 100 --students 100000 --checkpoints 10 --metrics 10 --chain 1000 --big-family 10000"
# for the full size (about an hour to build on 2 cores).
BENCH_SCALE ?= --bases 10 --students 2000 --checkpoints 5 --metrics 10 --chain 200
bench-scale: system-deps
	swift build -c release --product graft-scale-bench $(SWIFT_BUILD_FLAGS)
	.build/release/graft-scale-bench $(BENCH_SCALE)

# The same registry on SQLite and on PostgreSQL (a throwaway cluster), side by side (issue 14).
# BENCH_SCALE as above; the tenth-size registry: BENCH_SCALE="--bases 10 --students 10000 --checkpoints 5 --metrics 10 --chain 100 --big-family 1200"
bench-scale-backends: system-deps
	swift build -c release --product graft-scale-bench $(SWIFT_BUILD_FLAGS)
	python3 benchmarks/scale_backends.py --args "$(BENCH_SCALE)"

clean:
	rm -rf .build $(VENV)
