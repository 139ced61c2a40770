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

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pymysql

from backup_pipelines.aws import AWS_ERRORS, describe_error, error_code
from backup_pipelines.engines.base import CheckOutcome, RestoreReport
from backup_pipelines.engines.validation import run_validation_queries
from backup_pipelines.errors import IntegrityError, SourceUnavailableError, StorageError
from backup_pipelines.manifest import AuroraDataset, EbsDataset, Manifest, RdsDataset, RestoreLogin, read_secret
from backup_pipelines.repository.aws_snapshots import (
    NOT_FOUND_RETRIES,
    RDS_FAMILIES,
    TAG_DATASET,
    TAG_ID,
    SnapshotStore,
    is_encrypted,
    pending_tags,
    record_from,
    snapshot_identifier,
    tag_dict,
    tag_list,
)
from backup_pipelines.repository.base import BackupRecord, new_backup_id

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


class RdsEngine(SnapshotEngine):
    """RDS DB instances: manual DB snapshots; restore tests restore a temporary instance."""

    kind = "rds"
    format = "rds-snapshot"
    complete_status = "available"
    size_field = "AllocatedStorage"
    restored_noun = "DB instance"

    def known_resource(self, target: str) -> str | None:
        return target

    def temporary_resources(self, store: SnapshotStore, name: str) -> list[tuple[str, datetime]]:
        found = []
        for page in store.client("rds").get_paginator("describe_db_instances").paginate():
            for instance in page["DBInstances"]:
                tags = tag_dict(instance.get("TagList"))
                leftover = TAG_RESTORE_TEST in tags and tags.get(TAG_DATASET) == name
                if leftover and instance.get("DBInstanceStatus") != "deleting" and "InstanceCreateTime" in instance:
                    found.append((str(instance["DBInstanceIdentifier"]), instance["InstanceCreateTime"]))
        return found

    def check_source(self, manifest: Manifest, name: str, store: SnapshotStore) -> None:
        instance = self.source(manifest, name).db_instance_identifier
        try:
            found = store.client("rds").describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"]
        except AWS_ERRORS as error:
            raise SourceUnavailableError(
                f"dataset {name}: RDS instance {instance} in {store.region}: {describe_error(error)}"
            ) from error
        status = found[0].get("DBInstanceStatus") if found else "missing"
        if found and found[0].get("DBClusterIdentifier"):
            cluster = found[0]["DBClusterIdentifier"]
            if str(found[0].get("Engine", "")).startswith("aurora"):
                advice = f"belongs to the Aurora cluster {cluster}; protect the cluster with `kind: aurora`"
            else:
                advice = f"belongs to the Multi-AZ DB cluster {cluster}, which this project does not back up"
            raise SourceUnavailableError(f"dataset {name}: {instance} {advice}")
        self.await_available(store, name, instance, status)

    def await_available(self, store: SnapshotStore, name: str, source_id: str, status: str) -> None:
        """Go on when the source is available, wait while it is busy (an automated backup or another snapshot is
        running: AWS takes none now), refuse any other state."""
        if status in BUSY_STATES:
            self.wait_source(store, source_id, status)
        elif status != "available":
            raise SourceUnavailableError(
                f"dataset {name}: {self.source_noun} {source_id} is {status}; AWS snapshots only an available one"
            )

    # What differs between an instance (here) and an Aurora cluster (AuroraEngine) around the same calls.
    source_noun = "RDS instance"
    busy_code = "InvalidDBInstanceState"

    def source_id(self, manifest: Manifest, name: str) -> str:
        return str(self.source(manifest, name).db_instance_identifier)

    def wait_source(self, store: SnapshotStore, source_id: str, status: str) -> None:
        LOG.info(f"DB instance {source_id} is {status}: waiting until it is available to snapshot it")
        store.wait(
            "rds", "db_instance_available", f"DB instance {source_id} ({status})", DBInstanceIdentifier=source_id
        )

    def create_snapshot(
        self, manifest: Manifest, name: str, store: SnapshotStore, identifier: str, tags: dict[str, str]
    ) -> str:
        family = RDS_FAMILIES[self.kind]
        source_id = self.source_id(manifest, name)
        create = getattr(store.client("rds"), f"create_{family.snake}")
        for attempt in range(2):
            try:
                create(**{family.id_field: identifier, family.source_field: source_id, "Tags": tag_list(tags)})
                return identifier
            except AWS_ERRORS as error:
                if error_code(error).startswith(f"{family.noun}AlreadyExists"):  # a retried call created it
                    return identifier
                if error_code(error) == self.busy_code and attempt == 0:  # another snapshot or backup began
                    self.wait_source(store, source_id, "busy")
                    continue
                raise StorageError(
                    f"Create{family.noun} of {source_id} in {store.region}: {describe_error(error)}"
                ) from error
        return identifier

    def start_restore(
        self,
        manifest: Manifest,
        name: str,
        store: SnapshotStore,
        record: BackupRecord,
        target: str,
        tags: dict[str, str],
    ) -> str:
        source = self.source(manifest, name)
        arguments: dict[str, Any] = {
            "DBInstanceIdentifier": target,
            "DBSnapshotIdentifier": record.object_name,
            "DBInstanceClass": source.restore_instance_class,
            "PubliclyAccessible": False,
            "MultiAZ": False,
            "DeletionProtection": False,
            "Tags": tag_list({TAG_DATASET: name, **tags}),
        }
        arguments.update(_restore_network(source, store))
        try:
            store.client("rds").restore_db_instance_from_db_snapshot(**arguments)
        except AWS_ERRORS as error:
            raise StorageError(
                f"restoring {record.object_name} to instance {target} in {store.region}: {describe_error(error)}"
            ) from error
        return target

    def wait_restored(self, store: SnapshotStore, resource: str) -> None:
        store.wait("rds", "db_instance_available", f"restored DB instance {resource}", DBInstanceIdentifier=resource)

    def describe_restored(self, store: SnapshotStore, resource: str) -> dict[str, Any]:
        found = store.client("rds").describe_db_instances(DBInstanceIdentifier=resource)["DBInstances"]
        return dict(found[0])

    def compare(self, snapshot: dict[str, Any], restored: dict[str, Any]) -> list[CheckOutcome]:
        size = restored.get("AllocatedStorage", 0)
        endpoint = restored.get("Endpoint") or {}
        return [
            _outcome("instance status", "available", restored.get("DBInstanceStatus")),
            _outcome("engine", snapshot.get("Engine"), restored.get("Engine")),
            _outcome("engine version", snapshot.get("EngineVersion"), restored.get("EngineVersion")),
            CheckOutcome(
                "allocated storage (GiB)",
                f">= {snapshot.get('AllocatedStorage')}",
                size,
                size >= snapshot.get("AllocatedStorage", 0),
            ),
            _outcome("encrypted", bool(snapshot.get("Encrypted")), bool(restored.get("StorageEncrypted"))),
            CheckOutcome("endpoint", "an address", endpoint.get("Address"), bool(endpoint.get("Address"))),
        ]

    def endpoint_of(self, restored: dict[str, Any]) -> dict[str, Any]:
        """The restored resource's address and port."""
        return dict(restored.get("Endpoint") or {})

    def validate_data(self, manifest: Manifest, name: str, restored: dict[str, Any]) -> list[CheckOutcome]:
        """Log in to the restored instance and run the dataset's validation queries (with source.restore_login)."""
        dataset = manifest.dataset(name)
        login = self.source(manifest, name).restore_login
        if login is None:
            return []
        endpoint = self.endpoint_of(restored)
        engine = str(restored.get("Engine", ""))
        try:
            connection = _connect(engine, endpoint, login, f"datasets.{name}.source.restore_login")
        except (OSError, psycopg.Error, pymysql.MySQLError) as error:
            reached = f"{endpoint.get('Address')}:{endpoint.get('Port')}"
            return [CheckOutcome("log in to the restored instance", reached, f"error: {error}".strip(), False)]
        with contextlib.closing(connection):
            outcomes = [CheckOutcome("log in to the restored instance", login.user, login.user, True)]

            def first_value(sql: str) -> Any:
                with contextlib.closing(connection.cursor()) as cursor:
                    cursor.execute(sql)
                    row = cursor.fetchone()
                    return row[0] if row else None

            return outcomes + run_validation_queries(first_value, dataset.verification, {})

    def delete_restored(self, store: SnapshotStore, resource: str) -> None:
        try:
            _delete_instance(store, resource)
        except AWS_ERRORS as error:
            if error_code(error) in INSTANCE_GONE:
                return  # the restore never created it
            raise StorageError(
                f"the temporary DB instance {resource} in {store.region} could not be deleted "
                f"({describe_error(error)}): delete it by hand, it costs money"
            ) from error
        store.wait(
            "rds", "db_instance_deleted", f"deleting temporary DB instance {resource}", DBInstanceIdentifier=resource
        )


