"""What the AWS snapshot tests share: a manifest over two regions of moto's server, an RDS instance and its KMS
key, and botocore hooks that make moto answer as AWS does in states it cannot reach.

AWS is mocked: there is no AWS here, so moto's standalone server (the session's `s3_endpoint`, which serves
every moto service on 127.0.0.1) plays RDS, EC2 and KMS in two regions. The code under test makes the calls
real AWS needs (waiters, paginators, tags, regional KMS keys, SourceRegion for cross-region copies); moto
completes snapshots and restores at once, so the waiters succeed on their first poll.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assets.partitions import LATE_ALLOW, LATE_TAG
from backup_pipelines import aws
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository import aws_snapshots
from tests.conftest import S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint, write_manifest

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


def create_instance(
    endpoint: S3Endpoint, name: str, kms: str | None, engine: tuple[str, str] = ("postgres", "16.3"), user: str = "app"
) -> None:
    """Create DB instance `name` on moto's RDS of `engine` (name, version), encrypted with `kms` when given."""
    encryption = {"StorageEncrypted": True, "KmsKeyId": kms} if kms else {"StorageEncrypted": False}
    endpoint.client("rds", PRIMARY).create_db_instance(
        DBInstanceIdentifier=name,
        DBInstanceClass="db.t3.micro",
        Engine=engine[0],
        EngineVersion=engine[1],
        AllocatedStorage=20,
        MasterUsername=user,
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
