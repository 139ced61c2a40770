"""The factory: one manifest dataset becomes <name>/backup -> [<name>/copy] -> <name>/verify -> <name>/restore_test."""

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from assets.history import QUARANTINED, SIZE_CHECK, SIZE_FINDING, backup_history, quarantine_overrides
from assets.keys import DatasetKeys
from assets.kubernetes import step_k8s_tags
from assets.metadata import backup_metadata, restore_metadata, size_history_table, verify_metadata
from assets.partitions import LATE_ALLOW, LATE_TAG, describe_window, lateness, partitions_for
from assets.stage_index import index_step
from backup_pipelines.anomaly import Measurement, Thresholds, detect
from backup_pipelines.compliance import judge
from backup_pipelines.copies import copy_backup
from backup_pipelines.durations import describe_duration, format_duration
from backup_pipelines.errors import ManifestError, MissingSecretError, StorageError
from backup_pipelines.manifest import SNAPSHOT_KINDS, ActiveDataset, AnomalyThresholds, Manifest, PostgresDataset
from backup_pipelines.operations import StoredBackup, find_backup, restore_test_backup, run_backup, verify_backup
from backup_pipelines.quarantine import describe, quarantine_backup, size_anomaly_reason
from backup_pipelines.repository import BackupRecord
from resources import AgeIdentityResource, ManifestResource, NotifierResource

RTO_CHECK = "restore_within_rto"
VERIFY_DESCRIPTIONS = {
    "objects": "Every copy of the {name} backup read back, decrypted, checksummed and listed.",
    "files": "Every restic repository holding the {name} snapshot checked (structure and a share of the data).",
    "rds": "Every copy of the {name} DB snapshot: status, size and KMS encryption.",
    "aurora": "Every copy of the {name} DB cluster snapshot: status, size and KMS encryption.",
    "ebs": "Every copy of the {name} volume snapshot: status, size and KMS encryption.",
}
RESTORE_DESCRIPTIONS = {
    "objects": "A real restore of the {name} backup into a scratch database, validated and dropped.",
    "files": "A real restore of the {name} snapshot into a temporary folder, compared file by file, removed.",
    "rds": "The {name} snapshot restored to a temporary DB instance, compared with the snapshot, deleted.",
    "aurora": "The {name} snapshot restored to a temporary DB cluster and instance, compared, deleted.",
    "ebs": "The {name} snapshot restored to a temporary volume, compared with the snapshot, deleted.",
}
COMPLIANCE_CHECK = "three_two_one"


def _record_for(context: dg.AssetExecutionContext, manifest: Manifest, keys: DatasetKeys) -> BackupRecord:
    """Return the backup this partition's materialization made (by its backup id), falling back to the
    newest committed backup of the partition in the repositories."""
    partition_key = context.partition_key
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=keys.backup, asset_partitions=[partition_key]), limit=1
    ).records
    backup_id = None
    if records and records[0].asset_materialization is not None:
        entry = records[0].asset_materialization.metadata.get("backup_id")
        backup_id = str(entry.value) if entry is not None else None
    return find_backup(manifest, keys.name, partition_key=partition_key, backup_id=backup_id)


def freshness_policy(rpo: timedelta) -> dg.FreshnessPolicy | None:
    """Dagster's own freshness policy from the RPO: degraded past the RPO, warning at 75 % of it. Dagster's
    windows start at one minute; a shorter RPO is watched by the RPO check and sensor alone."""
    if rpo < timedelta(minutes=1):
        return None
    warn = rpo * 0.75
    return dg.FreshnessPolicy.time_window(fail_window=rpo, warn_window=warn if warn >= timedelta(minutes=1) else None)


def size_check(stored: StoredBackup, history: list[Measurement], thresholds: AnomalyThresholds) -> dg.AssetCheckResult:
    """Judge a new backup against its history: ERROR on a drop (blocks verify), WARN on a spike or a slow run."""
    record = stored.record
    latest = Measurement(
        record.bytes_raw, record.bytes_stored, record.duration_seconds, dict(record.source_stats.get("tables", {}))
    )
    verdict = detect(latest, history, Thresholds(**thresholds.model_dump()))
    severity = dg.AssetCheckSeverity.ERROR if verdict.severity == "ERROR" else dg.AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        "history_size": verdict.history_size,
        **{f"median_{k}": v for k, v in verdict.medians.items()},
    }
    if verdict.note:
        metadata["note"] = verdict.note
    if verdict.findings:
        metadata["findings"] = dg.MetadataValue.md(
            "\n".join(f"- **{f.severity}** {f.message}" for f in verdict.findings)
        )
    return dg.AssetCheckResult(
        check_name=SIZE_CHECK,
        passed=not verdict.findings,
        severity=severity,
        metadata=metadata,
        description="; ".join(f.message for f in verdict.findings) or verdict.note or "in line with history",
    )


