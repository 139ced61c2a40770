"""RDS and Aurora restore tests that log in to the temporary instance and run the validation queries
(PostgreSQL and MariaDB engines, served by the session's real servers), and Aurora's cluster snapshots.

AWS is mocked: there is no AWS here, so moto's standalone server (the session's `s3_endpoint`, which serves
every moto service on 127.0.0.1) plays RDS, EC2 and KMS in two regions. The code under test makes the calls
real AWS needs (waiters, paginators, tags, regional KMS keys, SourceRegion for cross-region copies); moto
completes snapshots and restores at once, so the waiters succeed on their first poll.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from backup_pipelines.copies import copy_backup
from backup_pipelines.errors import SourceUnavailableError, ValidationFailedError
from backup_pipelines.operations import restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import open_repository
from backup_pipelines.runbook import restore_commands
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import MYSQL_PASSWORD_ENV, PG_PASSWORD_ENV, S3Endpoint
from tests.integration.aws_helpers import (
    DR,
    PRIMARY,
    aws_manifest,
    create_instance,
    kms_key,
    on_rds_answers,
    rds_dataset,
    redirect_restored_endpoints,
)


def test_rds_restore_tests_log_in_and_run_the_validation_queries(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's restored instances have an endpoint nobody answers on, so a botocore after-call hook points the
    temporary instance's endpoint at the session's real PostgreSQL server (holding the sample database `app`):
    the login and the validation queries then run for real."""
    create_instance(s3_endpoint, "app-db", kms_key(s3_endpoint, PRIMARY))
    login: dict[str, object] = {"database": "app", "user": postgres.user, "password_env": PG_PASSWORD_ENV}
    queries = [
        {"name": "orders", "sql": "select count(*) from shop.orders", "expect": {"min": 1}},
        {
            "name": "no_orphans",
            "sql": "select count(*) from shop.orders where customer_id is null",
            "expect": {"equals": 0},
        },
    ]
    dataset = {**rds_dataset("app-db", restore_login=login), "verification": {"queries": queries}}
    manifest = aws_manifest(s3_endpoint, tmp_path, {"app": dataset}, kms_key(s3_endpoint, DR))

    redirect_restored_endpoints(monkeypatch, postgres.port)
    record = run_backup(manifest, "app", "2026-11-25").record
    report = restore_test_backup(manifest, "app", record)
    checks = {outcome.name: outcome for outcome in report.outcomes}
    assert checks["log in to the restored instance"].passed and checks["query orders"].actual == 2000
    assert checks["query no_orphans"].passed

    queries[1]["expect"] = {"equals": -1}
    manifest = aws_manifest(s3_endpoint, tmp_path, {"app": dataset}, kms_key(s3_endpoint, DR))
    with pytest.raises(ValidationFailedError, match=r"query no_orphans: expected = -1, restored copy has 0"):
        restore_test_backup(manifest, "app", record)
    queries[:] = [
        {"name": "missing", "sql": "select count(*) from no_such_table", "expect": {"min": 0}},
        {"name": "orders", "sql": "select count(*) from shop.orders", "expect": {"min": 1}},
        {"name": "slow", "sql": "select pg_sleep(5)::text", "expect": {"equals": ""}},
    ]
    login["query_timeout_seconds"] = 1
    manifest = aws_manifest(s3_endpoint, tmp_path, {"app": dataset}, kms_key(s3_endpoint, DR))
    with pytest.raises(ValidationFailedError, match="failed 2 of") as failed:
        restore_test_backup(manifest, "app", record)  # a failed query does not spoil the next one
    assert "no_such_table" in str(failed.value) and "statement timeout" in str(failed.value)
    assert "query orders" not in str(failed.value)
    monkeypatch.setenv(PG_PASSWORD_ENV, "wrong")
    with pytest.raises(ValidationFailedError, match="log in to the restored instance"):
        restore_test_backup(manifest, "app", record)


