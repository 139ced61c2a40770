#!/usr/bin/env bash
# Regenerate constraints.txt from a fresh resolution of pyproject.toml (run after a deliberate upgrade,
# keeping the Dagster family in lockstep), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -e '.[dev]'
{
  echo "# Exact versions of every Python dependency, installed with: pip install -c constraints.txt -e '.[dev]'"
  echo "# The Dagster family moves in lockstep: dagster 1.13.27 with its 0.29.27 integrations."
  echo "# Regenerate after a deliberate upgrade: bash scripts/lock.sh"
  "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v '^backup-pipelines'
} > constraints.txt
rm -rf "$tmp"
echo "constraints.txt regenerated; now run: bash scripts/test.sh"
