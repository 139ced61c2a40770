"""What the reports show: every dataset's status and every watched bucket's checks for the dashboard, the restore
measurements for the DR runbook (the report assets and their job: assets/report_job.py)."""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from assets.buckets import bucket_key
from assets.datasets import COMPLIANCE_CHECK
from assets.history import SIZE_CHECK, SIZE_FINDING, latest_backups, quarantine_decisions, quarantine_key
from assets.keys import DatasetKeys
from assets.metadata import table
from assets.stage_index import Attempt, StageRecord, failed_attempt, stage_states
from backup_pipelines.buckets import rules_for
from backup_pipelines.collector import paused_gc
from backup_pipelines.manifest import Manifest, schedule_period
from backup_pipelines.runbook import Measured
from backup_pipelines.status import BucketStatus, DatasetStatus, when

STATUS_KEY = dg.AssetKey(["reports", "backup_status"])
RUNBOOK_KEY = dg.AssetKey(["reports", "dr_runbook"])
RUNBOOK_FILE = "dr_runbook.md"


def failed_runs(
    instance: dg.DagsterInstance, done: Mapping[dg.AssetKey, StageRecord], attempts: Mapping[dg.AssetKey, Attempt]
) -> dict[dg.AssetKey, str]:
    """Return the assets whose newest attempt (see assets/stage_index.py) is a run that failed without completing
    them, each with a line naming the run and when it ended (one query)."""
    planned = {key: run_id for key, attempt in attempts.items() if (run_id := failed_attempt(attempt, done.get(key)))}
    if not planned:
        return {}
    runs = {
        r.dagster_run.run_id: r for r in instance.get_run_records(dg.RunsFilter(run_ids=list(set(planned.values()))))
    }
    failed = {}
    for key, run_id in planned.items():
        run = runs.get(run_id)
        if run is not None and run.dagster_run.status == dg.DagsterRunStatus.FAILURE:
            ended = run.end_time or run.update_timestamp.timestamp()
            failed[key] = f"{key.path[-1]} run {run_id[:8]} failed {when(ended)}"
    return failed


def failed_checks(backup: dict[str, Any] | None, copy: dict[str, Any] | None) -> list[str]:
    """Return the blocking checks that failed on a dataset's newest backup and copy, each with a line saying what
    was found, as the steps recorded them beside the check results: the backup's `size_check` verdict (ERROR
    fails) with its finding and, without copy repositories, its 3-2-1 summary; the copy's 3-2-1 summary.

    Read from the values the steps indexed (assets/stage_index.py) or their materializations: Dagster's check
    summaries cost one query (and on a PostgreSQL instance one connection) per check, 48 s for 1,000 datasets."""
    failed = []
    if backup and backup.get("size_check") == "ERROR":
        failed.append(f"{SIZE_CHECK} check failed: {backup.get(SIZE_FINDING) or 'no description'}")
    for recorded in (backup, copy):
        summary = str((recorded or {}).get("three_two_one", "pass"))
        if summary != "pass":
            failed.append(f"{COMPLIANCE_CHECK} check failed: {summary.removeprefix('missing ')}")
    return failed


def _size_history(metadata: dict[str, Any]) -> list[tuple[float, int]]:
    """The recent stored sizes a backup's metadata carries: the `recent_sizes` pairs, or a `size_history`
    table (taken_at, bytes_stored)."""
    if "size_history" in metadata:
        return [
            (datetime.fromisoformat(str(row.data["taken_at"])).timestamp(), int(row.data["bytes_stored"]))
            for row in metadata["size_history"].records
        ]
    return [(float(at), int(size)) for at, size in metadata.get("recent_sizes", [])]


def chain_keys(manifest: Manifest, name: str) -> list[dg.AssetKey]:
    """Return the asset keys of dataset `name`'s chain as the manifest defines it now: backup, copy (only with
    copy repositories), verify, restore test."""
    keys = DatasetKeys(name)
    copies = [keys.copy] if manifest.dataset(name).has_copies else []
    return [keys.backup, *copies, keys.verify, keys.restore_test]


