#!/usr/bin/env bash
# The whole test suite: install what is missing, then run unit, integration and end-to-end tests. The test
# fixtures start their own PostgreSQL server and S3 endpoint on 127.0.0.1 and stop them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
