#!/usr/bin/env bash
# Benchmarks against the raw tools (not part of the test suite): bash scripts/bench.sh [--sizes 0.5,2]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python benchmarks/bench_postgres.py "$@"
