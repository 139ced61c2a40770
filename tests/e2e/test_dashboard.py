"""The status dashboard in a real headless Chromium at 1280x800: it fits without horizontal scrolling, shows every
state with its reason, and the reports job writes it (and the runbook) from a real Dagster instance.

Screenshots are kept in reports/test-artifacts/ (git-ignored; override with $DASHBOARD_ARTIFACTS), printed
by the tests."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.sandbox import PostgresSandbox
from backup_pipelines.status import BucketStatus, render_html
from tests.conftest import manifest_dict, newest_hour, write_manifest
from tests.e2e.conftest import ROOT, dagster_environment, job_execute, run
from tests.unit.test_reports import NOW, every_state

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
WIDTH, HEIGHT = 1280, 800
# Appended to a copy of the page (the dashboard itself has no JavaScript): writes the measurements into the DOM.
MEASURE = """<script>
window.addEventListener('load', () => {
  const root = document.documentElement;
  const chart = [...document.querySelectorAll('svg.size')].map(s => s.getBoundingClientRect().right);
  const out = document.createElement('pre');
  out.id = 'measured';
  out.textContent = `scrollWidth=${root.scrollWidth} clientWidth=${root.clientWidth} `
    + `chartRight=${Math.max(0, ...chart)}`;
  document.body.appendChild(out);
});
</script>"""


def artifacts() -> Path:
    folder = Path(os.environ.get("DASHBOARD_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed: scripts/setup.sh installs it")
    return found


def measure(page: Path, profile: Path) -> dict[str, float]:
    """Load `page` in Chromium at 1280x800 and return its scrollWidth, clientWidth and the right edge of the
    rightmost size chart (px)."""
    probe = page.with_name(page.stem + ".measure.html")
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = run(
        [
            chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri(),
        ],
        {},
        timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r"scrollWidth=(\d+) clientWidth=(\d+) chartRight=([\d.]+)", dom.stdout)
    assert found, dom.stdout[-2000:]
    return dict(zip(("scrollWidth", "clientWidth", "chartRight"), map(float, found.groups()), strict=True))


def screenshot(page: Path, shot: Path, profile: Path) -> Path:
    taken = run(
        [
            chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={shot}", page.as_uri(),
        ],
        {},
        timeout=120,
    )  # fmt: skip
    assert taken.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    print(f"dashboard screenshot: {shot}")
    return shot


def test_dashboard_with_every_state_fits_1280_px_and_says_why(tmp_path: Path) -> None:
    buckets = [
        BucketStatus(
            "uploads",
            "customer-uploads",
            "eu-west-1",
            {"versioning_enabled": (False, "versioning is suspended"), "replication_enabled": None},
            NOW,
        )
    ]
    page = artifacts() / "dashboard_states.html"
    page.write_text(render_html(every_state(), NOW, buckets, runbook_generated_at=NOW - 1200))
    measured = measure(page, tmp_path / "profile")
    assert measured["scrollWidth"] <= WIDTH, measured  # no horizontal scrolling
    assert measured["chartRight"] <= WIDTH, measured  # the size charts are on screen
    dom = page.read_text()
    for name, (state, reason) in {item.name: item.state(NOW) for item in every_state()}.items():
        row = re.search(rf'<tr class="{state}" id="row-{name}">(.*?)</tr>', dom, re.S)
        assert row and f'<span class="badge {state}">{state}</span>' in row.group(1), name
        assert reason.split(";")[0] in row.group(1), name
    screenshot(page, artifacts() / "dashboard_states_1280x800.png", tmp_path / "profile")


def test_reports_job_writes_a_dashboard_that_fits_and_a_dated_runbook(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["reports_dir"] = str(tmp_path / "reports")
    write_manifest(tmp_path / "m.yaml", data)
    env = dagster_environment(tmp_path / "home", tmp_path / "m.yaml", age_keys.identity)
    for job, partition_key in (("protect_hourly", newest_hour()), ("reports", None), ("reports", None)):
        result = job_execute(job, env, partition_key)
        assert result.returncode == 0, result.stderr[-3000:]
    page = tmp_path / "reports" / "backup_status.html"
    html = page.read_text()
    assert '<p class="summary" id="summary">1 datasets:' in html and 'id="row-app_db"' in html
    assert "DR runbook generated" in html and "never generated" not in html  # the second run saw the first's
    assert html.count('<svg class="age"') == 1 and html.count('<svg class="size"') == 1
    measured = measure(page, tmp_path / "profile")
    assert measured["scrollWidth"] <= WIDTH, measured
    screenshot(page, artifacts() / "dashboard_reports_job_1280x800.png", tmp_path / "profile")

    runbook = run(["backup-pipelines", "runbook"], env)
    assert runbook.returncode == 0, runbook.stderr
    assert "## app_db" in runbook.stdout and "Last successful restore test: 20" in runbook.stdout
    assert "RTO target 30m; last measured restore" in runbook.stdout and "sha256sum -c -" in runbook.stdout
    written = (tmp_path / "reports" / "dr_runbook.md").read_text()
    assert written.startswith("# Disaster-recovery runbook\n\n> **Generated 20")
