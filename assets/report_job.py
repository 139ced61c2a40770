"""The report assets and the `reports` job that refreshes them: the status dashboard and the DR runbook.

The reports are declared as asset specs with every asset they summarize as an upstream, so the graph shows what
feeds them, and are materialized by the ops of the `reports` job (its schedule, the UI's launchpad or `dagster
job execute -j reports`). They are not Dagster-executed assets on purpose: Dagster records the data version of
every upstream on each materialization of an executed asset (two tags per upstream) after reading each
upstream's newest event. At 10,000 datasets that is 40,000 upstreams: 61-67 s of reading per refresh and a
7.7 MB event, every 30 minutes.
"""

import time
from typing import Any

import dagster as dg

from assets.buckets import bucket_key
from assets.keys import DatasetKeys
from assets.metadata import timestamp_value
from assets.reports import (
    RUNBOOK_FILE,
    RUNBOOK_KEY,
    STATUS_KEY,
    chain_keys,
    frame_table,
    gather_buckets,
    gather_statuses,
    merge_restore_measurements,
    runbook_generated_at,
    write_report,
)
from backup_pipelines.manifest import Manifest, as_cron
from backup_pipelines.runbook import measured_from_repositories, render_runbook
from backup_pipelines.status import bucket_frame, render_html, state_counts, status_frame
from resources import ManifestResource

STATUS_ROWS = 200  # rows of the status table kept in the materialization, worst first (the dashboard has all)
REFRESHED_BY = " Refreshed by the `reports` job (every 30 minutes by default)."


def report_specs(manifest: Manifest) -> list[dg.AssetSpec]:
    """Return the report assets with the assets they summarize as upstreams: the dashboard reads every dataset's
    chain and every watched bucket, the runbook the restore tests."""
    chains = [key for name in manifest.active_datasets() for key in chain_keys(manifest, name)]
    return [
        dg.AssetSpec(
            STATUS_KEY,
            deps=[*chains, *[bucket_key(name) for name in manifest.watched_buckets()]],
            group_name="reports",
            kinds={"html"},
            description="Every dataset's freshness, verification, restore tests and size, and every watched "
            "bucket's checks, as tables and a dashboard." + REFRESHED_BY,
        ),
        dg.AssetSpec(
            RUNBOOK_KEY,
            deps=[DatasetKeys(name).restore_test for name in manifest.active_datasets()],
            group_name="reports",
            kinds={"markdown"},
            description="The disaster-recovery runbook: where backups are and how to restore each, with "
            "measurements." + REFRESHED_BY,
        ),
    ]


def status_table(frame: Any) -> dict[str, Any]:
    """The status table as materialization metadata: at most STATUS_ROWS rows, worst first (the frame's order),
    saying how many were left out; every row is in the dashboard file."""
    table = {"status": frame_table(frame.head(STATUS_ROWS), {"copies": "int"})}
    if len(frame) <= STATUS_ROWS:
        return table
    return {**table, "status_rows": f"the {STATUS_ROWS} worst of {len(frame)}; the dashboard lists every dataset"}


@dg.op(description="Write the status dashboard and record it as a materialization of reports/backup_status.")
def backup_status(context: dg.OpExecutionContext, manifest: ManifestResource) -> None:
    loaded = manifest.load()
    now = time.time()
    statuses = gather_statuses(context.instance, loaded)
    buckets = gather_buckets(context.instance, loaded)
    frame = status_frame(statuses, now)
    runbook_at = runbook_generated_at(loaded)
    path = write_report(loaded, "backup_status.html", render_html(statuses, now, buckets, runbook_at, frame))
    metadata: dict[str, Any] = {
        "datasets": len(statuses),
        **state_counts(frame),
        "dashboard": dg.MetadataValue.path(str(path)),
        **status_table(frame),
        "runbook_generated_at": timestamp_value(runbook_at) if runbook_at else dg.MetadataValue.text("never"),
    }
    if buckets:
        metadata["buckets_failing"] = sum(1 for bucket in buckets if bucket.failing)
        metadata["buckets"] = frame_table(bucket_frame(buckets), {})
    context.log_event(dg.AssetMaterialization(STATUS_KEY, metadata=metadata))


@dg.op(description="Write the DR runbook and record it as a materialization of reports/dr_runbook.")
def dr_runbook(context: dg.OpExecutionContext, manifest: ManifestResource) -> None:
    loaded = manifest.load()
    measured = merge_restore_measurements(context.instance, loaded, measured_from_repositories(loaded))
    now = time.time()
    text = render_runbook(loaded, measured, now)
    path = write_report(loaded, RUNBOOK_FILE, text)
    problems = [f"{name}: {problem}" for name, item in measured.items() for problem in item.problems]
    for problem in problems:  # an unreachable repository or a damaged sidecar: the runbook says so, per dataset
        context.log.warning(problem)
    metadata = {
        "runbook": dg.MetadataValue.path(str(path)),
        "generated_at": timestamp_value(now),
        "preview": dg.MetadataValue.md(text[:20_000]),
        "problems": dg.MetadataValue.md("\n".join(f"- {problem}" for problem in problems) or "none"),
    }
    context.log_event(dg.AssetMaterialization(RUNBOOK_KEY, metadata=metadata))


@dg.job(name="reports", description="Refresh the status dashboard and the DR runbook (reports/*).")
def reports_job() -> None:
    backup_status()
    dr_runbook()


def build_reports_schedule(manifest: Manifest) -> dg.ScheduleDefinition:
    """The reports job's schedule (`schedules.reports`, every 30 minutes by default)."""
    return dg.ScheduleDefinition(
        name="reports_schedule",
        job=reports_job,
        cron_schedule=as_cron(manifest.schedules.reports),
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