class AuroraEngine(RdsEngine):
    """Aurora DB clusters: manual cluster snapshots; restore tests restore a temporary cluster with one instance
    (a cluster without an instance serves no connection) and delete both."""

    kind = "aurora"
    format = "aurora-snapshot"
    restored_noun = "DB cluster"

    def check_source(self, manifest: Manifest, name: str, store: SnapshotStore) -> None:
        cluster = self.source(manifest, name).db_cluster_identifier
        try:
            found = store.client("rds").describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"]
        except AWS_ERRORS as error:
            raise SourceUnavailableError(
                f"dataset {name}: Aurora cluster {cluster} in {store.region}: {describe_error(error)}"
            ) from error
        status = found[0].get("Status") if found else "missing"
        engine = str(found[0].get("Engine", "")) if found else ""
        if found and not engine.startswith("aurora"):
            raise SourceUnavailableError(
                f"dataset {name}: {cluster} is a Multi-AZ DB cluster ({engine}), not an Aurora cluster: its restore "
                "test would need a different API, which this project does not implement"
            )
        self.await_available(store, name, cluster, status)

    source_noun = "Aurora cluster"
    busy_code = "InvalidDBClusterStateFault"

    def source_id(self, manifest: Manifest, name: str) -> str:
        return str(self.source(manifest, name).db_cluster_identifier)

    def wait_source(self, store: SnapshotStore, source_id: str, status: str) -> None:
        LOG.info(f"DB cluster {source_id} is {status}: waiting until it is available")
        store.wait("rds", "db_cluster_available", f"DB cluster {source_id} ({status})", DBClusterIdentifier=source_id)

    def start_restore(
        self,
        manifest: Manifest,
        name: str,
        store: SnapshotStore,
        record: BackupRecord,
        target: str,
        tags: dict[str, str],
    ) -> str:
        source = self.source(manifest, name)
        snapshot = store.describe(record)
        rds = store.client("rds")
        cluster: dict[str, Any] = {
            "DBClusterIdentifier": target,
            "SnapshotIdentifier": record.object_name,
            "Engine": snapshot["Engine"],
            "EngineVersion": snapshot.get("EngineVersion"),
            "DeletionProtection": False,
            "Tags": tag_list({TAG_DATASET: name, **tags}),
        }
        cluster.update(_restore_network(source, store))
        try:
            rds.restore_db_cluster_from_snapshot(**{k: v for k, v in cluster.items() if v is not None})
            rds.create_db_instance(
                DBInstanceIdentifier=f"{target}-1",
                DBClusterIdentifier=target,
                Engine=snapshot["Engine"],
                DBInstanceClass=source.restore_instance_class,
                PubliclyAccessible=False,
                Tags=tag_list({TAG_DATASET: name, **tags}),
            )
        except AWS_ERRORS as error:
            raise StorageError(
                f"restoring {record.object_name} to cluster {target} in {store.region}: {describe_error(error)}"
            ) from error
        return target

    def wait_restored(self, store: SnapshotStore, resource: str) -> None:
        store.wait("rds", "db_cluster_available", f"restored DB cluster {resource}", DBClusterIdentifier=resource)
        store.wait("rds", "db_instance_available", f"instance of {resource}", DBInstanceIdentifier=f"{resource}-1")

    def describe_restored(self, store: SnapshotStore, resource: str) -> dict[str, Any]:
        return dict(store.client("rds").describe_db_clusters(DBClusterIdentifier=resource)["DBClusters"][0])

    def endpoint_of(self, restored: dict[str, Any]) -> dict[str, Any]:
        return {"Address": restored.get("Endpoint"), "Port": restored.get("Port")}

    def compare(self, snapshot: dict[str, Any], restored: dict[str, Any]) -> list[CheckOutcome]:
        members = restored.get("DBClusterMembers") or []
        return [
            _outcome("cluster status", "available", restored.get("Status")),
            _outcome("engine", snapshot.get("Engine"), restored.get("Engine")),
            _outcome("engine version", snapshot.get("EngineVersion"), restored.get("EngineVersion")),
            _outcome("encrypted", bool(snapshot.get("StorageEncrypted")), bool(restored.get("StorageEncrypted"))),
            CheckOutcome("instances", ">= 1", len(members), len(members) >= 1),
            CheckOutcome("endpoint", "an address", restored.get("Endpoint"), bool(restored.get("Endpoint"))),
        ]

    def delete_restored(self, store: SnapshotStore, resource: str) -> None:
        rds = store.client("rds")
        instance = f"{resource}-1"
        try:
            try:
                _delete_instance(store, instance, aurora_member=True)
                store.wait("rds", "db_instance_deleted", f"deleting {instance}", DBInstanceIdentifier=instance)
            except AWS_ERRORS as error:
                if error_code(error) not in INSTANCE_GONE:
                    raise
            _when_deletable(
                lambda: rds.delete_db_cluster(DBClusterIdentifier=resource, SkipFinalSnapshot=True),
                "InvalidDBClusterStateFault",
                lambda: store.wait(
                    "rds", "db_cluster_available", f"DB cluster {resource}", DBClusterIdentifier=resource
                ),
            )
        except AWS_ERRORS as error:
            if error_code(error) in ("DBClusterNotFoundFault", "DBClusterNotFound"):
                return  # the restore never created it
            raise StorageError(
                f"the temporary DB cluster {resource} in {store.region} could not be deleted "
                f"({describe_error(error)}): delete it and its instance {instance} by hand, they cost money"
            ) from error
        store.wait(
            "rds", "db_cluster_deleted", f"deleting temporary DB cluster {resource}", DBClusterIdentifier=resource
        )

    def temporary_resources(self, store: SnapshotStore, name: str) -> list[tuple[str, datetime]]:
        found = []
        for page in store.client("rds").get_paginator("describe_db_clusters").paginate():
            for cluster in page["DBClusters"]:
                tags = tag_dict(cluster.get("TagList"))
                leftover = TAG_RESTORE_TEST in tags and tags.get(TAG_DATASET) == name
                if leftover and cluster.get("Status") != "deleting" and "ClusterCreateTime" in cluster:
                    found.append((str(cluster["DBClusterIdentifier"]), cluster["ClusterCreateTime"]))
        return found


