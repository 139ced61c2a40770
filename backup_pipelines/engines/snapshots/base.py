"""RDS DB instances and EBS volumes, protected by AWS snapshots through boto3.

Backup: check the source is available, create a manual snapshot tagged with dataset and partition, wait for
AWS to report it complete, then tag it bp-id, which makes it a backup (a snapshot that fails or times out never
gets that tag and is deleted as soon as AWS allows; see `repository.aws_snapshots`).
Copies to other regions are `SnapshotStore.copy_from`. Verify: the snapshot's status, its size, and its KMS
encryption (required unless the manifest says otherwise). Restore test: restore the snapshot to a temporary
DB instance (RDS) or volume (EBS), wait until AWS reports it available, compare engine, size and encryption
with the snapshot, and delete it whatever happened; a temporary resource that cannot be deleted fails the
test loudly, naming it, because it costs money. Only AWS's own metadata is compared: reading the restored
data needs network access to the instance (or an instance to attach the volume to).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from backup_pipelines.aws import AWS_ERRORS, describe_error
from backup_pipelines.engines.base import CheckOutcome, RestoreReport
from backup_pipelines.errors import IntegrityError, StorageError
from backup_pipelines.manifest import AuroraDataset, EbsDataset, Manifest, RdsDataset
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.repository.base import BackupRecord, new_backup_id
from backup_pipelines.repository.snapshot_tags import (
    TAG_ID,
    is_encrypted,
    pending_tags,
    record_from,
    snapshot_identifier,
)

TAG_RESTORE_TEST = "bp-restore-test"
LOG = logging.getLogger("backup_pipelines")
BUSY_STATES = ("backing-up",)  # AWS is taking an automated backup or another snapshot: it will be available


def scratch_name(name: str) -> str:
    """Return a new name for a temporary resource: `bp-rt-<dataset>-<random>`, at most 63 characters."""
    return snapshot_identifier(f"rt-{name}"[:40], secrets.token_hex(4))[:63]


class SnapshotEngine:
    """What RDS and EBS share: the backup and verify flow around one snapshot."""

    kind = ""
    format = ""
    store_type = SnapshotStore
    exact_copies = True
    complete_status = ""
    size_field = ""

    def tool_versions(self, manifest: Manifest, name: str) -> dict[str, str]:
        import boto3
        import botocore

        return {"boto3": boto3.__version__, "botocore": botocore.__version__}

    def backup(
        self,
        manifest: Manifest,
        name: str,
        partition_key: str,
        stores: list[SnapshotStore],
        started_at: datetime | None,
    ) -> tuple[BackupRecord, dict[str, str]]:
        """Snapshot the source in the primary store's region and wait for it (see the module docstring)."""
        store = stores[0]
        moment = (started_at or datetime.now(UTC)).astimezone(UTC)
        backup_id = new_backup_id(moment)
        tags = pending_tags(name, partition_key, backup_id, moment)
        self.check_source(manifest, name, store)
        started = time.monotonic()
        identifier = self.create_snapshot(manifest, name, store, snapshot_identifier(name, backup_id), tags)
        try:
            store.wait_snapshot(self.kind, identifier, f"{self.kind} snapshot {identifier} of {name}")
            snapshot = store.describe_snapshot(self.kind, identifier)
            store.commit(self.kind, identifier, backup_id)
        except BaseException:
            store.discard(self.kind, identifier)
            raise
        record = replace(
            record_from(self.kind, snapshot, {**tags, TAG_ID: backup_id}),
            duration_seconds=round(time.monotonic() - started, 3),
            tool_versions=self.tool_versions(manifest, name),
        )
        return record, {store.name: store.uri(identifier)}

    def verify(self, manifest: Manifest, name: str, store: SnapshotStore, record: BackupRecord) -> dict[str, Any]:
        """Check the snapshot is complete and encrypted when required (`operations.verify_backup` compares
        each copy's size with the backup's)."""
        snapshot = store.describe(record)
        status = snapshot.get("Status") or snapshot.get("State")
        where = store.uri(record.object_name)
        if status != self.complete_status:
            raise IntegrityError(f"{where} is {status}, not {self.complete_status}")
        encrypted = is_encrypted(self.kind, snapshot)
        if self.source(manifest, name).require_encryption and not encrypted:
            raise IntegrityError(f"{where} is not encrypted (the manifest requires KMS encryption)")
        return {
            "status": status,
            "encrypted": encrypted,
            "kms_key_id": snapshot.get("KmsKeyId") or "",
            "snapshot": record.object_name,
            "region": store.region,
            "size_gib": int(snapshot.get(self.size_field, 0)),
        }

    def source(self, manifest: Manifest, name: str) -> Any:
        dataset = manifest.dataset(name)
        assert isinstance(dataset, RdsDataset | AuroraDataset | EbsDataset), f"{name} is not an AWS snapshot dataset"
        return dataset.source

    def restore_test(self, manifest: Manifest, name: str, store: SnapshotStore, record: BackupRecord) -> RestoreReport:
        """Restore to a temporary resource, compare it with the snapshot, delete it (see the module docstring)."""
        snapshot = store.describe(record)
        swept = self.sweep_leftovers(store, name, timedelta(minutes=3 * store.config.wait_minutes))
        target = scratch_name(name)
        started = time.monotonic()
        resource = self.known_resource(target)  # set before the call: a retried call may have created it
        try:
            resource = self.start_restore(manifest, name, store, record, target, {TAG_RESTORE_TEST: record.backup_id})
            self.wait_restored(store, resource)
            restore_seconds = time.monotonic() - started
            started = time.monotonic()
            restored = self.describe_restored(store, resource)
            outcomes = self.compare(snapshot, restored) + self.validate_data(manifest, name, restored)
            validation_seconds = time.monotonic() - started
        finally:
            if resource is not None:
                self.delete_restored(store, resource)
        kept = ("Engine", "EngineVersion", "AllocatedStorage", "Size", "Encrypted", "StorageEncrypted")
        stats = {key: restored[key] for key in kept if key in restored} | ({"swept_leftovers": swept} if swept else {})
        return RestoreReport(
            f"temporary {self.restored_noun} {target} (deleted)",
            restore_seconds,
            validation_seconds,
            record.bytes_raw,
            outcomes,
            stats,
        )

    def restore_to(self, manifest: Manifest, name: str, store: SnapshotStore, record: BackupRecord, target: str) -> str:
        """Restore into a new resource called `target` and leave it running; return where it is."""
        resource = self.start_restore(manifest, name, store, record, target, {"Name": target})
        self.wait_restored(store, resource)
        return f"{self.kind}://{store.region}/{resource}"

    def sweep_leftovers(self, store: SnapshotStore, name: str, older_than: timedelta) -> list[str]:
        """Delete the temporary restore-test resources of dataset `name` (tagged bp-restore-test) created more
        than `older_than` ago: a process killed mid-test leaves them running, and they cost money. Younger ones
        may belong to a test still running; ones already being deleted are left to AWS. Return the ids deleted."""
        cutoff = datetime.now(UTC) - older_than
        try:
            leftovers = [resource for resource, created in self.temporary_resources(store, name) if created < cutoff]
        except AWS_ERRORS as error:
            raise StorageError(f"cannot list temporary resources in {store.region}: {describe_error(error)}") from error
        for resource in leftovers:
            LOG.warning(f"deleting {resource} in {store.region}, left behind by an interrupted restore test of {name}")
            self.delete_restored(store, resource)
        return leftovers

    # The kind-specific parts.
    restored_noun = ""

    def temporary_resources(self, store: SnapshotStore, name: str) -> list[tuple[str, datetime]]:
        """(id, creation time) of every restore-test resource of dataset `name` in the store's region."""
        raise NotImplementedError

    def known_resource(self, target: str) -> str | None:
        """The id a restore into `target` will have, when it is known before AWS answers."""
        return None

    def check_source(self, manifest: Manifest, name: str, store: SnapshotStore) -> None:
        raise NotImplementedError

    def create_snapshot(
        self, manifest: Manifest, name: str, store: SnapshotStore, identifier: str, tags: dict[str, str]
    ) -> str:
        raise NotImplementedError

    def start_restore(
        self,
        manifest: Manifest,
        name: str,
        store: SnapshotStore,
        record: BackupRecord,
        target: str,
        tags: dict[str, str],
    ) -> str:
        """Ask AWS to restore `record` into the new resource `target`; return the resource's id."""
        raise NotImplementedError

    def wait_restored(self, store: SnapshotStore, resource: str) -> None:
        raise NotImplementedError

    def describe_restored(self, store: SnapshotStore, resource: str) -> dict[str, Any]:
        raise NotImplementedError

    def compare(self, snapshot: dict[str, Any], restored: dict[str, Any]) -> list[CheckOutcome]:
        raise NotImplementedError

    def validate_data(self, manifest: Manifest, name: str, restored: dict[str, Any]) -> list[CheckOutcome]:
        """Judge the restored data itself, where the kind can reach it (RDS with a restore_login)."""
        return []

    def delete_restored(self, store: SnapshotStore, resource: str) -> None:
        raise NotImplementedError


def _outcome(name: str, expected: Any, actual: Any) -> CheckOutcome:
    return CheckOutcome(name, expected, actual, expected == actual)
