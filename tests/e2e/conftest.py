"""End-to-end tests run the CLIs as a user would: `dagster ...` and `backup-pipelines ...` in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import cli_folder

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def run(
    argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command with the project's venv first on PATH, in `cwd` (default: an empty folder, see cli_folder);
    return the completed process."""
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **env}
    return subprocess.run(
        argv, cwd=cwd or cli_folder(), env=environment, capture_output=True, text=True, timeout=timeout
    )


def dagster_environment(home: Path, manifest: Path, identity: str) -> dict[str, str]:
    """Make `home` a DAGSTER_HOME with the project's dagster.yaml; return the environment for the CLIs."""
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return {"BACKUP_MANIFEST": str(manifest), "DAGSTER_HOME": str(home), "BACKUP_AGE_IDENTITY": identity}


def job_execute(job: str, env: dict[str, str], partition: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `dagster job execute` of `job` (for `partition`, through the dagster/partition tag)."""
    tags = ["--tags", json.dumps({"dagster/partition": partition})] if partition else []
    return run(["dagster", "job", "execute", "-m", "backup_pipelines.definitions", "-j", job, *tags], env)


T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 2.0) -> T:
    """Call `probe` until it returns something other than None (or False); fail naming `what` at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