INSTANCE_GONE = ("DBInstanceNotFound", "DBInstanceNotFoundFault")


def _when_deletable(delete: Callable[[], Any], busy_code: str, wait_until_ready: Callable[[], None]) -> None:
    """Call `delete`; when AWS answers `busy_code` (the resource is still being created or modified, as after a
    restore that timed out), wait until it is ready and call it again."""
    try:
        delete()
    except AWS_ERRORS as error:
        if error_code(error) != busy_code:
            raise
        wait_until_ready()
        delete()


def _delete_instance(store: SnapshotStore, instance: str, aurora_member: bool = False) -> None:
    """Delete a temporary DB instance, without a final snapshot, once AWS allows it (an Aurora member's automated
    backups belong to its cluster, so only a standalone instance's are named)."""
    own_backups = {} if aurora_member else {"DeleteAutomatedBackups": True}
    _when_deletable(
        lambda: store.client("rds").delete_db_instance(
            DBInstanceIdentifier=instance, SkipFinalSnapshot=True, **own_backups
        ),
        "InvalidDBInstanceState",
        lambda: store.wait("rds", "db_instance_available", f"DB instance {instance}", DBInstanceIdentifier=instance),
    )


def _restore_network(source: Any, store: SnapshotStore) -> dict[str, Any]:
    """The subnet group and security groups of a restore, in the source's region only (they exist in one region)."""
    if store.region != source.region:
        return {}
    network: dict[str, Any] = {}
    if source.restore_subnet_group:
        network["DBSubnetGroupName"] = source.restore_subnet_group
    if source.restore_security_group_ids:
        network["VpcSecurityGroupIds"] = list(source.restore_security_group_ids)
    return network


