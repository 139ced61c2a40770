"""End-to-end tests run the CLIs as a user would: `dagster ...` and `backup-pipelines ...` in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run a command with the project's venv first on PATH; return the completed process."""
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **env}
    return subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
