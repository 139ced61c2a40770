"""Aurora DB clusters: cluster snapshots, restore tests on a temporary cluster with one instance."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backup_pipelines.aws import AWS_ERRORS, describe_error, error_code
from backup_pipelines.engines.base import CheckOutcome
from backup_pipelines.engines.snapshots.base import (
    LOG,
    TAG_RESTORE_TEST,
    _outcome,
)
from backup_pipelines.engines.snapshots.rds import (
    INSTANCE_GONE,
    RdsEngine,
    _delete_instance,
    _restore_network,
    _when_deletable,
)
from backup_pipelines.errors import SourceUnavailableError, StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.repository.base import BackupRecord
from backup_pipelines.repository.snapshot_tags import TAG_DATASET, tag_dict, tag_list


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
