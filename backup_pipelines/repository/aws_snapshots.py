"""AWS snapshots as a backup store: RDS DB snapshots, Aurora DB cluster snapshots and EBS snapshots in one
region, found by our tags.

A snapshot is created (or copied in) with the tags bp-dataset, bp-partition, bp-created and bp-pending-id;
only once AWS reports it complete (RDS `available`, EBS `completed`) and it is checked does it get the tag
bp-id, which is what makes it a backup: listing finds ours by their tags (paginated) and counts only those
with bp-id that AWS reports complete. So a snapshot whose wait failed or timed out never lists as a backup,
even when AWS refuses to delete it while it is still being created (the analogue of the sidecar written
last). Deleting is one AWS call, then a wait until it is gone. Copies into this region are made by AWS
(CopyDBSnapshot / CopySnapshot naming the source region and this region's KMS key); a rerun finds a copy
still in progress by its bp-pending-id and waits for it instead of starting another.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from backup_pipelines.aws import AWS_ERRORS, describe_error, error_code, make_client, wait
from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import AwsSnapshotRepositoryConfig
from backup_pipelines.repository.base import BackupRecord, BackupStore
from backup_pipelines.repository.snapshot_tags import (
    EBS_GONE,
    FAILED_STATES,
    NOT_FOUND_RETRIES,
    RDS_FAMILIES,
    RDS_GONE,
    TAG_COPY_OF,
    TAG_DATASET,
    TAG_ID,
    TAG_PENDING,
    TAG_QUARANTINE,
    TAG_QUARANTINED_AT,
    TAG_TESTED,
    RdsFamily,
    is_encrypted,
    is_ours,
    pending_tags,
    quarantine_tags,
    record_from,
    tag_dict,
    tag_list,
)

LOG = logging.getLogger("backup_pipelines")


class SnapshotStore(BackupStore):
    """The RDS and EBS snapshots of one region (see the module docstring). `kinds` says which of the two
    families the datasets using this repository need, so listing asks only those APIs."""

    def __init__(self, name: str, config: AwsSnapshotRepositoryConfig, kinds: set[str]) -> None:
        super().__init__(name)
        self.config = config
        self.region = config.region
        self.kinds = kinds
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """Return this region's boto3 client of `service` ("rds", "ec2"), made once."""
        if service not in self._clients:
            self._clients[service] = make_client(service, self.config, f"repositories.{self.name}")
        return self._clients[service]

    def wait(self, service: str, waiter: str, what: str, **arguments: Any) -> None:
        """Wait for `waiter` in this region, within the repository's wait_minutes (a resource created a moment
        ago that AWS does not see yet is polled again, except when waiting for one to be deleted)."""
        retries = 0 if waiter.endswith("_deleted") else NOT_FOUND_RETRIES
        config = self.config
        wait(self.client(service), waiter, what, config.wait_minutes, config.poll_seconds, retries, **arguments)

    def uri(self, path: str) -> str:
        identifier = path.rsplit("/", 1)[-1]
        return f"{'ebs' if identifier.startswith('snap-') else 'rds'}://{self.region}/{identifier}"

    # -- listing -----------------------------------------------------------------------------------------

    def snapshots(self, dataset: str | None = None) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
        """Return (kind, snapshot, tags) of every complete snapshot of ours (of `dataset` if given)."""
        found: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        try:
            for family in RDS_FAMILIES.values():
                if family.kind not in self.kinds:
                    continue
                paginator = self.client("rds").get_paginator(f"describe_{family.snake}s")
                for page in paginator.paginate(SnapshotType="manual"):
                    for snapshot in page[f"{family.noun}s"]:
                        tags = self._rds_tags(snapshot, family)
                        if is_ours(tags, dataset) and snapshot.get("Status") == "available":
                            found.append((family.kind, snapshot, tags))
            if "ebs" in self.kinds:
                name_filter = {"Name": f"tag:{TAG_DATASET}", "Values": [dataset]} if dataset else None
                filters = [name_filter] if name_filter else [{"Name": "tag-key", "Values": [TAG_DATASET]}]
                pages = (
                    self.client("ec2").get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=filters)
                )
                for page in pages:
                    for snapshot in page["Snapshots"]:
                        tags = tag_dict(snapshot.get("Tags"))
                        if is_ours(tags, dataset) and snapshot.get("State") == "completed":
                            found.append(("ebs", snapshot, tags))
        except AWS_ERRORS as error:
            raise StorageError(
                f"cannot list snapshots in {self.region} ({self.name}): {describe_error(error)}"
            ) from error
        return found

    def _rds_tags(self, snapshot: dict[str, Any], family: RdsFamily) -> dict[str, str]:
        if "TagList" in snapshot:  # returned by DescribeDBSnapshots since 2019
            return tag_dict(snapshot["TagList"])
        listed = self.client("rds").list_tags_for_resource(ResourceName=snapshot[family.arn_field])
        return tag_dict(listed.get("TagList"))

    def list_backups(self, dataset: str | None = None, include_expiring: bool = False) -> list[BackupRecord]:
        records = [record_from(kind, snapshot, tags) for kind, snapshot, tags in self.snapshots(dataset)]
        return sorted(records, key=lambda record: (record.created_at, record.partition_key, record.backup_id))

    def restore_tested(self, dataset: str) -> set[str]:
        return {tags[TAG_ID] for _, _, tags in self.snapshots(dataset) if TAG_TESTED in tags}

    def describe(self, record: BackupRecord) -> dict[str, Any]:
        """Return AWS's description of `record`'s snapshot in this region. Raise StorageError if it is gone."""
        return self.describe_snapshot(record.kind, record.object_name)

    def describe_snapshot(self, kind: str, identifier: str) -> dict[str, Any]:
        """Return AWS's description of the `kind` ("rds", "ebs") snapshot `identifier` in this region."""
        try:
            if kind in RDS_FAMILIES:
                return RDS_FAMILIES[kind].describe(self.client("rds"), identifier)
            return dict(self.client("ec2").describe_snapshots(SnapshotIds=[identifier])["Snapshots"][0])
        except AWS_ERRORS as error:
            raise StorageError(f"{kind} snapshot {identifier} in {self.region}: {describe_error(error)}") from error

    def wait_snapshot(self, kind: str, identifier: str, what: str) -> None:
        """Wait until AWS reports the `kind` snapshot `identifier` complete. Raise StorageError if it fails or
        does not finish within the repository's wait_minutes."""
        if kind in RDS_FAMILIES:
            family = RDS_FAMILIES[kind]
            self.wait("rds", f"{family.snake}_available", what, **{family.id_field: identifier})
        else:
            self.wait("ec2", "snapshot_completed", what, SnapshotIds=[identifier])

    # -- changes -----------------------------------------------------------------------------------------

    def add_tags(self, kind: str, identifier: str, tags: dict[str, str]) -> None:
        """Add `tags` to the `kind` snapshot `identifier`."""
        try:
            if kind in RDS_FAMILIES:
                arn = self.describe_snapshot(kind, identifier)[RDS_FAMILIES[kind].arn_field]
                self.client("rds").add_tags_to_resource(ResourceName=arn, Tags=tag_list(tags))
            else:
                self.client("ec2").create_tags(Resources=[identifier], Tags=tag_list(tags))
        except AWS_ERRORS as error:
            raise StorageError(f"cannot tag {identifier} in {self.region}: {describe_error(error)}") from error

    def remove_tags(self, kind: str, identifier: str, keys: list[str]) -> None:
        """Remove the tags `keys` from the `kind` snapshot `identifier` (missing ones are fine)."""
        try:
            if kind in RDS_FAMILIES:
                arn = self.describe_snapshot(kind, identifier)[RDS_FAMILIES[kind].arn_field]
                self.client("rds").remove_tags_from_resource(ResourceName=arn, TagKeys=keys)
            else:
                self.client("ec2").delete_tags(Resources=[identifier], Tags=[{"Key": key} for key in keys])
        except AWS_ERRORS as error:
            raise StorageError(f"cannot untag {identifier} in {self.region}: {describe_error(error)}") from error

    def set_quarantine(self, record: BackupRecord, reason: str | None, at: str | None = None) -> None:
        """Tag the snapshot bp-quarantine (the reason) and bp-quarantined-at, or remove both tags to release."""
        if reason is None:
            self.remove_tags(record.kind, record.object_name, [TAG_QUARANTINE, TAG_QUARANTINED_AT])
        else:
            self.add_tags(record.kind, record.object_name, quarantine_tags(reason, at))

    def commit(self, kind: str, identifier: str, backup_id: str) -> None:
        """Make a complete, checked snapshot a backup: tag it bp-id."""
        self.add_tags(kind, identifier, {TAG_ID: backup_id})

    def mark_restore_tested(self, record: BackupRecord, details: dict[str, Any]) -> None:
        tested_at = str(details.get("tested_at", datetime.now(UTC).isoformat()))
        self.add_tags(record.kind, record.object_name, {TAG_TESTED: tested_at})

    def delete_backup(self, record: BackupRecord) -> None:
        """Delete the snapshot and wait until AWS no longer lists it (already gone is fine)."""
        try:
            if record.kind in RDS_FAMILIES:
                family = RDS_FAMILIES[record.kind]
                getattr(self.client("rds"), f"delete_{family.snake}")(**{family.id_field: record.object_name})
                what = f"deleting {record.object_name}"
                self.wait("rds", f"{family.snake}_deleted", what, **{family.id_field: record.object_name})
            else:
                self.client("ec2").delete_snapshot(SnapshotId=record.object_name)
        except AWS_ERRORS as error:
            if error_code(error) in (*RDS_GONE, *EBS_GONE):
                return
            raise StorageError(
                f"cannot delete {record.object_name} in {self.region}: {describe_error(error)}"
            ) from error

    def discard(self, kind: str, identifier: str) -> None:
        """Try to delete a snapshot that never became a backup (its wait failed or it differs). AWS refuses
        while a snapshot is still being created; it then stays, without bp-id, so it is never listed: say so."""
        try:
            if kind in RDS_FAMILIES:
                family = RDS_FAMILIES[kind]
                getattr(self.client("rds"), f"delete_{family.snake}")(**{family.id_field: identifier})
            else:
                self.client("ec2").delete_snapshot(SnapshotId=identifier)
        except AWS_ERRORS as error:
            if error_code(error) not in (*RDS_GONE, *EBS_GONE):
                LOG.warning(
                    f"{kind} snapshot {identifier} in {self.region} is not a backup (no {TAG_ID} tag) and could "
                    f"not be deleted yet ({describe_error(error)}): delete it when AWS allows"
                )

    def copy_from(self, source: SnapshotStore, record: BackupRecord) -> str:
        """Copy `record`'s snapshot from `source`'s region into this one (AWS copies it; encrypted with this
        repository's kms_key_id), wait until it is complete, check it, commit it, and return its location.
        A backup already here is not copied again; a copy still in progress is waited for."""
        existing = self.find_backup(record.dataset, record.backup_id)
        if existing is not None:
            return self.uri(existing.object_name)
        original = source.find_backup(record.dataset, record.backup_id)
        if original is None:
            raise StorageError(f"backup {record.backup_id} of {record.dataset} is not in {source.name}")
        snapshot = source.describe(original)
        encrypted = is_encrypted(original.kind, snapshot)
        if original.kind in RDS_FAMILIES and encrypted and source.region != self.region and not self.config.kms_key_id:
            raise StorageError(
                f"repositories.{self.name}.kms_key_id is needed: the snapshot is KMS-encrypted and KMS keys are "
                f"regional, so a copy into {self.region} needs a key there"
            )
        tags = pending_tags(record.dataset, record.partition_key, record.backup_id, record.created)
        tags[TAG_COPY_OF] = source.uri(original.object_name)
        if original.quarantine_reason is not None:  # a copy of a quarantined backup is quarantined too
            tags.update(quarantine_tags(original.quarantine_reason, original.quarantined_at))
        identifier = self._copy_in_progress(original) or self._start_copy(source, original, snapshot, tags)
        try:
            self.wait_snapshot(original.kind, identifier, f"copy {identifier} in {self.region}")
            result = self.describe_snapshot(original.kind, identifier)
        except BaseException:
            self.discard(original.kind, identifier)
            raise
        size = "AllocatedStorage" if original.kind in RDS_FAMILIES else "VolumeSize"
        if result.get(size) != snapshot.get(size) or (encrypted and not is_encrypted(original.kind, result)):
            self.discard(original.kind, identifier)
            raise StorageError(
                f"the copy {identifier} in {self.region} differs from the original ({size} {result.get(size)} vs "
                f"{snapshot.get(size)}, encrypted {is_encrypted(original.kind, result)} vs {encrypted}): not a backup"
            )
        self.commit(original.kind, identifier, record.backup_id)
        return self.uri(identifier)

    def _copy_in_progress(self, original: BackupRecord) -> str | None:
        """Return the id of an earlier copy of `original` here that is still running or done but not yet
        committed (a rerun after a timed-out wait), or None."""
        try:
            if original.kind in RDS_FAMILIES:
                family = RDS_FAMILIES[original.kind]
                found = family.describe(self.client("rds"), original.object_name)
                candidates = [(found[family.id_field], found.get("Status", ""))]
            else:
                found = self.client("ec2").describe_snapshots(
                    OwnerIds=["self"], Filters=[{"Name": f"tag:{TAG_PENDING}", "Values": [original.backup_id]}]
                )
                candidates = [(s["SnapshotId"], s.get("State", "")) for s in found["Snapshots"]]
        except AWS_ERRORS as error:
            if error_code(error) in RDS_GONE:
                return None
            raise StorageError(f"cannot look for copies in {self.region}: {describe_error(error)}") from error
        running = [identifier for identifier, status in candidates if status not in FAILED_STATES]
        return str(running[0]) if running else None

    def _start_copy(
        self, source: SnapshotStore, original: BackupRecord, snapshot: dict[str, Any], tags: dict[str, str]
    ) -> str:
        cross_region = source.region != self.region
        key = {"KmsKeyId": self.config.kms_key_id} if self.config.kms_key_id else {}
        try:
            if original.kind in RDS_FAMILIES:
                family = RDS_FAMILIES[original.kind]
                if not family.key_encrypts_plain and not is_encrypted(original.kind, snapshot):
                    key = {}
                arguments: dict[str, Any] = {
                    f"Source{family.id_field}": snapshot[family.arn_field],
                    f"Target{family.id_field}": original.object_name,
                    "Tags": tag_list(tags),
                    **key,
                }
                if cross_region:  # boto3 then signs the PreSignedUrl AWS needs for the source region
                    arguments["SourceRegion"] = source.region
                getattr(self.client("rds"), f"copy_{family.snake}")(**arguments)
                return original.object_name
            answer = self.client("ec2").copy_snapshot(
                SourceRegion=source.region,
                SourceSnapshotId=original.object_name,
                Description=f"backup-pipelines {original.dataset} {original.partition_key} (copy)",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
                **({"Encrypted": True, **key} if key or snapshot.get("Encrypted") else {}),
            )
            return str(answer["SnapshotId"])
        except AWS_ERRORS as error:
            raise StorageError(
                f"copying {original.object_name} from {source.region} into {self.region}: {describe_error(error)}"
            ) from error
