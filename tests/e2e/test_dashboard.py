"""The status dashboard renders in a real headless Chromium; the runbook CLI reads the same instance."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.e2e.conftest import dagster_environment, job_execute, run

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_status_dashboard_renders_in_chromium_and_runbook_names_the_backup(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: scripts/setup.sh installs it")
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["reports_dir"] = str(tmp_path / "reports")
    write_manifest(tmp_path / "m.yaml", data)
    env = dagster_environment(tmp_path / "home", tmp_path / "m.yaml", age_keys.identity)
    for job, partition in (("protect_hourly", "2026-11-24-10:00"), ("reports", None)):
        result = job_execute(job, env, partition)
        assert result.returncode == 0, result.stderr[-3000:]
    page = tmp_path / "reports" / "backup_status.html"
    profile = tmp_path / "chromium-profile"
    dom = run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()], {}, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<p class="summary" id="summary">1 datasets, 0 stale.' in dom.stdout
    assert "<td>app_db</td>" in dom.stdout and dom.stdout.count("<svg") == 2  # age bar and size history
    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
    taken = run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1600,400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        {},
        timeout=120,
    )
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]

    runbook = run(["backup-pipelines", "runbook"], env)
    assert runbook.returncode == 0, runbook.stderr
    assert "## app_db" in runbook.stdout and "Last successful restore test: 20" in runbook.stdout
    assert "RTO target 30m; last measured restore" in runbook.stdout and "sha256sum -c -" in runbook.stdout
    assert (tmp_path / "reports" / "dr_runbook.md").read_text().startswith("# Disaster-recovery runbook")
