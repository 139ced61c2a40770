"""RDS datasets through boto3: snapshot, tag, copy to another region, verify, restore-test, retention, the
runbook; loud failures; a snapshot that never completes; an instance busy backing up.

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

from backup_pipelines.cli import main as cli_main
from backup_pipelines.compliance import judge
from backup_pipelines.copies import copy_backup
from backup_pipelines.engines.snapshots import RdsEngine
from backup_pipelines.errors import IntegrityError, SourceUnavailableError, StorageError
from backup_pipelines.operations import find_backup, restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import open_repository
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.runbook import restore_commands
from tests.conftest import S3Endpoint
from tests.integration.aws_helpers import (
    DR,
    PRIMARY,
    aws_manifest,
    create_instance,
    db_snapshots,
    kms_key,
    on_rds_answers,
    rds_dataset,
)


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
    assert isinstance(dr, SnapshotStore)
    copy_in_dr = dr.find_backup("orders", older.backup_id)
    assert copy_in_dr is not None
    where = RdsEngine().restore_to(manifest, "orders", dr, copy_in_dr, "orders-dr")
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
    pruned = prune_dataset(manifest, "orders")
    assert [record.backup_id for record in pruned.expired] == [older.backup_id]
    assert pruned.deleted == {"snapshots": [older.backup_id], "dr": [older.backup_id]}
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
