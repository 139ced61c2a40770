"""What our AWS snapshots are made of: the tags that mark them (dataset, partition, backup id, pending copy,
quarantine), the RDS snapshot families (DB and DB cluster snapshots share one API shape), and the record a
snapshot becomes. Pure functions over AWS's descriptions: no call to AWS here (that is `aws_snapshots`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backup_pipelines.repository.base import BackupRecord

TAG_DATASET = "bp-dataset"
TAG_PARTITION = "bp-partition"
TAG_ID = "bp-id"
TAG_CREATED = "bp-created"
TAG_TESTED = "bp-restore-tested"
TAG_COPY_OF = "bp-copy-of"
TAG_PENDING = "bp-pending-id"
TAG_QUARANTINE = "bp-quarantine"  # the reason, in the characters RDS allows in a tag value
TAG_QUARANTINED_AT = "bp-quarantined-at"
FAILED_STATES = ("failed", "error", "deleting", "deleted")
NOT_FOUND_RETRIES = 5  # how often "not found" is asked again about a resource AWS has just created
GIB = 1 << 30
EBS_GONE = ("InvalidSnapshot.NotFound",)


@dataclass(frozen=True)
class RdsFamily:
    """The names of one RDS snapshot API: DB snapshots (of instances) or DB cluster snapshots (Aurora). Both
    APIs have the same shape; only the nouns differ (DescribeDBSnapshots / DescribeDBClusterSnapshots, ...)."""

    kind: str
    noun: str  # "DBSnapshot" or "DBClusterSnapshot"
    snake: str  # "db_snapshot" or "db_cluster_snapshot"
    source_field: str  # the field naming what was snapshot
    encrypted_field: str
    gone: tuple[str, ...]  # error codes meaning "no such snapshot"
    key_encrypts_plain: bool  # a KmsKeyId on the copy of an unencrypted snapshot encrypts it (else AWS refuses)

    @property
    def id_field(self) -> str:
        return f"{self.noun}Identifier"

    @property
    def arn_field(self) -> str:
        return f"{self.noun}Arn"

    def describe(self, client: Any, identifier: str) -> dict[str, Any]:
        answer = getattr(client, f"describe_{self.snake}s")(**{self.id_field: identifier})
        return dict(answer[f"{self.noun}s"][0])


RDS_FAMILIES = {
    "rds": RdsFamily(
        "rds",
        "DBSnapshot",
        "db_snapshot",
        "DBInstanceIdentifier",
        "Encrypted",
        ("DBSnapshotNotFound", "DBSnapshotNotFoundFault"),
        True,
    ),
    "aurora": RdsFamily(
        "aurora",
        "DBClusterSnapshot",
        "db_cluster_snapshot",
        "DBClusterIdentifier",
        "StorageEncrypted",
        ("DBClusterSnapshotNotFoundFault", "DBClusterSnapshotNotFound"),
        False,
    ),
}
RDS_GONE = tuple(code for family in RDS_FAMILIES.values() for code in family.gone)


def snapshot_identifier(dataset: str, backup_id: str) -> str:
    """Return the RDS snapshot identifier of a backup: letters, digits and single hyphens, starting with a
    letter (`bp-orders-db-20261127t095617z-1a2b3c`)."""
    text = re.sub(r"[^a-z0-9]+", "-", f"bp-{dataset}-{backup_id}".lower())
    return re.sub(r"-+", "-", text).strip("-")[:255]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """Return `tags` in AWS's [{"Key": ..., "Value": ...}] form."""
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    """Return AWS's tag list as a dict."""
    return {tag["Key"]: tag["Value"] for tag in tags or []}


def pending_tags(dataset: str, partition_key: str, backup_id: str, created: datetime) -> dict[str, str]:
    """The tags a snapshot gets when it is created: ours, not yet a backup (`commit` adds bp-id)."""
    return {
        TAG_DATASET: dataset,
        TAG_PARTITION: partition_key,
        TAG_PENDING: backup_id,
        TAG_CREATED: created.astimezone(UTC).isoformat(),
        "Name": snapshot_identifier(dataset, backup_id),
    }


def is_encrypted(kind: str, snapshot: dict[str, Any]) -> bool:
    """Whether AWS encrypts the snapshot (cluster snapshots say StorageEncrypted, the others Encrypted)."""
    field = RDS_FAMILIES[kind].encrypted_field if kind in RDS_FAMILIES else "Encrypted"
    return bool(snapshot.get(field))


def quarantine_tags(reason: str, at: str | None) -> dict[str, str]:
    """Return the tags marking a snapshot quarantined: the reason with the characters RDS refuses in a tag
    value (such as % , ; and parentheses) replaced by spaces, at most 256 characters."""
    allowed = " ".join(re.sub(r"[^\w\s.:/=+\-@]", " ", reason).split())[:256]
    return {TAG_QUARANTINE: allowed or "quarantined", TAG_QUARANTINED_AT: at or datetime.now(UTC).isoformat()}


def is_ours(tags: dict[str, str], dataset: str | None) -> bool:
    """Whether a snapshot's tags make it a committed backup of ours (of `dataset`, when given)."""
    return TAG_ID in tags and TAG_DATASET in tags and (dataset is None or tags[TAG_DATASET] == dataset)


def record_from(kind: str, snapshot: dict[str, Any], tags: dict[str, str]) -> BackupRecord:
    """Return the BackupRecord of one of our snapshots, from AWS's description and its tags."""
    if kind in RDS_FAMILIES:
        family = RDS_FAMILIES[kind]
        identifier = str(snapshot[family.id_field])
        size = int(snapshot.get("AllocatedStorage", 0)) * GIB
        taken = snapshot.get("SnapshotCreateTime")
        stats = {
            "source": snapshot.get(family.source_field, ""),
            "engine": snapshot.get("Engine", ""),
            "engine_version": snapshot.get("EngineVersion", ""),
            "allocated_storage_gib": int(snapshot.get("AllocatedStorage", 0)),
            "kms_key_id": snapshot.get("KmsKeyId", ""),
            "arn": snapshot.get(family.arn_field, ""),
        }
    else:
        identifier = str(snapshot["SnapshotId"])
        size = int(snapshot.get("VolumeSize", 0)) * GIB
        taken = snapshot.get("StartTime")
        stats = {
            "volume_id": snapshot.get("VolumeId", ""),
            "volume_size_gib": int(snapshot.get("VolumeSize", 0)),
            "kms_key_id": snapshot.get("KmsKeyId", ""),
        }
    created = tags.get(TAG_CREATED) or (taken.astimezone(UTC).isoformat() if isinstance(taken, datetime) else "")
    return BackupRecord(
        dataset=tags[TAG_DATASET],
        partition_key=tags.get(TAG_PARTITION, ""),
        backup_id=tags[TAG_ID],
        kind=kind,
        format=f"{kind}-snapshot",
        object_name=identifier,
        created_at=created,
        bytes_raw=size,
        bytes_stored=size,
        sha256="",
        compression="",
        encrypted=is_encrypted(kind, snapshot),
        source_stats=stats,
        quarantine_reason=tags.get(TAG_QUARANTINE),
        quarantined_at=tags.get(TAG_QUARANTINED_AT),
    )
