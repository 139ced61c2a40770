"""RDS DB instances: DB snapshots, restore tests on a temporary instance (queried with a restore_login)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pymysql

from backup_pipelines.aws import AWS_ERRORS, describe_error, error_code
from backup_pipelines.engines.base import CheckOutcome
from backup_pipelines.engines.snapshots.base import (
    BUSY_STATES,
    LOG,
    TAG_RESTORE_TEST,
    SnapshotEngine,
    _outcome,
)
from backup_pipelines.engines.validation import run_validation_queries
from backup_pipelines.errors import SourceUnavailableError, StorageError
from backup_pipelines.manifest import Manifest, RestoreLogin, read_secret
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.repository.snapshot_tags import (
    RDS_FAMILIES,
    TAG_DATASET,
    tag_dict,
    tag_list,
)


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