def quarantine_blocked(manifest: Manifest, stored: StoredBackup, check: dg.AssetCheckResult) -> str:
    """Quarantine a backup whose blocking size check failed with ERROR, in every repository holding it; return
    the reason. Raise StorageError (naming the command that does it by hand) if no repository takes the mark."""
    record = stored.record
    reason = size_anomaly_reason(check.description or "")
    try:
        quarantine_backup(manifest, record.dataset, record.backup_id, reason)
    except StorageError as error:
        raise StorageError(
            f"backup {record.backup_id} failed its size check but could not be quarantined ({error}); run: "
            f"backup-pipelines quarantine {record.dataset} {record.backup_id} --reason '...'"
        ) from error
    return reason


def drill_record(context: dg.AssetExecutionContext, manifest: Manifest, record: BackupRecord) -> BackupRecord:
    """Return the backup a restore test should test: `record`, or the dataset's newest good backup when
    `record` is quarantined (a quarantined backup is never the drill's choice). Raise StorageError if the
    dataset has no backup that is not quarantined."""
    if not record.quarantined:
        return record
    good = find_backup(manifest, record.dataset)
    context.log.warning(f"{describe(record)}; restore-testing the newest good backup {good.backup_id} instead")
    return good


def retry_policy(retries: int, delay: timedelta) -> dg.RetryPolicy | None:
    """The manifest's retries as a Dagster RetryPolicy (exponential backoff), or None."""
    if not retries:
        return None
    return dg.RetryPolicy(max_retries=retries, delay=delay.total_seconds(), backoff=dg.Backoff.EXPONENTIAL)


def partitioned_check(
    name: str, key: dg.AssetKey, partitions_def: dg.PartitionsDefinition, description: str, blocking: bool = False
) -> dg.AssetCheckSpec:
    """Return the spec of a check judging one partition of `key`: each run records one result per partition it
    materializes (an unpartitioned check on a partitioned asset leaves a "Skipped" row per partition next to its
    result). Partitioned check specs are a Dagster preview feature (1.13); its warning is silenced here only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=key, partitions_def=partitions_def, description=description, blocking=blocking
        )


def compliance_spec(key: dg.AssetKey, partitions_def: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    return partitioned_check(
        COMPLIANCE_CHECK, key, partitions_def, "3-2-1: copies (with the source), media, off-site, immutable."
    )


@contextmanager
def fail_at_once_on_configuration_errors() -> Iterator[None]:
    """Turn a missing secret or an unusable manifest into a step failure that is not retried: waiting does not
    set an environment variable or fix a file, so the dataset's RetryPolicy is kept for transient errors only.
    The failure's message names the error and what is missing (the variable, the file, the field)."""
    try:
        yield
    except MissingSecretError as error:
        raise dg.Failure(description=f"MissingSecretError: {error}", allow_retries=False) from error
    except ManifestError as error:
        raise dg.Failure(description=f"ManifestError: {error.report()}", allow_retries=False) from error


def refuse_late_partition(context: dg.AssetExecutionContext, now: datetime) -> dict[str, Any]:
    """Return the metadata saying when a backup of this partition is taken: `taken_at`, `partition_window`, and
    `taken_after_window_closed` when late. A backup is a snapshot of now: refuse (a Failure, not retried) a
    partition whose window closed more than one period ago, unless the run is tagged `backup/late=allow`."""
    window = context.partition_time_window
    late = lateness(window, now)
    metadata: dict[str, Any] = {
        "taken_at": dg.MetadataValue.text(now.isoformat(timespec="seconds")),
        "partition_window": dg.MetadataValue.text(describe_window(window)),
    }
    if late is None:
        return metadata
    after_close = describe_duration((now - window.end).total_seconds())
    if context.run.tags.get(LATE_TAG) != LATE_ALLOW:
        raise dg.Failure(
            description=f"partition {context.partition_key} ({describe_window(window)}) closed "
            f"{after_close} ago: a backup taken now is a snapshot of now, not of that window. "
            f"Back up the current partition, or tag the run {LATE_TAG}={LATE_ALLOW} to record a late backup "
            "(its metadata then says when it was taken).",
            allow_retries=False,
        )
    context.log.warning(
        f"late backup: partition {context.partition_key} ({describe_window(window)}) taken "
        f"{after_close} after its window closed ({LATE_TAG}={LATE_ALLOW})"
    )
    return {**metadata, "taken_after_window_closed": dg.MetadataValue.text(after_close)}