def _connect(engine: str, endpoint: dict[str, Any], login: RestoreLogin, where: str) -> Any:
    """A read-only DB-API connection to a restored instance: PostgreSQL (psycopg) or MySQL/MariaDB (pymysql)."""
    password = read_secret(login.password_env, where)
    host, port = str(endpoint.get("Address")), int(endpoint.get("Port") or 0)
    if "postgres" in engine:
        return psycopg.connect(
            host=host,
            port=port,
            dbname=login.database,
            user=login.user,
            password=password,
            connect_timeout=15,
            autocommit=True,  # one failing query must not abort the others' transaction
            options=f"-c default_transaction_read_only=on -c statement_timeout={login.query_timeout_seconds * 1000}",
        )
    if "mysql" in engine or "mariadb" in engine:
        return pymysql.connect(
            host=host,
            port=port,
            database=login.database,
            user=login.user,
            password=password.encode(),  # PyMySQL would encode a str as latin-1
            charset="utf8mb4",
            connect_timeout=15,
            read_timeout=login.query_timeout_seconds,
            write_timeout=login.query_timeout_seconds,
            init_command="SET SESSION TRANSACTION READ ONLY",
        )
    raise OSError(f"validation queries support PostgreSQL, MySQL and MariaDB, not the {engine} engine")