def test_mariadb_rds_restore_tests_run_the_validation_queries(
    mariadb: Any, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, with a MariaDB engine: the temporary instance's endpoint is the session's real MariaDB server."""
    create_instance(s3_endpoint, "shop-db", None, engine=("mariadb", "10.11.6"), user="admin")
    login = {"database": "shop", "user": mariadb.user, "password_env": MYSQL_PASSWORD_ENV}
    queries = [{"name": "orders", "sql": "select count(*) from orders", "expect": {"equals": 1000}}]
    source = {"require_encryption": False, "restore_login": login}
    dataset = {**rds_dataset("shop-db", **source), "verification": {"queries": queries}}
    manifest = aws_manifest(s3_endpoint, tmp_path, {"shop": dataset}, kms_key(s3_endpoint, DR))
    redirect_restored_endpoints(monkeypatch, mariadb.port)
    report = restore_test_backup(manifest, "shop", run_backup(manifest, "shop", "2026-11-25").record)
    assert {outcome.name: outcome.actual for outcome in report.outcomes}["query orders"] == 1000


def test_aurora_cluster_snapshot_lifecycle_with_validation_queries(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Aurora cluster on moto's server: cluster snapshot, cross-region copy with the DR key, verify, restore
    test (a temporary cluster and instance, both deleted; the queries run on the session's PostgreSQL through
    an endpoint rewrite, since moto's cluster endpoint answers nothing), retention, runbook commands."""
    source_key, dr_key = kms_key(s3_endpoint, PRIMARY), kms_key(s3_endpoint, DR)
    rds = s3_endpoint.client("rds", PRIMARY)
    rds.create_db_cluster(
        DBClusterIdentifier="ledger",
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        MasterUsername="ledger_admin",
        MasterUserPassword="not-a-real-password",
        StorageEncrypted=True,
        KmsKeyId=source_key,
    )
    rds.create_db_instance(
        DBInstanceIdentifier="ledger-1",
        DBClusterIdentifier="ledger",
        Engine="aurora-postgresql",
        DBInstanceClass="db.r6g.large",
    )
    login = {"database": "app", "user": postgres.user, "password_env": PG_PASSWORD_ENV}
    dataset = {
        **rds_dataset(""),
        "kind": "aurora",
        "source": {"db_cluster_identifier": "ledger", "region": PRIMARY, "restore_login": login},
        "verification": {
            "queries": [{"name": "orders", "sql": "select count(*) from shop.orders", "expect": {"min": 1}}]
        },
    }
    manifest = aws_manifest(s3_endpoint, tmp_path, {"ledger": dataset}, dr_key)

    def local_endpoint(parsed: dict[str, Any], **_: Any) -> None:
        for cluster in parsed.get("DBClusters", []):
            if cluster["DBClusterIdentifier"].startswith("bp-rt-"):
                cluster["Endpoint"], cluster["Port"] = "127.0.0.1", postgres.port

    on_rds_answers(monkeypatch, "DescribeDBClusters", local_endpoint)
    now = datetime.now(UTC)
    older = run_backup(manifest, "ledger", "2026-11-25", started_at=now - timedelta(days=2)).record
    assert older.kind == "aurora" and older.encrypted and older.source_stats["source"] == "ledger"
    snapshot = rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=older.object_name)["DBClusterSnapshots"][0]
    assert {tag["Key"]: tag["Value"] for tag in snapshot["TagList"]}["bp-id"] == older.backup_id

    locations = copy_backup(manifest, "ledger", older)
    dr = s3_endpoint.client("rds", DR)
    [copied] = dr.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=older.object_name)["DBClusterSnapshots"]
    assert copied["KmsKeyId"] == dr_key and locations["dr"].endswith(older.object_name)
    assert [c.archive["encrypted"] for c in verify_backup(manifest, "ledger", older)] == [True, True]

    report = restore_test_backup(manifest, "ledger", older)
    outcomes = {outcome.name: outcome for outcome in report.outcomes}
    assert not report.failures and outcomes["query orders"].actual == 2000 and "DB cluster" in report.target
    clusters = {c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]}
    assert [c for c in clusters if c.startswith("bp-rt-")] == []  # the temporary cluster is gone
    instances = {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
    assert [i for i in instances if i.startswith("bp-rt-")] == []  # and its instance

    newer = run_backup(manifest, "ledger", "2026-11-26", started_at=now - timedelta(days=1)).record
    copy_backup(manifest, "ledger", newer)
    restore_test_backup(manifest, "ledger", newer)
    assert [r.backup_id for r in prune_dataset(manifest, "ledger").expired] == [older.backup_id]
    for client in (rds, dr):
        with pytest.raises(ClientError, match="DBClusterSnapshotNotFound"):
            client.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=older.object_name)
    commands = restore_commands(open_repository(manifest, "snapshots"), newer, "ledger_restored")
    assert any("restore-db-cluster-from-snapshot" in command and newer.object_name in command for command in commands)

    member = aws_manifest(s3_endpoint, tmp_path, {"member": rds_dataset("ledger-1")}, dr_key)
    with pytest.raises(SourceUnavailableError, match=r"belongs to the Aurora cluster ledger.*kind: aurora"):
        run_backup(member, "member", "2026-11-25")


def test_aurora_refuses_multi_az_clusters_and_copies_unencrypted_snapshots_without_a_key(
    s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CopyDBClusterSnapshot refuses a KmsKeyId for an unencrypted snapshot on AWS (moto does not): a before-call
    hook inspects the request our code sends."""
    rds = s3_endpoint.client("rds", PRIMARY)
    rds.create_db_cluster(
        DBClusterIdentifier="multi-az",
        Engine="postgres",
        EngineVersion="16.3",
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
        DBClusterInstanceClass="db.m6gd.large",
        AllocatedStorage=100,
        StorageType="io1",
        Iops=1000,
    )
    rds.create_db_cluster(
        DBClusterIdentifier="plain-ledger",
        Engine="aurora-mysql",
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
        StorageEncrypted=False,
    )
    source = {"region": PRIMARY, "require_encryption": False}
    datasets = {
        name: {**rds_dataset(""), "kind": "aurora", "source": {"db_cluster_identifier": cluster, **source}}
        for name, cluster in (("multi_az", "multi-az"), ("plain", "plain-ledger"))
    }
    manifest = aws_manifest(s3_endpoint, tmp_path, datasets, kms_key(s3_endpoint, DR))
    with pytest.raises(SourceUnavailableError, match="multi-az is a Multi-AZ DB cluster"):
        run_backup(manifest, "multi_az", "2026-11-25")

    requests: list[dict[str, Any]] = []
    on_rds_answers(monkeypatch, "CopyDBClusterSnapshot", lambda params, **_: requests.append(params), "before-call")
    record = run_backup(manifest, "plain", "2026-11-25").record
    copy_backup(manifest, "plain", record)
    [request] = requests  # the serialized form: boto3 turned SourceRegion into the PreSignedUrl AWS needs
    assert "KmsKeyId" not in request["body"] and "PreSignedUrl" in request["body"]
