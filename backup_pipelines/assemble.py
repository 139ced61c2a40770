"""The assembly of the Definitions: assets, checks, jobs, schedules, sensors, resources of one manifest. The
code location (`definitions.py`) and the Dagster component (`component.py`) both build with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from assets.buckets import build_bucket_checks
from assets.datasets import build_dataset_assets
from assets.executor import backup_executor
from assets.failure_alerts import build_failure_sensor, code_location_runs
from assets.jobs import build_jobs
from assets.kubernetes import chosen_executor
from assets.monitoring import build_rpo_check, build_rpo_sensor
from assets.pitr import build_marker_sensor, clusters
from assets.report_job import build_reports_schedule, report_specs, reports_job
from assets.retention import RetentionResource, build_retention_asset, build_retention_job
from backup_pipelines.manifest import as_cron, load_manifest
from resources import AgeIdentityResource, ManifestResource, NotifierResource

# Dagster sets this while `dagster definitions validate` (and `dg check defs`) imports the code location.
VALIDATION_CLI_ENV = "DAGSTER_IS_DEFS_VALIDATION_CLI"


def build_definitions(manifest_path: str | Path | None = None, own_executor: bool = True) -> dg.Definitions:
    """Return the Definitions for the manifest at `manifest_path` (default: the configured manifest), with the
    code location's executor (`assets/executor.py`) unless `own_executor` is False (inside a project that
    chooses its own, see `component.py`)."""
    manifest = load_manifest(manifest_path)
    assets = [asset for name in manifest.active_datasets() for asset in build_dataset_assets(manifest, name)]
    assets += [build_retention_asset(manifest, name) for name in manifest.active_datasets()]
    jobs, schedules = build_jobs(manifest)
    bucket_specs, checks, bucket_jobs, bucket_schedules = build_bucket_checks(manifest)
    jobs += bucket_jobs
    schedules += bucket_schedules
    if manifest.active_datasets():
        rpo_check = build_rpo_check(manifest)
        checks.append(rpo_check)
        watch_job = dg.define_asset_job(
            "watch", selection=dg.AssetSelection.checks(*rpo_check.check_keys), description="Evaluate the RPO checks."
        )
        jobs.append(watch_job)
        schedules.append(
            dg.ScheduleDefinition(
                name="watch_schedule",
                job=watch_job,
                cron_schedule=as_cron(manifest.schedules.watch),
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
        retention_job, retention_schedule = build_retention_job(manifest)
        jobs.append(retention_job)
        schedules.append(retention_schedule)
    all_assets: list[Any] = [*assets, *bucket_specs, *report_specs(manifest)]
    # one failure sensor over every run of this code location (UI, schedules, backfills and CLI runs alike)
    runs = code_location_runs(manifest, [*jobs, reports_job], all_assets)
    sensors = [build_failure_sensor(runs)]
    if manifest.active_datasets():
        sensors.append(build_rpo_sensor(manifest, runs=runs))
    if clusters(manifest):
        sensors.append(build_marker_sensor(manifest))
    manifest_resource = ManifestResource(path=str(manifest.path))
    return dg.Definitions(
        executor=chosen_executor(backup_executor) if own_executor else None,
        assets=all_assets,
        asset_checks=checks,
        jobs=[*jobs, reports_job],
        schedules=[*schedules, build_reports_schedule(manifest)],
        sensors=sensors,
        resources={
            "manifest": manifest_resource,
            "age_identity": AgeIdentityResource(),
            "notifier": NotifierResource(manifest=manifest_resource),
            "retention": RetentionResource(),
        },
    )
