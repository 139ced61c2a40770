"""The status page names a dataset's failed run from the stage index (each step's newest attempt and completion,
assets/stage_index.py): a backup run that failed (its SQLite file gone) shows as a failure naming the run,
beside the previous good backup, and the next good backup clears it. Real Dagster instance (ephemeral), real
SQLite backups to a local repository."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import LATE_ALLOW, LATE_TAG
from assets.reports import RUNBOOK_KEY, STATUS_KEY, gather_statuses
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.status import DatasetStatus
from tests.conftest import manifest_for

LATE = {LATE_TAG: LATE_ALLOW}
DAYS = ["2026-11-20", "2026-11-21", "2026-11-22"]


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def write_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("create table if not exists notes (id integer primary key, body text)")
        connection.executemany("insert into notes (body) values (?)", [(f"note {i}",) for i in range(50)])


def failed_runs(status: DatasetStatus) -> list[str]:
    """The status's failed-run lines ("<stage> run <id> failed <when>"; a single local repository also fails
    the 3-2-1 check, which is not a run)."""
    return [line for line in status.failures if " run " in line]


def test_a_failed_backup_run_is_named_on_the_status_page_until_a_backup_succeeds(
    tmp_path: Path, age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_database(tmp_path / "app.sqlite")
    write_database(tmp_path / "other.sqlite")
    manifest = manifest_for(
        tmp_path,
        age_keys,
        {
            "notes": {"kind": "sqlite", "source": {"path": "app.sqlite"}},
            "other": {"kind": "sqlite", "source": {"path": "other.sqlite"}},
        },
    )
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()

    def backup(day: str) -> dg.ExecuteInProcessResult:
        return defs.resolve_job_def("backup_daily").execute_in_process(
            partition_key=day, instance=instance, raise_on_error=False, tags=LATE
        )

    assert backup(DAYS[0]).success
    (tmp_path / "app.sqlite").rename(tmp_path / "moved.sqlite")
    failed = backup(DAYS[1])
    assert not failed.success

    statuses = {status.name: status for status in gather_statuses(instance, manifest)}
    assert statuses["notes"].partition == DAYS[0], "the previous good backup is still the newest"
    run = failed.run_id[:8]
    # the step that failed, not the steps after it that never started
    assert [line.split(" failed ")[0] for line in failed_runs(statuses["notes"])] == [f"backup run {run}"]
    assert failed_runs(statuses["other"]) == []
    assert statuses["other"].partition == DAYS[1]

    (tmp_path / "moved.sqlite").rename(tmp_path / "app.sqlite")
    assert backup(DAYS[2]).success
    statuses = {status.name: status for status in gather_statuses(instance, manifest)}
    assert failed_runs(statuses["notes"]) == [] and statuses["notes"].partition == DAYS[2]

    # the reports job records the dashboard on its asset, without a data-version tag per upstream
    reports = defs.resolve_job_def("reports").execute_in_process(instance=instance)
    [recorded] = reports.asset_materializations_for_node("backup_status")
    assert recorded.asset_key == STATUS_KEY and recorded.metadata["datasets"].value == 2
    event = instance.get_latest_materialization_event(STATUS_KEY)
    assert event is not None and event.asset_materialization is not None
    assert not [tag for tag in event.asset_materialization.tags or {} if tag.startswith("dagster/input")]
    assert instance.get_latest_materialization_event(RUNBOOK_KEY) is not None


def test_a_copy_asset_the_dataset_no_longer_has_does_not_speak_for_it(tmp_path: Path, age_keys: KeyPair) -> None:
    """A dataset that had a copy repository and has one repository now: its old copy's events (3 copies, a
    failing 3-2-1) are not its state, and no copy run could ever clear them. The status takes the backup's."""
    manifest = manifest_for(tmp_path, age_keys, {"notes": {"kind": "sqlite", "source": {"path": "app.sqlite"}}})
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            dg.AssetKey(["notes", "backup"]),
            partition="2026-11-21",
            metadata={"created_at": "2026-11-22T00:05:00+00:00", "copies": 1, "three_two_one": "pass"},
        )
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            dg.AssetKey(["notes", "copy"]),
            metadata={"copies": 3, "three_two_one": "missing 2 media: only one kind of storage"},
        )
    )
    (status,) = gather_statuses(instance, manifest)
    assert status.copies == 1
    assert status.three_two_one == "pass"
    assert not [line for line in status.failures if "3-2-1" in line or "three_two_one" in line], status.failures
