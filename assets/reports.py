"""Report assets: the backup status dashboard and the DR runbook, refreshed on a schedule."""

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg

from assets.buckets import bucket_key
from assets.history import latest_backups
from assets.keys import DatasetKeys
from backup_pipelines.buckets import rules_for
from backup_pipelines.manifest import Manifest
from backup_pipelines.runbook import Measured, measured_from_repositories, render_runbook
from backup_pipelines.status import BucketStatus, DatasetStatus, bucket_frame, render_html, status_frame
from resources import ManifestResource

STATUS_KEY = dg.AssetKey(["reports", "backup_status"])
RUNBOOK_KEY = dg.AssetKey(["reports", "dr_runbook"])


def _latest_metadata(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey]
) -> dict[dg.AssetKey, tuple[float, dict[str, Any]]]:
    found = {}
    for key, event in instance.get_latest_materialization_events(keys).items():
        if event is not None and event.asset_materialization is not None:
            found[key] = (event.timestamp, {k: v.value for k, v in event.asset_materialization.metadata.items()})
    return found


def gather_statuses(instance: dg.DagsterInstance, manifest: Manifest) -> list[DatasetStatus]:
    """Return every active dataset's status from the event log in three batched queries: the newest backup
    (whose metadata carries its recent sizes), verification and restore test of every dataset."""
    names = list(manifest.active_datasets())
    backups = latest_backups(instance, names)
    verified = _latest_metadata(instance, [DatasetKeys(name).verify for name in names])
    restored = _latest_metadata(instance, [DatasetKeys(name).restore_test for name in names])
    copied = _latest_metadata(instance, [DatasetKeys(name).copy for name in names])
    statuses = []
    for name, dataset in manifest.active_datasets().items():
        keys = DatasetKeys(name)
        backup = backups.get(name)
        restore = restored.get(keys.restore_test)
        copy_metadata = copied[keys.copy][1] if keys.copy in copied else {}
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
                copies=int({**backup.metadata, **copy_metadata}.get("copies", 0)) if backup else 0,
                three_two_one=str({**backup.metadata, **copy_metadata}.get("three_two_one", "-")) if backup else "-",
                location=str(backup.metadata.get("location", "")) if backup else "",
                last_verified_at=verified[keys.verify][0] if keys.verify in verified else None,
                last_restore_test_at=restore[0] if restore else None,
                measured_rto_seconds=float(restore[1]["measured_rto_seconds"]) if restore else None,
                size_history=[(float(at), int(size)) for at, size in backup.metadata.get("recent_sizes", [])]
                if backup
                else [],
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
    """Return `measured` with each dataset's last restore test time and measured RTO from the event log."""
    restored = _latest_metadata(instance, [DatasetKeys(name).restore_test for name in manifest.active_datasets()])
    result = dict(measured)
    for name in manifest.active_datasets():
        entry = restored.get(DatasetKeys(name).restore_test)
        if entry is not None:
            base = result.get(name, Measured())
            result[name] = replace(
                base,
                last_restore_test_at=entry[0],
                measured_rto_seconds=float(entry[1].get("measured_rto_seconds", 0.0)),
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


def markdown_table(frame: Any) -> str:
    """Return a pandas frame as a Markdown table."""
    if frame.empty:
        return "no datasets"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, *rows])


@dg.asset(
    key=STATUS_KEY,
    group_name="reports",
    kinds={"html"},
    description="Every dataset's freshness, verification, restore tests and size, and every watched bucket's "
    "checks, as tables and a dashboard.",
)
def backup_status(context: dg.AssetExecutionContext, manifest: ManifestResource) -> dg.MaterializeResult:
    loaded = manifest.load()
    now = time.time()
    statuses = gather_statuses(context.instance, loaded)
    buckets = gather_buckets(context.instance, loaded)
    frame = status_frame(statuses, now)
    path = write_report(loaded, "backup_status.html", render_html(statuses, now, buckets))
    stale = int((frame["status"] == "STALE").sum()) if not frame.empty else 0
    metadata: dict[str, Any] = {
        "datasets": len(statuses),
        "stale": stale,
        "dashboard": dg.MetadataValue.path(str(path)),
        "status": dg.MetadataValue.md(markdown_table(frame)),
    }
    if buckets:
        metadata["buckets_failing"] = sum(1 for bucket in buckets if bucket.failing)
        metadata["buckets"] = dg.MetadataValue.md(markdown_table(bucket_frame(buckets)))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=RUNBOOK_KEY,
    group_name="reports",
    kinds={"markdown"},
    description="The disaster-recovery runbook: where backups are and how to restore each, with measurements.",
)
def dr_runbook(context: dg.AssetExecutionContext, manifest: ManifestResource) -> dg.MaterializeResult:
    loaded = manifest.load()
    measured = merge_restore_measurements(context.instance, loaded, measured_from_repositories(loaded))
    text = render_runbook(loaded, measured, time.time())
    path = write_report(loaded, "dr_runbook.md", text)
    problems = [f"{name}: {problem}" for name, item in measured.items() for problem in item.problems]
    for problem in problems:  # an unreachable repository or a damaged sidecar: the runbook says so, per dataset
        context.log.warning(problem)
    return dg.MaterializeResult(
        metadata={
            "runbook": dg.MetadataValue.path(str(path)),
            "preview": dg.MetadataValue.md(text[:20_000]),
            "problems": dg.MetadataValue.json(problems),
        }
    )


reports_job = dg.define_asset_job(
    "reports",
    selection=dg.AssetSelection.assets(STATUS_KEY, RUNBOOK_KEY),
    description="Refresh the status dashboard and the DR runbook.",
)
reports_schedule = dg.ScheduleDefinition(
    name="reports_schedule",
    job=reports_job,
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