def compliance_result(manifest: Manifest, name: str, holding: list[str]) -> tuple[dg.AssetCheckResult, str]:
    """The 3-2-1 check of a backup held by the repositories `holding`, and a one-line summary."""
    standing = judge(manifest, name, holding)
    result = dg.AssetCheckResult(
        check_name=COMPLIANCE_CHECK,
        passed=standing.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(standing.missing) or "3-2-1 met",
        metadata={
            "copies": standing.copies,
            "media": ", ".join(standing.media),
            "offsite": standing.offsite,
            "immutable": standing.immutable,
        },
    )
    return result, "pass" if standing.passed else "missing " + "; ".join(standing.missing)


def _storage_kinds(dataset: ActiveDataset) -> set[str]:
    """The Dagster kinds (UI badges) of a dataset's backup asset: its kind and what stores it."""
    if dataset.kind in SNAPSHOT_KINDS:
        return {dataset.kind, "aws"}
    if dataset.kind == "files":
        return {"files", "restic"}
    if dataset.kind == "postgres_cluster":
        return {"postgres", "pgbackrest"}
    if dataset.kind == "mariadb_physical":
        return {"mariadb", "mariabackup", "zstd", "age"}
    return {dataset.kind, "zstd", "age"}


def _copy_kinds(manifest: Manifest, dataset: ActiveDataset) -> set[str]:
    types = {manifest.repositories[repository].type for repository in dataset.repositories}
    return {"aws"} if "aws_snapshots" in types else {"s3"} if "s3" in types else {"copy"}


def _common(dataset: ActiveDataset, name: str, manifest: Manifest) -> dict[str, Any]:
    """The attributes every asset of a dataset's chain shares: its group, partitions, owners and tags."""
    return {
        "group_name": name,
        "partitions_def": partitions_for(dataset.schedule, manifest.partition_start_for(name)),
        "owners": list(dataset.owners),
        "tags": {"dataset": name, "kind": dataset.kind, **dataset.tags},
    }