@paused_gc()
def gather_statuses(instance: dg.DagsterInstance, manifest: Manifest) -> list[DatasetStatus]:
    """Return every active dataset's status in a few batched reads: each stage's newest completion and newest
    attempt from the stage index (the event log for stages it does not know), the quarantine decisions, and the
    runs that failed a stage, with the blocking checks that failed on the newest backup and copy."""
    active = manifest.active_datasets()
    names = list(active)
    # only the assets each dataset has now: the events of a copy asset a dataset had before the manifest changed
    # (a failed copy, a failing 3-2-1) are not its state, and nothing could ever clear them
    keys_now = [key for name in names for key in chain_keys(manifest, name)]
    done, attempts, values = stage_states(instance, keys_now, [quarantine_key(name) for name in names])
    backups = latest_backups(instance, names, done, quarantine_decisions(values, names))
    runs_failed = failed_runs(instance, done, attempts)
    statuses = []
    drill_every = schedule_period(manifest.schedules.drills).total_seconds()
    for name, dataset in active.items():
        keys = DatasetKeys(name)
        backup = backups.get(name)
        restore = done.get(keys.restore_test)
        verified = done.get(keys.verify)
        copy_metadata = done[keys.copy].metadata if keys.copy in done else {}
        newest = done.get(keys.backup)
        failures = [runs_failed[key] for key in (keys.backup, keys.copy, keys.verify) if key in runs_failed]
        failures += failed_checks(newest.metadata if newest else None, copy_metadata)
        both = {**backup.metadata, **copy_metadata} if backup else {}
        statuses.append(
            DatasetStatus(
                name=name,
                kind=dataset.kind,
                schedule=dataset.schedule,
                rpo_seconds=dataset.rpo.total_seconds(),
                rto_seconds=dataset.rto.total_seconds(),
                last_backup_at=backup.created_at if backup else None,
                partition=backup.partition if backup else None,
                bytes_stored=backup.metadata.get("bytes_stored") if backup else None,
                bytes_raw=backup.metadata.get("bytes_raw") if backup else None,
                copies=int(both.get("copies", 0)),
                three_two_one=str(both.get("three_two_one", "-")),
                location=str(backup.metadata.get("location", "")) if backup else "",
                last_verified_at=verified.at if verified else None,
                last_restore_test_at=restore.at if restore else None,
                measured_rto_seconds=float(restore.metadata["measured_rto_seconds"]) if restore else None,
                size_history=_size_history(backup.metadata) if backup else [],
                failures=tuple(failures),
                restore_failure=runs_failed.get(keys.restore_test),
                restore_tests_enabled=dataset.restore_test.enabled,
                drill_every_seconds=drill_every,
            )
        )
    return statuses


def gather_buckets(instance: dg.DagsterInstance, manifest: Manifest) -> list[BucketStatus]:
    """Return every watched bucket's latest check results from the event log."""
    buckets = []
    for name, dataset in manifest.watched_buckets().items():
        rules: dict[str, tuple[bool, str] | None] = {}
        checked_at = None
        for rule in rules_for(dataset):
            record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(bucket_key(name), rule))
            event = record.event if record is not None else None
            evaluation = event.dagster_event.asset_check_evaluation_data if event and event.dagster_event else None
            rules[rule] = None if evaluation is None else (evaluation.passed, evaluation.description or "")
            if event is not None and evaluation is not None:
                checked_at = max(checked_at or 0.0, event.timestamp)
        buckets.append(BucketStatus(name, dataset.source.bucket, dataset.source.region, rules, checked_at))
    return buckets


def merge_restore_measurements(
    instance: dg.DagsterInstance, manifest: Manifest, measured: dict[str, Measured]
) -> dict[str, Measured]:
    """Return `measured` with each dataset's last restore test time and measured RTO (from the stage index, or
    the event log for datasets it does not know)."""
    names = list(manifest.active_datasets())
    done, _, _ = stage_states(instance, [DatasetKeys(name).restore_test for name in names])
    result = dict(measured)
    for name in names:
        entry = done.get(DatasetKeys(name).restore_test)
        if entry is not None:
            base = result.get(name, Measured())
            result[name] = replace(
                base,
                last_restore_test_at=entry.at,
                measured_rto_seconds=float(entry.metadata.get("measured_rto_seconds", 0.0)),
            )
    return result


def add_restore_measurements(manifest: Manifest, measured: dict[str, Measured]) -> dict[str, Measured]:
    """`merge_restore_measurements` on the instance of $DAGSTER_HOME (for the CLI)."""
    return merge_restore_measurements(dg.DagsterInstance.get(), manifest, measured)


def write_report(manifest: Manifest, filename: str, text: str) -> Path:
    """Write a report into the manifest's reports folder (atomically, so readers never see half a file)."""
    folder = manifest.resolve_path(manifest.reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path


def frame_table(frame: Any, types: dict[str, str]) -> dg.MetadataValue:
    """Return a pandas frame as a Dagster table: every column text unless `types` names its type."""
    columns = {str(column): types.get(str(column), "string") for column in frame.columns}
    rows = [
        {column: value if columns[column] != "string" else str(value) for column, value in row.items()}
        for row in frame.to_dict("records")
    ]
    return table(columns, rows)


def runbook_generated_at(manifest: Manifest) -> float | None:
    """Return when the DR runbook in the reports folder was last written (None if it never was)."""
    path = manifest.resolve_path(manifest.reports_dir) / RUNBOOK_FILE
    return path.stat().st_mtime if path.exists() else None
