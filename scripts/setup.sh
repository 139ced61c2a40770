#!/usr/bin/env bash
# Install everything backup-pipelines needs on a Debian-like machine: the system tools (PostgreSQL and MariaDB
# servers and clients, age, zstd, restic, pgBackRest, mariabackup, chromium for the dashboard test) and a Python virtual environment (.venv) pinned by constraints.txt.
# Idempotent: a second run installs nothing. Needs root or sudo for the system packages.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

bash scripts/install_tools.sh  # the system tools (shared with the Dockerfile's image)
need_apt=()
python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
PYTHON=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null && python_ok "$candidate"; then PYTHON="$candidate"; break; fi
done
[ -n "$PYTHON" ] || need_apt+=(python3 python3-venv python3-pip)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Python: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if [ -z "$PYTHON" ]; then PYTHON=python3; fi

stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]' 2>&1 | grep -v -E 'is ignored|^\s*$' || true
  .venv/bin/python -c 'import backup_pipelines, dagster, pyrage, psycopg'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The example manifest encrypts to the demo's age key pair (.local/keys, git-ignored) and the manifest refuses a
# missing recipients file: make the pair if there is none, so the code location loads on a fresh clone.
if [ ! -f .local/keys/age-identity.txt ]; then
  .venv/bin/python - <<'PY'
from pathlib import Path

from backup_pipelines.crypto import generate_key_pair

keys = Path(".local/keys")
keys.mkdir(parents=True, exist_ok=True)
pair = generate_key_pair()
identity = keys / "age-identity.txt"
identity.write_text(pair.identity_file_text())
identity.chmod(0o600)
(keys / "age-recipients.txt").write_text(pair.recipient + "\n")
print(f"setup: generated the demo's age key pair in {keys}")
PY
fi
# Byte-compile the project (only what changed since the last time): where PYTHONDONTWRITEBYTECODE is set (the
# image sets it, and so did the machine this was measured on), Python compiles every module again in every CLI and
# step process: 0.3 s of the 4 s `dagster definitions validate` (median of 6 runs).
.venv/bin/python -m compileall -q backup_pipelines assets resources
echo "setup: ready ($(.venv/bin/dagster --version 2>/dev/null | head -1), $(zstd --version | head -1 | cut -c1-40), age $(age --version))"
