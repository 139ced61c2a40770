#!/usr/bin/env bash
# Benchmarks against the raw tools (not part of the test suite):
#   PostgreSQL backup and restore test vs pg_dump|zstd|age (sizes in GB: --sizes 0.5,2),
#   file trees vs direct restic backup (1 GB), 1,000 watched datasets (sensor tick, status report), and
#   PostgreSQL cluster base backups and restores to a moment vs pgBackRest by hand (1.3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python benchmarks/bench_postgres.py "$@"
.venv/bin/python benchmarks/bench_files.py --size-gb 1
.venv/bin/python benchmarks/bench_monitoring.py 2>/dev/null | grep -v -E "^[0-9]{4}-"
.venv/bin/python benchmarks/bench_user_path.py --size-gb 1
.venv/bin/python benchmarks/bench_pitr.py --size 1.3 --rounds 3
