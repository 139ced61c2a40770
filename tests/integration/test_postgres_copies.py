"""PostgreSQL backups across several repositories for real: copies to a second local or S3 repository (each
re-checked where it lands, a repository that is down failing loudly), restores that skip a lost repository,
and multipart uploads of a large backup."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_pipelines.copies import copy_backup
from backup_pipelines.crypto import KeyPair
from backup_pipelines.errors import (
    IntegrityError,
    StorageError,
)
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import (
    find_backup,
    holder_of,
    restore_backup,
    restore_test_backup,
    run_backup,
    verify_backup,
)
from backup_pipelines.repository import open_repository
from backup_pipelines.sandbox import PostgresSandbox, free_port
from tests.conftest import S3Endpoint, manifest_dict, write_manifest

PARTITION = "2026-11-20-05:00"


def test_a_copy_repository_that_is_down_fails_loudly_without_touching_the_primary(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, age_keys: KeyPair, tmp_path: Path
) -> None:
    down = S3Endpoint(f"http://127.0.0.1:{free_port()}")
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(down, "unreachable"), repositories=["local", "s3"]
    )
    manifest = write_manifest(tmp_path / "m.yaml", data)
    record = run_backup(manifest, "app_db", PARTITION).record
    with pytest.raises(StorageError, match="s3://unreachable/backups/app_db"):
        copy_backup(manifest, "app_db", record)
    primary = open_repository(manifest, "local")
    assert primary.list_backups("app_db") == [record]
    stored = (tmp_path / "repo" / record.object_path).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == record.sha256  # the primary is intact


def test_a_restore_skips_a_lost_repository_and_uses_the_next_copy(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, age_keys: KeyPair, tmp_path: Path
) -> None:
    record = run_backup(
        write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])),
        "app_db",
        PARTITION,
    ).record
    down = S3Endpoint(f"http://127.0.0.1:{free_port()}")  # the primary is gone; the local copy is left
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(down, "lost"), repositories=["s3", "local"]
    )
    manifest = write_manifest(tmp_path / "dr.yaml", data)
    assert find_backup(manifest, "app_db") == record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    restored = restore_backup(
        manifest,
        "app_db",
        record,
        str(tmp_path / "app.dump"),
        identity_file=str(tmp_path / "identity.txt"),
        raw_file=True,
    )
    assert Path(restored).stat().st_size == record.bytes_raw
    with pytest.raises(StorageError, match=r"no repository of app_db holds backup nope; unreachable: s3 \(cannot"):
        holder_of(manifest, "app_db", "nope")


def test_copies_between_two_s3_buckets_are_server_side_and_rechecked(
    postgres: PostgresSandbox, s3_endpoint: S3Endpoint, bucket: str, age_keys: KeyPair, tmp_path: Path
) -> None:
    s3_endpoint.client().create_bucket(Bucket="bp-offsite-copies")
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["s3", "offsite"]
    )
    data["repositories"]["offsite"] = {**data["repositories"]["s3"], "bucket": "bp-offsite-copies", "offsite": True}
    manifest = write_manifest(tmp_path / "m.yaml", data)
    record = run_backup(manifest, "app_db", PARTITION).record
    from backup_pipelines.copies import same_endpoint
    from backup_pipelines.repository import open_object_repository

    assert same_endpoint(open_object_repository(manifest, "s3"), open_object_repository(manifest, "offsite"))
    locations = copy_backup(manifest, "app_db", record)
    assert locations["offsite"].startswith("s3://bp-offsite-copies/backups/app_db/")
    assert copy_backup(manifest, "app_db", record) == locations  # a rerun copies nothing again
    checks = verify_backup(manifest, "app_db", record, identity=age_keys.identity)
    assert [check.repository for check in checks] == ["s3", "offsite"]


def test_a_copy_damaged_on_its_way_is_caught_and_not_committed(
    postgres: PostgresSandbox,
    s3_endpoint: S3Endpoint,
    bucket: str,
    age_keys: KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backup_pipelines.repository.s3 import S3ObjectWriter

    manifest = write_manifest(
        tmp_path / "m.yaml",
        manifest_dict(
            postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["local", "s3"]
        ),
    )
    record = run_backup(manifest, "app_db", PARTITION).record
    original = S3ObjectWriter.write

    def flip_a_byte(self: S3ObjectWriter, data: bytes) -> int:
        return original(self, bytes([data[0] ^ 0xFF]) + data[1:])

    monkeypatch.setattr(S3ObjectWriter, "write", flip_a_byte)
    with pytest.raises(IntegrityError, match="removed, not committed"):
        copy_backup(manifest, "app_db", record)
    assert open_repository(manifest, "s3").list_backups("app_db") == []
    assert s3_endpoint.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_multipart_upload_of_a_large_backup_round_trips(
    big_manifest: Callable[[list[str]], Manifest], s3_endpoint: S3Endpoint, bucket: str, age_keys: KeyPair
) -> None:
    manifest = big_manifest(["s3"])
    record = run_backup(manifest, "app_db", PARTITION).record
    assert record.bytes_stored > 10 << 20  # more than two 5 MiB parts
    head = s3_endpoint.client().head_object(Bucket=bucket, Key=f"backups/{record.object_path}")
    assert "-" in head["ETag"]  # a multipart ETag
    assert restore_test_backup(manifest, "app_db", record, identity=age_keys.identity).failures == []
