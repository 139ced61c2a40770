"""Jobs and schedules per cadence: datasets sharing a partitioning share their jobs.

For each cadence (hourly, daily, each cron):
- `backup_<cadence>`: back up and verify, scheduled right after each partition's window closes;
- `restore_drill_<cadence>`: real restore tests of the newest complete partition, on the drill schedule;
- `protect_<cadence>`: backup, verify and restore test in one run (the demo, CI, and manual drills).
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.datasets import COMPLIANCE_CHECK, RTO_CHECK
from assets.history import SIZE_CHECK
from assets.keys import DatasetKeys
from assets.partitions import cadence_name, partitions_for
from backup_pipelines.manifest import Manifest, as_cron

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


@dataclass
class Cadence:
    """The datasets of one partitioning, and its name."""

    name: str
    partitions_def: dg.PartitionsDefinition
    datasets: list[str] = field(default_factory=list)


def cadences(manifest: Manifest) -> list[Cadence]:
    """Group the manifest's active datasets by partitioning, in manifest order."""
    grouped: dict[str, Cadence] = {}
    for name, dataset in manifest.active_datasets().items():
        start = manifest.partition_start_for(name)
        key = cadence_name(dataset.schedule, start, manifest.partition_start)
        if key not in grouped:
            grouped[key] = Cadence(key, partitions_for(dataset.schedule, start))
        grouped[key].datasets.append(name)
    return list(grouped.values())


def _in_step_checks(manifest: Manifest, name: str, kind: str) -> list[str]:
    has_copies = manifest.dataset(name).has_copies
    checks = {
        "backup": [SIZE_CHECK] + ([] if has_copies else [COMPLIANCE_CHECK]),
        "copy": [COMPLIANCE_CHECK],
        "restore_test": [RTO_CHECK],
    }
    return checks.get(kind, [])


def _selection(manifest: Manifest, datasets: list[str], *kinds: str) -> dg.AssetSelection:
    """The datasets' assets of the given kinds (copy only where a dataset has copy repositories) with their
    in-step checks only: the standalone watch checks (RPO) run in their own unpartitioned job."""
    chosen = [
        (name, kind) for name in datasets for kind in kinds if kind != "copy" or manifest.dataset(name).has_copies
    ]
    keys = [getattr(DatasetKeys(name), kind) for name, kind in chosen]
    checks = [
        dg.AssetCheckKey(getattr(DatasetKeys(name), kind), check)
        for name, kind in chosen
        for check in _in_step_checks(manifest, name, kind)
    ]
    return dg.AssetSelection.assets(*keys).without_checks() | dg.AssetSelection.checks(*checks)


def _drill_schedule(
    job: "UnresolvedAssetJobDefinition", partitions_def: dg.PartitionsDefinition, cron: str
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Real restore test of the newest complete partition (`schedules.drills`, weekly by default).",
    )
    def drill(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            partition_key = partitions_def.get_last_partition_key()
        if partition_key is None:
            return dg.SkipReason("no complete partition yet")
        return dg.RunRequest(run_key=f"{job.name}:{partition_key}", partition_key=partition_key)

    return drill


def build_jobs(
    manifest: Manifest,
) -> tuple[list["UnresolvedAssetJobDefinition"], list[Any]]:
    """Return every cadence's jobs and their schedules."""
    jobs: list[UnresolvedAssetJobDefinition] = []
    schedules: list[Any] = []
    for cadence in cadences(manifest):
        backup_job = dg.define_asset_job(
            f"backup_{cadence.name}",
            selection=_selection(manifest, cadence.datasets, "backup", "copy", "verify"),
            description=f"Back up and verify the {cadence.name} datasets.",
        )
        drill_job = dg.define_asset_job(
            f"restore_drill_{cadence.name}",
            selection=_selection(manifest, cadence.datasets, "restore_test"),
            description=f"Restore-test the {cadence.name} datasets for real.",
        )
        protect_job = dg.define_asset_job(
            f"protect_{cadence.name}",
            selection=_selection(manifest, cadence.datasets, "backup", "copy", "verify", "restore_test"),
            description=f"Back up, verify and restore-test the {cadence.name} datasets in one run.",
        )
        jobs += [backup_job, drill_job, protect_job]
        schedules.append(
            dg.build_schedule_from_partitioned_job(
                backup_job,
                name=f"{backup_job.name}_schedule",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
        schedules.append(_drill_schedule(drill_job, cadence.partitions_def, as_cron(manifest.schedules.drills)))
    return jobs, schedules