def build_dataset_assets(manifest: Manifest, name: str) -> list[dg.AssetsDefinition]:
    """Return the backup, verify and restore-test assets of dataset `name`."""
    dataset = manifest.dataset(name)
    keys = DatasetKeys(name)
    common = _common(dataset, name, manifest)
    partitions_def = common["partitions_def"]
    has_copies = dataset.has_copies
    source_server = dataset.server_name
    restore_server = dataset.restore_test.server or source_server if isinstance(dataset, PostgresDataset) else None

    @dg.asset(
        key=keys.backup,
        description=dataset.description or f"Backups of {name}: one partition is one encrypted backup.",
        kinds=_storage_kinds(dataset),
        pool=f"db-{source_server}" if source_server else None,
        op_tags=step_k8s_tags(dataset.tags, needs_identity=False),
        freshness_policy=freshness_policy(dataset.rpo),
        retry_policy=retry_policy(dataset.retries, dataset.retry_delay),
        check_specs=[
            partitioned_check(
                SIZE_CHECK,
                keys.backup,
                partitions_def,
                "Size, row counts and duration against this dataset's recent backups.",
                blocking=True,
            ),
            *([] if has_copies else [compliance_spec(keys.backup, partitions_def)]),
        ],
        metadata={
            "schedule": dataset.schedule,
            "rpo": format_duration(dataset.rpo),
            "rto": format_duration(dataset.rto),
            "repositories": ", ".join(dataset.repositories),
            "source": dataset.source_summary(),
        },
        **common,
    )
    def backup(
        context: dg.AssetExecutionContext, manifest: ManifestResource, notifier: NotifierResource
    ) -> dg.MaterializeResult:
        taken = refuse_late_partition(context, datetime.now(UTC))
        index_step(context, keys.backup)
        notifier.ping(name, "start", context.partition_key)
        try:
            with fail_at_once_on_configuration_errors():
                stored = run_backup(manifest.load(), name, context.partition_key, log=context.log)
        except Exception as error:
            notifier.ping(name, "fail", f"{context.partition_key}: {error}")
            raise
        overrides = quarantine_overrides(context.instance, [name]).get(name, {})
        history = backup_history(context.instance, keys.backup, dataset.anomaly.history, overrides)
        check = size_check(stored, history, dataset.anomaly)
        blocked = not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        quarantined = quarantine_blocked(manifest.load(), stored, check) if blocked else None
        notifier.ping(name, "fail" if blocked else "success", f"{context.partition_key}: {stored.record.backup_id}")
        recent_sizes = [(m.created_at, m.bytes_stored) for m in reversed(history)]
        recent_sizes.append((time.time(), stored.record.bytes_stored))
        metadata = {
            **backup_metadata(stored),
            **taken,
            "size_check": "pass" if check.passed else check.severity.value,
            **({} if check.passed else {SIZE_FINDING: dg.MetadataValue.text(check.description or "")}),
            "size_history": size_history_table(recent_sizes),
            **({QUARANTINED: dg.MetadataValue.text(quarantined)} if quarantined else {}),
        }
        checks = [check]
        if not has_copies:
            compliance, metadata["three_two_one"] = compliance_result(manifest.load(), name, list(stored.locations))
            checks.append(compliance)
        index_step(context, keys.backup, partition=context.partition_key, metadata=metadata, recent_sizes=recent_sizes)
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    @dg.asset(
        key=keys.copy,
        deps=[keys.backup],
        description=f"The {name} backup copied to every copy repository and re-checked there (3-2-1).",
        kinds=_copy_kinds(manifest, dataset),
        retry_policy=retry_policy(dataset.retries, dataset.retry_delay),
        check_specs=[compliance_spec(keys.copy, partitions_def)],
        **common,
    )
    def copy(context: dg.AssetExecutionContext, manifest: ManifestResource) -> dg.MaterializeResult:
        index_step(context, keys.copy)
        with fail_at_once_on_configuration_errors():
            loaded = manifest.load()
            record = _record_for(context, loaded, keys)
            locations = copy_backup(loaded, name, record)
        compliance, summary = compliance_result(loaded, name, list(locations))
        metadata: dict[str, Any] = {
            "backup_id": dg.MetadataValue.text(record.backup_id),
            "locations": dg.MetadataValue.json(locations),
            "copies": dg.MetadataValue.int(len(locations)),
            "three_two_one": summary,
        }
        index_step(context, keys.copy, partition=context.partition_key, metadata=metadata)
        return dg.MaterializeResult(metadata=metadata, check_results=[compliance])

    @dg.asset(
        key=keys.verify,
        deps=[keys.copy if has_copies else keys.backup],
        description=VERIFY_DESCRIPTIONS.get(dataset.kind, VERIFY_DESCRIPTIONS["objects"]).format(name=name),
        kinds={dataset.kind},
        op_tags=step_k8s_tags(dataset.tags, needs_identity=True),
        **common,
    )
    def verify(
        context: dg.AssetExecutionContext, manifest: ManifestResource, age_identity: AgeIdentityResource
    ) -> dg.MaterializeResult:
        index_step(context, keys.verify)
        with fail_at_once_on_configuration_errors():
            loaded = manifest.load()
            record = _record_for(context, loaded, keys)
            checks = verify_backup(loaded, name, record, *age_identity.credentials())
        metadata = verify_metadata(record, checks)
        index_step(context, keys.verify, partition=context.partition_key, metadata=metadata)
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        key=keys.restore_test,
        deps=[keys.verify],
        description=RESTORE_DESCRIPTIONS.get(dataset.kind, RESTORE_DESCRIPTIONS["objects"]).format(name=name),
        kinds={dataset.kind},
        pool=f"db-{restore_server}" if restore_server else None,
        op_tags=step_k8s_tags(dataset.tags, needs_identity=True),
        check_specs=[partitioned_check(RTO_CHECK, keys.restore_test, partitions_def, "Restore took at most the RTO.")],
        **common,
    )
    def restore_test(
        context: dg.AssetExecutionContext, manifest: ManifestResource, age_identity: AgeIdentityResource
    ) -> dg.MaterializeResult:
        index_step(context, keys.restore_test)
        with fail_at_once_on_configuration_errors():
            loaded = manifest.load()
            record = drill_record(context, loaded, _record_for(context, loaded, keys))
            report = restore_test_backup(loaded, name, record, *age_identity.credentials())
        rto_seconds = dataset.rto.total_seconds()
        measured = report.restore_seconds + report.validation_seconds
        check = dg.AssetCheckResult(
            check_name=RTO_CHECK,
            passed=measured <= rto_seconds,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"measured_seconds": round(measured, 3), "rto_seconds": rto_seconds},
        )
        metadata = restore_metadata(record, report, rto_seconds)
        index_step(context, keys.restore_test, partition=context.partition_key, metadata=metadata)
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    return [backup, copy, verify, restore_test] if has_copies else [backup, verify, restore_test]
