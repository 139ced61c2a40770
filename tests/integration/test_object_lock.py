"""S3 Object Lock on a server that enforces it (moto): locked writes, verify reports the lock, nothing early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from backup_pipelines.crypto import KeyPair
from backup_pipelines.operations import run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3Endpoint, manifest_dict, write_manifest


def test_locked_repository_writes_retained_objects_that_cannot_be_deleted_early(
    postgres: PostgresSandbox,
    s3_endpoint: S3Endpoint,
    age_keys: KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    client = s3_endpoint.client()
    client.create_bucket(Bucket="bp-object-lock", ObjectLockEnabledForBucket=True)
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, "bp-object-lock"), repositories=["s3"]
    )
    data["repositories"]["s3"]["object_lock"] = {"mode": "governance", "days": 30}
    data["datasets"]["app_db"]["retention"] = {"keep_last": 1, "min_age": "1s"}
    manifest = write_manifest(tmp_path / "m.yaml", data)
    now = datetime.now(UTC)
    older = run_backup(manifest, "app_db", "2026-11-25-01:00", started_at=now - timedelta(days=2)).record
    run_backup(manifest, "app_db", "2026-11-25-02:00", started_at=now - timedelta(days=1))

    head = client.head_object(Bucket="bp-object-lock", Key=f"backups/{older.object_path}")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"] > now + timedelta(days=29)
    [check] = verify_backup(manifest, "app_db", older)
    assert check.archive["object_lock_until"].startswith(str((now + timedelta(days=30)).date()))

    report = prune_dataset(manifest, "app_db")  # keep_last 1 would expire the older one: the lock wins
    kept = {record.backup_id: reasons for record, reasons in report.kept}
    assert report.expired == [] and kept[older.backup_id] == ("safety: object lock",)
    version = head["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        client.delete_object(Bucket="bp-object-lock", Key=f"backups/{older.object_path}", VersionId=version)
