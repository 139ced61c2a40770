"""EBS datasets through boto3 and `s3` bucket checks (versioning, replication, Object Lock), in the core and
in Dagster.

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

from backup_pipelines.buckets import check_bucket
from backup_pipelines.copies import copy_backup
from backup_pipelines.definitions import build_definitions
from backup_pipelines.engines.snapshots import EbsEngine
from backup_pipelines.errors import SourceUnavailableError
from backup_pipelines.operations import restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import open_repository
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from tests.conftest import S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint
from tests.integration.aws_helpers import (
    DR,
    LATE,
    PRIMARY,
    aws_manifest,
    create_instance,
    kms_key,
    rds_dataset,
)


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
    assert isinstance(dr, SnapshotStore)
    copy_in_dr = dr.find_backup("data_volume", older.backup_id)
    assert copy_in_dr is not None
    restored = EbsEngine().restore_to(manifest, "data_volume", dr, copy_in_dr, "x")
    [in_dr] = s3_endpoint.client("ec2", DR).describe_volumes(VolumeIds=[restored.rsplit("/", 1)[-1]])["Volumes"]
    assert in_dr["SnapshotId"] == dr_snapshot and in_dr["AvailabilityZone"].startswith(DR)

    newer = run_backup(manifest, "data_volume", "2026-11-26", started_at=now - timedelta(days=1)).record
    copy_backup(manifest, "data_volume", newer)
    restore_test_backup(manifest, "data_volume", newer)
    pruned = prune_dataset(manifest, "data_volume")
    assert [record.backup_id for record in pruned.expired] == [older.backup_id]
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
    [status] = result.asset_materializations_for_node("backup_status")
    assert status.metadata["datasets"].value == 1 and status.metadata["buckets_failing"].value == 1
    page = (tmp_path / "reports" / "backup_status.html").read_text()
    assert "bp-dagster-unversioned" in page and "FAIL: versioning is never enabled" in page