class EbsEngine(SnapshotEngine):
    """EBS volumes: volume snapshots; restore tests create a temporary volume from the snapshot."""

    kind = "ebs"
    format = "ebs-snapshot"
    complete_status = "completed"
    size_field = "VolumeSize"
    restored_noun = "volume"

    def temporary_resources(self, store: SnapshotStore, name: str) -> list[tuple[str, datetime]]:
        filters = [{"Name": f"tag:{TAG_DATASET}", "Values": [name]}, {"Name": "tag-key", "Values": [TAG_RESTORE_TEST]}]
        pages = store.client("ec2").get_paginator("describe_volumes").paginate(Filters=filters)
        return [
            (str(volume["VolumeId"]), volume["CreateTime"])
            for page in pages
            for volume in page["Volumes"]
            if volume.get("State") != "deleting"
        ]

    def check_source(self, manifest: Manifest, name: str, store: SnapshotStore) -> None:
        self._volume(manifest, name, store)

    def _volume(self, manifest: Manifest, name: str, store: SnapshotStore) -> dict[str, Any]:
        volume = self.source(manifest, name).volume_id
        try:
            return dict(store.client("ec2").describe_volumes(VolumeIds=[volume])["Volumes"][0])
        except AWS_ERRORS as error:
            raise SourceUnavailableError(
                f"dataset {name}: EBS volume {volume} in {store.region}: {describe_error(error)}"
            ) from error

    def create_snapshot(
        self, manifest: Manifest, name: str, store: SnapshotStore, identifier: str, tags: dict[str, str]
    ) -> str:
        volume = self.source(manifest, name).volume_id
        try:
            answer = store.client("ec2").create_snapshot(
                VolumeId=volume,
                Description=f"backup-pipelines {name} {tags.get('bp-partition', '')}",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
            )
        except AWS_ERRORS as error:
            raise StorageError(f"CreateSnapshot of {volume} in {store.region}: {describe_error(error)}") from error
        return str(answer["SnapshotId"])

    def _zone(self, manifest: Manifest, name: str, store: SnapshotStore) -> str:
        source = self.source(manifest, name)
        if store.region == source.region:  # zones belong to one region: elsewhere any zone will do
            if source.restore_availability_zone:
                return str(source.restore_availability_zone)
            with contextlib.suppress(SourceUnavailableError):  # the volume may be gone (a disaster)
                return str(self._volume(manifest, name, store)["AvailabilityZone"])
        available = [{"Name": "state", "Values": ["available"]}]
        zones = store.client("ec2").describe_availability_zones(Filters=available)["AvailabilityZones"]
        return str(zones[0]["ZoneName"])

    def start_restore(
        self,
        manifest: Manifest,
        name: str,
        store: SnapshotStore,
        record: BackupRecord,
        target: str,
        tags: dict[str, str],
    ) -> str:
        source = self.source(manifest, name)
        try:
            answer = store.client("ec2").create_volume(
                SnapshotId=record.object_name,
                AvailabilityZone=self._zone(manifest, name, store),
                VolumeType=source.restore_volume_type,
                TagSpecifications=[
                    {"ResourceType": "volume", "Tags": tag_list({"Name": target, TAG_DATASET: name, **tags})}
                ],
            )
        except AWS_ERRORS as error:
            raise StorageError(
                f"creating a volume from {record.object_name} in {store.region}: {describe_error(error)}"
            ) from error
        return str(answer["VolumeId"])

    def wait_restored(self, store: SnapshotStore, resource: str) -> None:
        store.wait("ec2", "volume_available", f"restored volume {resource}", VolumeIds=[resource])

    def describe_restored(self, store: SnapshotStore, resource: str) -> dict[str, Any]:
        return dict(store.client("ec2").describe_volumes(VolumeIds=[resource])["Volumes"][0])

    def compare(self, snapshot: dict[str, Any], restored: dict[str, Any]) -> list[CheckOutcome]:
        tags = tag_dict(restored.get("Tags"))
        return [
            _outcome("volume state", "available", restored.get("State")),
            _outcome("size (GiB)", snapshot.get("VolumeSize"), restored.get("Size")),
            _outcome("encrypted", bool(snapshot.get("Encrypted")), bool(restored.get("Encrypted"))),
            _outcome("from snapshot", snapshot.get("SnapshotId"), restored.get("SnapshotId")),
            CheckOutcome("tagged", TAG_DATASET, sorted(tags), TAG_DATASET in tags),
        ]

    def delete_restored(self, store: SnapshotStore, resource: str) -> None:
        """Delete the volume CreateVolume returned. EC2 may not see a volume made a moment ago: "not found"
        is believed only after a few polls."""
        for attempt in range(NOT_FOUND_RETRIES):
            try:
                store.client("ec2").delete_volume(VolumeId=resource)
                break
            except AWS_ERRORS as error:
                if error_code(error) == "InvalidVolume.NotFound" and attempt < NOT_FOUND_RETRIES - 1:
                    time.sleep(store.config.poll_seconds)
                    continue
                if error_code(error) == "InvalidVolume.NotFound":
                    return
                raise StorageError(
                    f"the temporary volume {resource} in {store.region} could not be deleted "
                    f"({describe_error(error)}): delete it by hand, it costs money"
                ) from error
        store.wait("ec2", "volume_deleted", f"deleting temporary volume {resource}", VolumeIds=[resource])
