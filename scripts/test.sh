#!/usr/bin/env bash
# The whole test suite: install what is missing, then run unit, integration and end-to-end tests. The test
# fixtures start their own PostgreSQL server and S3 endpoint on 127.0.0.1 and stop them at the end.
# Two worker processes (pytest-xdist) share the test files, each with its own servers: much of the suite waits
# on subprocesses and servers (on 2 cores: 24 min 50 s in one process, 12 min in two). TEST_WORKERS=0: one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest --numprocesses="${TEST_WORKERS:-2}" --dist=loadfile "$@"
