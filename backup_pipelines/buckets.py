"""Protected S3 buckets (`s3` datasets): is versioning on, and, where the manifest asks, replication and Object
Lock? Versioning is not a backup (a deleted bucket or a compromised account takes every version with it), but a
bucket without it loses each overwritten or deleted object for good, so its absence is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backup_pipelines.aws import AWS_ERRORS, describe_error, error_code, make_client
from backup_pipelines.errors import SourceUnavailableError
from backup_pipelines.manifest import Manifest, S3BucketDataset

VERSIONING = "versioning_enabled"
REPLICATION = "replication_enabled"
OBJECT_LOCK = "object_lock_enabled"


@dataclass(frozen=True)
class BucketFinding:
    """One rule about one bucket: whether it holds, what was seen, and details for the UI."""

    rule: str
    passed: bool
    description: str
    details: dict[str, Any] = field(default_factory=dict)


def rules_for(dataset: S3BucketDataset) -> list[str]:
    """Return the rules a bucket dataset is checked against."""
    return [
        VERSIONING,
        *([REPLICATION] if dataset.source.require_replication else []),
        *([OBJECT_LOCK] if dataset.source.require_object_lock else []),
    ]


def check_bucket(manifest: Manifest, name: str) -> list[BucketFinding]:
    """Return one finding per rule of bucket dataset `name`.

    A bucket that does not exist fails every rule. Raise SourceUnavailableError when AWS cannot be asked
    (no credentials, access denied, endpoint down): that is not a finding about the bucket.
    """
    dataset = manifest.watched_buckets()[name]
    bucket = dataset.source.bucket
    client = make_client("s3", dataset.source, f"datasets.{name}.source")
    try:
        versioning = client.get_bucket_versioning(Bucket=bucket)
    except AWS_ERRORS as error:
        if error_code(error) == "NoSuchBucket":
            return [BucketFinding(rule, False, f"bucket {bucket} does not exist") for rule in rules_for(dataset)]
        raise SourceUnavailableError(f"dataset {name}: cannot read bucket {bucket}: {describe_error(error)}") from error
    status = versioning.get("Status", "never enabled")
    findings = [
        BucketFinding(
            VERSIONING,
            status == "Enabled",
            f"versioning is {status.lower()}"
            + ("" if status == "Enabled" else ": overwritten and deleted objects are lost for good"),
            {"versioning": status, "mfa_delete": versioning.get("MFADelete", "Disabled")},
        )
    ]
    if dataset.source.require_replication:
        findings.append(_replication(client, name, bucket))
    if dataset.source.require_object_lock:
        findings.append(_object_lock(client, name, bucket))
    return findings


def _replication(client: Any, name: str, bucket: str) -> BucketFinding:
    try:
        rules = client.get_bucket_replication(Bucket=bucket)["ReplicationConfiguration"].get("Rules", [])
    except AWS_ERRORS as error:
        if error_code(error) != "ReplicationConfigurationNotFoundError":
            raise SourceUnavailableError(f"dataset {name}: replication of {bucket}: {describe_error(error)}") from error
        rules = []
    enabled = [rule for rule in rules if rule.get("Status") == "Enabled"]
    targets = sorted({str(rule.get("Destination", {}).get("Bucket", "")) for rule in enabled})
    return BucketFinding(
        REPLICATION,
        bool(enabled),
        f"{len(enabled)} enabled replication rule(s) to {', '.join(targets)}" if enabled else "no enabled replication",
        {"rules": len(rules), "enabled_rules": len(enabled), "destinations": targets},
    )


def _object_lock(client: Any, name: str, bucket: str) -> BucketFinding:
    try:
        configuration = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except AWS_ERRORS as error:
        if error_code(error) != "ObjectLockConfigurationNotFoundError":
            raise SourceUnavailableError(f"dataset {name}: Object Lock of {bucket}: {describe_error(error)}") from error
        configuration = {}
    enabled = configuration.get("ObjectLockEnabled") == "Enabled"
    retention = configuration.get("Rule", {}).get("DefaultRetention", {})
    return BucketFinding(
        OBJECT_LOCK,
        enabled,
        "Object Lock is enabled" if enabled else "Object Lock is not enabled",
        {"default_retention": retention},
    )
