"""Protected S3 buckets (`s3` datasets) in Dagster: each bucket is an external asset `<name>/bucket` (we do not
make it, we watch it) with asset checks for versioning and, where asked, replication and Object Lock. A job per
schedule runs the checks; a failed rule is alerted on the dataset's channels."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from assets.keys import DatasetKeys
from assets.partitions import cadence_name
from backup_pipelines.buckets import OBJECT_LOCK, REPLICATION, VERSIONING, check_bucket, rules_for
from backup_pipelines.manifest import Manifest, S3BucketDataset
from backup_pipelines.notify import Alert
from resources import ManifestResource, NotifierResource

CRONS = {"hourly": "0 * * * *", "daily": "0 6 * * *"}
DESCRIPTIONS = {
    VERSIONING: "Versioning is enabled (otherwise overwritten and deleted objects are lost for good).",
    REPLICATION: "At least one enabled replication rule copies the bucket elsewhere.",
    OBJECT_LOCK: "Object Lock is enabled on the bucket.",
}


def bucket_key(name: str) -> dg.AssetKey:
    return DatasetKeys(name).bucket


def _spec(name: str, dataset: S3BucketDataset) -> dg.AssetSpec:
    return dg.AssetSpec(
        bucket_key(name),
        description=dataset.description or f"S3 bucket {dataset.source.bucket}, watched for its protection settings.",
        group_name=name,
        kinds={"s3"},
        owners=list(dataset.owners),
        tags={"dataset": name, "kind": "s3", **dataset.tags},
        metadata={"bucket": dataset.source.bucket, "region": dataset.source.region, "schedule": dataset.schedule},
    )


def _checks(name: str, dataset: S3BucketDataset) -> dg.AssetChecksDefinition:
    key = bucket_key(name)
    specs = [dg.AssetCheckSpec(rule, asset=key, description=DESCRIPTIONS[rule]) for rule in rules_for(dataset)]

    @dg.multi_asset_check(specs=specs, name=f"bucket_checks_{name}")
    def bucket_checks(
        context: dg.AssetCheckExecutionContext, manifest: ManifestResource, notifier: NotifierResource
    ) -> Iterator[dg.AssetCheckResult]:
        findings = check_bucket(manifest.load(), name)
        failed = [finding for finding in findings if not finding.passed]
        if failed:
            notifier.send(
                Alert(
                    "finding",
                    name,
                    f"bucket {dataset.source.bucket} is not protected as the manifest asks",
                    "; ".join(f"{finding.rule}: {finding.description}" for finding in failed),
                ),
                context.log,
            )
        for finding in findings:
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=finding.rule,
                passed=finding.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=finding.description,
                metadata={key: dg.MetadataValue.json(value) for key, value in finding.details.items()},
            )

    return bucket_checks


def build_bucket_checks(
    manifest: Manifest,
) -> tuple[list[dg.AssetSpec], list[dg.AssetChecksDefinition], list[Any], list[dg.ScheduleDefinition]]:
    """Return the bucket assets, their checks, and one job and schedule per distinct schedule."""
    specs: list[dg.AssetSpec] = []
    checks: list[dg.AssetChecksDefinition] = []
    jobs: list[Any] = []
    schedules: list[dg.ScheduleDefinition] = []
    by_schedule: dict[str, list[dg.AssetChecksDefinition]] = {}
    for name, dataset in manifest.watched_buckets().items():
        specs.append(_spec(name, dataset))
        check = _checks(name, dataset)
        checks.append(check)
        by_schedule.setdefault(dataset.schedule, []).append(check)
    for schedule, group in by_schedule.items():
        job = dg.define_asset_job(
            f"check_buckets_{cadence_name(schedule, manifest.partition_start, manifest.partition_start)}",
            selection=dg.AssetSelection.checks(*[key for check in group for key in check.check_keys]),
            description="Check the protected buckets' versioning, replication and Object Lock.",
        )
        jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{job.name}_schedule",
                job=job,
                cron_schedule=CRONS.get(schedule, schedule),
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        )
    return specs, checks, jobs, schedules
