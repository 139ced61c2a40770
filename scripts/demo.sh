#!/usr/bin/env bash
# The main job on the embedded default: install what is missing, start a throw-away PostgreSQL with a sample
# database, then back up, verify and restore-test every example dataset, and print where each backup lives.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
