"""RDS and EBS datasets through boto3 (snapshot, tag, copy to another region, verify, restore-test, retention)
and `s3` bucket checks (versioning, replication, Object Lock), in the core and in Dagster.

AWS is mocked: there is no AWS here, so moto's standalone server (the session's `s3_endpoint`, which serves
every moto service on 127.0.0.1) plays RDS, EC2 and KMS in two regions. The code under test makes the calls
real AWS needs (waiters, paginators, tags, regional KMS keys, SourceRegion for cross-region copies); moto
completes snapshots and restores at once, so the waiters succeed on their first poll.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from botocore.exceptions import ClientError

from assets.partitions import LATE_ALLOW, LATE_TAG
from backup_pipelines import aws
from backup_pipelines.buckets import check_bucket
from backup_pipelines.cli import main as cli_main
from backup_pipelines.compliance import judge
from backup_pipelines.copies import copy_backup
from backup_pipelines.definitions import build_definitions
from backup_pipelines.engines.snapshots import EbsEngine, RdsEngine
from backup_pipelines.errors import IntegrityError, SourceUnavailableError, StorageError, ValidationFailedError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import find_backup, restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import aws_snapshots, open_repository
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.runbook import restore_commands
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import MYSQL_PASSWORD_ENV, PG_PASSWORD_ENV, S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint, write_manifest

# Fixed partitions of the past: the backup asset refuses them unless the run says a late backup is meant.
LATE = {LATE_TAG: LATE_ALLOW}

PRIMARY, DR = "eu-west-1", "eu-central-1"


def kms_key(endpoint: S3Endpoint, region: str) -> str:
    return str(endpoint.client("kms", region).create_key(Description="bp test")["KeyMetadata"]["Arn"])


def aws_manifest(
    endpoint: S3Endpoint, tmp_path: Path, datasets: dict[str, Any], dr_key: str | None, **repository: Any
) -> Manifest:
    access = {
        "endpoint_url": endpoint.url,
        "access_key_id_env": S3_KEY_ENV,
        "secret_access_key_env": S3_SECRET_ENV,
        "poll_seconds": 1,
        "wait_minutes": 1,
    }
    data = {
        "partition_start": "2026-11-01",
        "repositories": {
            "snapshots": {"type": "aws_snapshots", "region": PRIMARY, **access, **repository},
            "dr": {"type": "aws_snapshots", "region": DR, "offsite": True, "kms_key_id": dr_key, **access},
        },
        "datasets": datasets,
    }
    return write_manifest(tmp_path / "aws.yaml", data)


def rds_dataset(instance: str, **source: Any) -> dict[str, Any]:
    return {
        "kind": "rds",
        "schedule": "daily",
        "rpo": "1d",
        "rto": "2h",
        "retention": {"keep_last": 1, "min_age": "1s"},
        "repositories": ["snapshots", "dr"],
        "compliance": {"media": 1},
        "source": {"db_instance_identifier": instance, "region": PRIMARY, **source},
    }


def create_instance(endpoint: S3Endpoint, name: str, kms: str | None) -> None:
    encryption = {"StorageEncrypted": True, "KmsKeyId": kms} if kms else {"StorageEncrypted": False}
    endpoint.client("rds", PRIMARY).create_db_instance(
        DBInstanceIdentifier=name,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        EngineVersion="16.3",
        AllocatedStorage=20,
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
        **encryption,
    )


def db_snapshots(endpoint: S3Endpoint, region: str, dataset: str) -> dict[str, dict[str, str]]:
    """Every manual DB snapshot of `dataset` in `region`: identifier -> tags."""
    found = {}
    for page in endpoint.client("rds", region).get_paginator("describe_db_snapshots").paginate(SnapshotType="manual"):
        for snapshot in page["DBSnapshots"]:
            tags = {tag["Key"]: tag["Value"] for tag in snapshot.get("TagList", [])}
            if tags.get("bp-dataset") == dataset:
                found[snapshot["DBSnapshotIdentifier"]] = {**tags, "KmsKeyId": snapshot.get("KmsKeyId", "")}
    return found


def test_rds_backup_copies_verifies_restore_tests_and_expires_snapshots(
    s3_endpoint: S3Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source_key, dr_key = kms_key(s3_endpoint, PRIMARY), kms_key(s3_endpoint, DR)
    create_instance(s3_endpoint, "orders-prod", source_key)
    ec2 = s3_endpoint.client("ec2", PRIMARY)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{PRIMARY}{zone}")["Subnet"]
        for i, zone in enumerate("ab")
    ]
    s3_endpoint.client("rds", PRIMARY).create_db_subnet_group(
        DBSubnetGroupName="restore-tests",
        DBSubnetGroupDescription="restore tests",
        SubnetIds=[subnet["SubnetId"] for subnet in subnets],
    )
    dataset = rds_dataset("orders-prod", restore_subnet_group="restore-tests")
    manifest = aws_manifest(s3_endpoint, tmp_path, {"orders": dataset}, dr_key)
    now = datetime.now(UTC)

    older = run_backup(manifest, "orders", "2026-11-25", started_at=now - timedelta(days=2)).record
    [(identifier, tags)] = db_snapshots(s3_endpoint, PRIMARY, "orders").items()
    assert identifier == older.object_name and identifier.startswith("bp-orders-")
    assert tags["bp-partition"] == "2026-11-25" and tags["bp-id"] == older.backup_id
    assert older.encrypted and older.bytes_raw == 20 << 30 and older.source_stats["kms_key_id"] == source_key

    locations = copy_backup(manifest, "orders", older)
    assert locations == {"snapshots": f"rds://{PRIMARY}/{identifier}", "dr": f"rds://{DR}/{identifier}"}
    copied = db_snapshots(s3_endpoint, DR, "orders")
    assert copied[identifier]["KmsKeyId"] == dr_key  # re-encrypted with the destination region's key
    assert copied[identifier]["bp-id"] == older.backup_id and copied[identifier]["bp-copy-of"].startswith("rds://")
    assert copy_backup(manifest, "orders", older) == locations  # a rerun copies nothing again
    assert len(db_snapshots(s3_endpoint, DR, "orders")) == 1

    checks = verify_backup(manifest, "orders", older)
    assert [(c.repository, c.archive["status"], c.archive["encrypted"]) for c in checks] == [
        ("snapshots", "available", True),
        ("dr", "available", True),
    ]
    assert checks[1].archive["kms_key_id"] == dr_key

    report = restore_test_backup(manifest, "orders", older)
    assert not report.failures and {o.name for o in report.outcomes} >= {"engine", "encrypted", "instance status"}
    dr = open_repository(manifest, "dr")  # the primary region lost: restore from the copy, without its subnet group
    where = RdsEngine().restore_to(manifest, "orders", dr, dr.find_backup("orders", older.backup_id), "orders-dr")
    assert where == f"rds://{DR}/orders-dr"
    [in_dr] = s3_endpoint.client("rds", DR).describe_db_instances(DBInstanceIdentifier="orders-dr")["DBInstances"]
    assert in_dr["StorageEncrypted"] and in_dr["KmsKeyId"] == dr_key
    instances = s3_endpoint.client("rds", PRIMARY).describe_db_instances()["DBInstances"]
    assert [i["DBInstanceIdentifier"] for i in instances if i["DBInstanceIdentifier"].startswith("bp-rt-")] == []
    for repository in ("snapshots", "dr"):
        assert open_repository(manifest, repository).restore_tested("orders") == {older.backup_id}

    newer = run_backup(manifest, "orders", "2026-11-26", started_at=now - timedelta(days=1)).record
    copy_backup(manifest, "orders", newer)
    restore_test_backup(manifest, "orders", newer)  # else the safety rule keeps the newest restore-tested one
    assert judge(manifest, "orders", list(locations)).passed  # source + 2 snapshots, 1 off-site, media 1 asked
    report = prune_dataset(manifest, "orders")
    assert [record.backup_id for record in report.expired] == [older.backup_id]
    assert report.deleted == {"snapshots": [older.backup_id], "dr": [older.backup_id]}
    for region in (PRIMARY, DR):
        assert list(db_snapshots(s3_endpoint, region, "orders")) == [newer.object_name]
    assert find_backup(manifest, "orders").backup_id == newer.backup_id

    commands = restore_commands(open_repository(manifest, "dr"), newer, "orders_restored")
    assert f"--region {DR}" in commands[1] and f"--db-snapshot-identifier {newer.object_name}" in commands[1]

    manifest_file = str(tmp_path / "aws.yaml")
    assert cli_main(["--manifest", manifest_file, "list", "orders"]) == 0
    listed = capsys.readouterr().out
    assert f"rds://{PRIMARY}/{newer.object_name}" in listed and f"rds://{DR}/{newer.object_name}" in listed
    assert cli_main(["--manifest", manifest_file, "restore", "orders", "--database", "orders-restored"]) == 0
    assert f"to rds://{PRIMARY}/orders-restored" in capsys.readouterr().out
    rds = s3_endpoint.client("rds", PRIMARY)
    [restored] = rds.describe_db_instances(DBInstanceIdentifier="orders-restored")["DBInstances"]
    assert restored["DBInstanceStatus"] == "available" and restored["StorageEncrypted"]
    assert cli_main(["--manifest", manifest_file, "restore", "orders", "--database", "orders-restored"]) == 1
    assert "DBInstanceAlreadyExists" in capsys.readouterr().err  # a restore never overwrites
    assert cli_main(["--manifest", manifest_file, "runbook", "--repositories-only"]) == 0
    runbook = capsys.readouterr().out
    assert f"Encrypted to: KMS ({source_key})" in runbook and "export AWS_PROFILE" in runbook
    assert f"--db-snapshot-identifier {newer.object_name}" in runbook


def test_rds_failures_are_loud_and_leave_no_snapshot_that_looks_complete(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    create_instance(s3_endpoint, "plain-db", None)  # not encrypted
    datasets = {
        "ghost": rds_dataset("no-such-instance"),
        "plain": rds_dataset("plain-db"),
        "plain_ok": rds_dataset("plain-db", require_encryption=False),
    }
    manifest = aws_manifest(s3_endpoint, tmp_path, datasets, dr_key=kms_key(s3_endpoint, DR))

    with pytest.raises(SourceUnavailableError, match="no-such-instance"):
        run_backup(manifest, "ghost", "2026-11-25")
    assert db_snapshots(s3_endpoint, PRIMARY, "ghost") == {}

    plain = run_backup(manifest, "plain", "2026-11-25").record
    assert not plain.encrypted
    with pytest.raises(IntegrityError, match="not encrypted"):
        verify_backup(manifest, "plain", plain)
    ok = run_backup(manifest, "plain_ok", "2026-11-25").record
    copy_backup(manifest, "plain_ok", ok)  # the copy repository's key encrypts the copy: more is fine
    assert [c.archive["encrypted"] for c in verify_backup(manifest, "plain_ok", ok)] == [False, True]

    key = kms_key(s3_endpoint, PRIMARY)
    create_instance(s3_endpoint, "secret-db", key)
    unchecked = rds_dataset("secret-db", require_encryption=False)  # so the manifest cannot see the key is missing
    manifest = aws_manifest(s3_endpoint, tmp_path, {"secret": unchecked}, dr_key=None)
    record = run_backup(manifest, "secret", "2026-11-25").record
    with pytest.raises(StorageError, match=r"repositories\.dr\.kms_key_id is needed"):
        copy_backup(manifest, "secret", record)
    assert db_snapshots(s3_endpoint, DR, "secret") == {}
    with pytest.raises(StorageError, match="missing from dr"):
        verify_backup(manifest, "secret", record)


def test_ebs_snapshot_lifecycle(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    source_key, dr_key = kms_key(s3_endpoint, PRIMARY), kms_key(s3_endpoint, DR)
    ec2 = s3_endpoint.client("ec2", PRIMARY)
    volume = ec2.create_volume(AvailabilityZone=f"{PRIMARY}b", Size=8, Encrypted=True, KmsKeyId=source_key)["VolumeId"]
    dataset = {**rds_dataset(""), "kind": "ebs", "source": {"volume_id": volume, "region": PRIMARY}}
    manifest = aws_manifest(s3_endpoint, tmp_path, {"data_volume": dataset}, dr_key)
    now = datetime.now(UTC)

    older = run_backup(manifest, "data_volume", "2026-11-25", started_at=now - timedelta(days=2)).record
    assert older.object_name.startswith("snap-") and older.bytes_raw == 8 << 30
    snapshot = ec2.describe_snapshots(SnapshotIds=[older.object_name])["Snapshots"][0]
    tags = {tag["Key"]: tag["Value"] for tag in snapshot["Tags"]}
    assert tags["bp-dataset"] == "data_volume" and tags["bp-partition"] == "2026-11-25"

    locations = copy_backup(manifest, "data_volume", older)
    dr_snapshot = locations["dr"].rsplit("/", 1)[-1]
    assert dr_snapshot != older.object_name  # EBS gives the copy its own id; the bp-id tag is the identity
    described = s3_endpoint.client("ec2", DR).describe_snapshots(SnapshotIds=[dr_snapshot])["Snapshots"][0]
    assert described["Encrypted"] and described["KmsKeyId"] == dr_key

    checks = verify_backup(manifest, "data_volume", older)
    assert [c.uri for c in checks] == list(locations.values())
    report = restore_test_backup(manifest, "data_volume", older)
    assert not report.failures and "volume" in report.target
    left = ec2.describe_volumes(Filters=[{"Name": "tag:bp-restore-test", "Values": [older.backup_id]}])["Volumes"]
    assert left == []  # the temporary volume is deleted
    for repository in ("snapshots", "dr"):  # the copy has its own snapshot id: it is tagged too
        assert open_repository(manifest, repository).restore_tested("data_volume") == {older.backup_id}
    dr = open_repository(manifest, "dr")
    restored = EbsEngine().restore_to(manifest, "data_volume", dr, dr.find_backup("data_volume", older.backup_id), "x")
    [in_dr] = s3_endpoint.client("ec2", DR).describe_volumes(VolumeIds=[restored.rsplit("/", 1)[-1]])["Volumes"]
    assert in_dr["SnapshotId"] == dr_snapshot and in_dr["AvailabilityZone"].startswith(DR)

    newer = run_backup(manifest, "data_volume", "2026-11-26", started_at=now - timedelta(days=1)).record
    copy_backup(manifest, "data_volume", newer)
    restore_test_backup(manifest, "data_volume", newer)
    report = prune_dataset(manifest, "data_volume")
    assert [record.backup_id for record in report.expired] == [older.backup_id]
    with pytest.raises(ClientError, match=r"InvalidSnapshot\.NotFound"):
        ec2.describe_snapshots(SnapshotIds=[older.object_name])
    with pytest.raises(ClientError, match=r"InvalidSnapshot\.NotFound"):
        s3_endpoint.client("ec2", DR).describe_snapshots(SnapshotIds=[dr_snapshot])
    assert [r.backup_id for r in open_repository(manifest, "dr").list_backups("data_volume")] == [newer.backup_id]

    leftover = ec2.create_volume(
        SnapshotId=newer.object_name,
        AvailabilityZone=f"{PRIMARY}b",
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": [{"Key": "bp-dataset", "Value": "data_volume"}, {"Key": "bp-restore-test", "Value": "x"}],
            }
        ],
    )["VolumeId"]
    primary = open_repository(manifest, "snapshots")
    assert isinstance(primary, SnapshotStore)
    assert EbsEngine().sweep_leftovers(primary, "data_volume", timedelta(0)) == [leftover]
    assert ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [leftover]}])["Volumes"] == []

    ec2.delete_volume(VolumeId=volume)
    with pytest.raises(SourceUnavailableError, match=volume):
        run_backup(manifest, "data_volume", "2026-11-27")
    assert os.environ[S3_KEY_ENV]  # credentials came from the variables the manifest names


def bucket_dataset(endpoint: S3Endpoint, bucket: str, **rules: Any) -> dict[str, Any]:
    source = {"bucket": bucket, "region": "us-east-1", "endpoint_url": endpoint.url, **rules}
    return {"kind": "s3", "source": {**source, "access_key_id_env": S3_KEY_ENV, "secret_access_key_env": S3_SECRET_ENV}}


def test_bucket_checks_find_missing_versioning_replication_and_object_lock(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    s3 = s3_endpoint.client()
    s3.create_bucket(Bucket="bp-watched-uploads")
    s3.create_bucket(Bucket="bp-watched-replica")
    s3.create_bucket(Bucket="bp-watched-locked", ObjectLockEnabledForBucket=True)
    datasets = {
        "uploads": bucket_dataset(s3_endpoint, "bp-watched-uploads", require_replication=True),
        "locked": bucket_dataset(s3_endpoint, "bp-watched-locked", require_object_lock=True),
        "gone": bucket_dataset(s3_endpoint, "bp-watched-never-created"),
    }
    manifest = aws_manifest(s3_endpoint, tmp_path, datasets, dr_key=None)
    assert manifest.active_datasets() == {} and list(manifest.watched_buckets()) == ["uploads", "locked", "gone"]

    def verdicts(name: str) -> dict[str, bool]:
        return {finding.rule: finding.passed for finding in check_bucket(manifest, name)}

    assert verdicts("uploads") == {"versioning_enabled": False, "replication_enabled": False}
    assert "never enabled" in check_bucket(manifest, "uploads")[0].description
    s3.put_bucket_versioning(Bucket="bp-watched-uploads", VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket="bp-watched-replica", VersioningConfiguration={"Status": "Enabled"})
    assert verdicts("uploads") == {"versioning_enabled": True, "replication_enabled": False}
    s3.put_bucket_replication(
        Bucket="bp-watched-uploads",
        ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/replication",
            "Rules": [
                {
                    "ID": "all",
                    "Priority": 1,
                    "Status": "Enabled",
                    "Filter": {},
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "Destination": {"Bucket": "arn:aws:s3:::bp-watched-replica"},
                }
            ],
        },
    )
    [_, replication] = check_bucket(manifest, "uploads")
    assert replication.passed and replication.details["destinations"] == ["arn:aws:s3:::bp-watched-replica"]
    assert verdicts("locked") == {"versioning_enabled": True, "object_lock_enabled": True}  # lock turns it on
    assert verdicts("gone") == {"versioning_enabled": False}

    s3.put_bucket_versioning(Bucket="bp-watched-uploads", VersioningConfiguration={"Status": "Suspended"})
    assert "suspended" in check_bucket(manifest, "uploads")[0].description


def test_dagster_runs_rds_assets_and_bucket_checks(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    """The Dagster side of the AWS datasets, still on moto's server: the protect job snapshots, copies,
    verifies and restore-tests an RDS instance; the bucket job records a failed versioning check."""
    create_instance(s3_endpoint, "billing-prod", kms_key(s3_endpoint, PRIMARY))
    s3_endpoint.client().create_bucket(Bucket="bp-dagster-unversioned")
    datasets = {
        "billing": rds_dataset("billing-prod"),
        "exports": bucket_dataset(s3_endpoint, "bp-dagster-unversioned"),
    }
    aws_manifest(s3_endpoint, tmp_path, datasets, dr_key=kms_key(s3_endpoint, DR))
    defs = build_definitions(tmp_path / "aws.yaml")
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("protect_daily").execute_in_process(
        partition_key="2026-11-25", instance=instance, tags=LATE
    )
    assert result.success
    [backup] = result.asset_materializations_for_node("billing__backup")
    assert str(backup.metadata["snapshot_id"].value).startswith("bp-billing-")
    [copied] = result.asset_materializations_for_node("billing__copy")
    assert set(copied.metadata["locations"].value) == {"snapshots", "dr"}  # type: ignore[arg-type]
    [verified] = result.asset_materializations_for_node("billing__verify")
    assert verified.metadata["copies_verified"].value == 2
    [restored] = result.asset_materializations_for_node("billing__restore_test")
    assert restored.metadata["checks_passed"].value == restored.metadata["checks_total"].value == 6
    checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    assert checks == {"size_anomaly": True, "three_two_one": True, "restore_within_rto": True}

    result = defs.resolve_job_def("check_buckets_daily").execute_in_process(instance=instance)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.asset_key == dg.AssetKey(["exports", "bucket"]) and not evaluation.passed
    assert "overwritten and deleted objects are lost" in str(evaluation.description)

    result = defs.resolve_job_def("reports").execute_in_process(instance=instance)
    [status] = result.asset_materializations_for_node("reports__backup_status")
    assert status.metadata["datasets"].value == 1 and status.metadata["buckets_failing"].value == 1
    page = (tmp_path / "reports" / "backup_status.html").read_text()
    assert "bp-dagster-unversioned" in page and "FAIL: versioning is never enabled" in page


def test_a_snapshot_that_never_completes_is_not_a_backup_and_a_failed_restore_test_deletes_its_instance(
    s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: moto completes every snapshot and restore at once and deletes snapshots in any state,
    so what real AWS does (a snapshot stuck in `creating` that cannot be deleted yet, a restore that times
    out) is simulated by making our wait raise the error a timed-out waiter gives, and our delete do nothing."""
    create_instance(s3_endpoint, "stuck-db", kms_key(s3_endpoint, PRIMARY))
    manifest = aws_manifest(s3_endpoint, tmp_path, {"stuck": rds_dataset("stuck-db")}, kms_key(s3_endpoint, DR))

    def timed_out(self: Any, store_or_kind: Any, resource: str, *what: str) -> None:
        raise StorageError(f"{resource} did not finish (waiter) within 1 min: Max attempts exceeded")

    monkeypatch.setattr(SnapshotStore, "wait_snapshot", timed_out)
    with pytest.raises(StorageError, match="did not finish"):
        run_backup(manifest, "stuck", "2026-11-25")
    assert db_snapshots(s3_endpoint, PRIMARY, "stuck") == {}  # deleted

    monkeypatch.setattr(SnapshotStore, "discard", lambda self, kind, identifier: None)  # AWS refuses
    with pytest.raises(StorageError, match="did not finish"):
        run_backup(manifest, "stuck", "2026-11-25")
    [tags] = db_snapshots(s3_endpoint, PRIMARY, "stuck").values()
    assert "bp-id" not in tags and tags["bp-pending-id"]  # it exists, and it is not a backup:
    assert open_repository(manifest, "snapshots").list_backups("stuck") == []
    with pytest.raises(StorageError, match="no repository of stuck holds any committed backup"):
        find_backup(manifest, "stuck")
    monkeypatch.undo()

    record = run_backup(manifest, "stuck", "2026-11-25").record
    monkeypatch.setattr(SnapshotStore, "wait_snapshot", timed_out)
    monkeypatch.setattr(SnapshotStore, "discard", lambda self, kind, identifier: None)
    with pytest.raises(StorageError, match="did not finish"):
        copy_backup(manifest, "stuck", record)  # the copy is started, its wait times out
    monkeypatch.undo()
    assert open_repository(manifest, "dr").list_backups("stuck") == []
    assert copy_backup(manifest, "stuck", record)["dr"] == f"rds://{DR}/{record.object_name}"  # waits for it
    assert [tags["bp-id"] for tags in db_snapshots(s3_endpoint, DR, "stuck").values()] == [record.backup_id]

    monkeypatch.setattr(RdsEngine, "wait_restored", timed_out)
    with pytest.raises(StorageError, match="did not finish"):
        restore_test_backup(manifest, "stuck", record)
    instances = s3_endpoint.client("rds", PRIMARY).describe_db_instances()["DBInstances"]
    assert [i["DBInstanceIdentifier"] for i in instances if i["DBInstanceIdentifier"].startswith("bp-rt-")] == []
    assert open_repository(manifest, "snapshots").restore_tested("stuck") == set()
    monkeypatch.undo()

    # A process killed mid-test leaves its temporary instance running: the next restore test sweeps old ones.
    rds = s3_endpoint.client("rds", PRIMARY)
    for identifier, tags in (
        ("bp-rt-stuck-killed", {"bp-dataset": "stuck", "bp-restore-test": record.backup_id}),
        ("stuck-restored-by-hand", {"bp-dataset": "stuck", "Name": "stuck-restored-by-hand"}),  # a real restore
    ):
        rds.restore_db_instance_from_db_snapshot(
            DBInstanceIdentifier=identifier,
            DBSnapshotIdentifier=record.object_name,
            DBInstanceClass="db.t3.micro",
            Tags=[{"Key": key, "Value": value} for key, value in tags.items()],
        )
    store = open_repository(manifest, "snapshots")
    assert isinstance(store, SnapshotStore)
    report = restore_test_backup(manifest, "stuck", record)
    assert "swept_leftovers" not in report.restored_stats  # younger than 3x wait_minutes: maybe still running
    assert RdsEngine().sweep_leftovers(store, "stuck", timedelta(0)) == ["bp-rt-stuck-killed"]
    remaining = {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
    assert "bp-rt-stuck-killed" not in remaining and "stuck-restored-by-hand" in remaining


def test_an_instance_busy_backing_up_is_waited_for_then_snapshot(
    s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: moto's instances are always `available`, so a botocore after-call hook makes the first
    two DescribeDBInstances answers say `backing-up`, as AWS does during the automated backup window."""
    create_instance(s3_endpoint, "busy-db", kms_key(s3_endpoint, PRIMARY))
    manifest = aws_manifest(s3_endpoint, tmp_path, {"busy": rds_dataset("busy-db")}, kms_key(s3_endpoint, DR))
    answers: list[str] = []

    def backing_up_twice(parsed: dict[str, Any], **_: Any) -> None:
        for instance in parsed.get("DBInstances", []):
            if len(answers) < 2:
                instance["DBInstanceStatus"] = "backing-up"
            answers.append(instance["DBInstanceStatus"])

    on_rds_answers(monkeypatch, "DescribeDBInstances", backing_up_twice)
    record = run_backup(manifest, "busy", "2026-11-25").record
    assert answers == ["backing-up", "backing-up", "available"]  # checked, waited (one more poll), then taken
    assert [tags["bp-id"] for tags in db_snapshots(s3_endpoint, PRIMARY, "busy").values()] == [record.backup_id]


def on_rds_answers(monkeypatch: pytest.MonkeyPatch, operation: str, handler: Any, moment: str = "after-call") -> None:
    """Run `handler` on every answer to (with "before-call": every request of) the RDS `operation` our clients
    make (a botocore event hook): how moto is made to answer as AWS would in states moto cannot reach, and how
    a request is inspected."""
    real_make_client = aws.make_client

    def make_client(*arguments: Any, **keywords: Any) -> Any:
        made = real_make_client(*arguments, **keywords)
        made.meta.events.register(f"{moment}.rds.{operation}", handler)
        return made

    monkeypatch.setattr(aws_snapshots, "make_client", make_client)


def redirect_restored_endpoints(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """Make DescribeDBInstances answer 127.0.0.1:`port` as the endpoint of every temporary bp-rt- instance."""

    def local_endpoint(parsed: dict[str, Any], **_: Any) -> None:
        for instance in parsed.get("DBInstances", []):
            if instance["DBInstanceIdentifier"].startswith("bp-rt-"):
                instance["Endpoint"] = {"Address": "127.0.0.1", "Port": port}

    on_rds_answers(monkeypatch, "DescribeDBInstances", local_endpoint)


def test_rds_restore_tests_log_in_and_run_the_validation_queries(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's restored instances have an endpoint nobody answers on, so a botocore after-call hook points the
    temporary instance's endpoint at the session's real PostgreSQL server (holding the sample database `app`):
    the login and the validation queries then run for real."""
    create_instance(s3_endpoint, "app-db", kms_key(s3_endpoint, PRIMARY))
    login = {"database": "app", "user": postgres.user, "password_env": PG_PASSWORD_ENV}
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
    s3_endpoint.client("rds", PRIMARY).create_db_instance(
        DBInstanceIdentifier="shop-db",
        DBInstanceClass="db.t3.micro",
        Engine="mariadb",
        EngineVersion="10.11.6",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="not-a-real-password",
    )
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
