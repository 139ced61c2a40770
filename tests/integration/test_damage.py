"""Fault runs against real PostgreSQL, local repositories and moto's S3: leftovers are cleaned, one damaged
sidecar or one missing bucket harms nothing else, restores leave whole files or none."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.cli import main
from backup_pipelines.crypto import KeyPair
from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import find_backup, restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import BackupRecord, new_backup_id, open_repository
from backup_pipelines.repository.inventory import EMPTY_FOLDER, NO_SIDECAR, PARTIAL, UNFINISHED_UPLOAD
from backup_pipelines.repository.local import LocalRepository
from backup_pipelines.runbook import measured_from_repositories
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3Endpoint, manifest_dict, write_manifest

HEALTHY, DAMAGED = "2026-11-20-05:00", "2026-11-20-06:00"


@pytest.fixture
def make_manifest(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Manifest]:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)

    def build(**extra: Any) -> Manifest:
        data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], verification={}, **extra)
        data["datasets"]["app_db"]["retention"] = {"keep_last": 5}
        return write_manifest(tmp_path / "m.yaml", data)

    return build


def make_old(path: Path, hours: float = 48) -> None:
    moment = time.time() - hours * 3600
    os.utime(path, (moment, moment))


def cli(manifest: Manifest, *arguments: str) -> int:
    return main(["--manifest", str(manifest.path), *arguments])


def test_leftovers_are_listed_by_a_dry_run_and_removed_by_prune_only_once_old(
    make_manifest: Callable[..., Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_manifest()
    backup = run_backup(manifest, "app_db", HEALTHY).record
    root = Path(manifest.repositories["local"].path)  # type: ignore[union-attr]
    folder = root / backup.directory
    killed = folder / f"{new_backup_id()}.dump.zst.age.partial-0a1b2c3d"  # a killed step's temporary file
    killed.write_bytes(b"k" * 63_000)
    unsidecarred = new_backup_id()  # the disk filled while its sidecar was written
    (folder / f"{unsidecarred}.dump.zst.age").write_bytes(b"o" * 5_000)
    (folder / f"{unsidecarred}.globals.sql.zst.age").write_bytes(b"g" * 700)
    tombstone = folder / f"{backup.backup_id}.json.partial-1a2b3c4d"  # an interrupted tombstone write
    tombstone.write_bytes(b"{")
    empty = root / "app_db" / "2026-11-19-05:00"
    empty.mkdir()
    young = folder / f"{new_backup_id()}.dump.zst.age.partial-9f9f9f9f"  # a backup running right now
    young.write_bytes(b"r" * 100)
    old = [killed, folder / f"{unsidecarred}.dump.zst.age", folder / f"{unsidecarred}.globals.sql.zst.age"]
    for path in [*old, tombstone, empty]:
        make_old(path)

    dry = prune_dataset(manifest, "app_db", dry_run=True)
    found = {(item.kind, Path(item.uri).name): item.size for _, item in dry.leftovers}
    assert found == {
        (PARTIAL, killed.name): 63_000,
        (NO_SIDECAR, f"{unsidecarred}.dump.zst.age"): 5_000,
        (NO_SIDECAR, f"{unsidecarred}.globals.sql.zst.age"): 700,
        (PARTIAL, tombstone.name): 1,
        (EMPTY_FOLDER, empty.name): 0,
    }
    assert dry.bytes_freed == 63_000 + 5_000 + 700 + 1 and killed.exists()
    assert cli(manifest, "prune", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would free 68,701 bytes" in out and f"remove  partial           {killed}  63,000 bytes" in out

    report = prune_dataset(manifest, "app_db")
    assert len(report.leftovers) == 5 and report.bytes_freed == 68_701
    assert not any(path.exists() for path in [*old, tombstone, empty])
    assert young.exists()  # younger than the safe age: may belong to a running backup
    assert prune_dataset(manifest, "app_db", leftover_age=timedelta(0)).leftovers[0][1].uri == str(young)
    assert open_repository(manifest, "local").list_backups("app_db") == [backup]
    verify_backup(manifest, "app_db", backup)


def test_s3_unfinished_uploads_and_objects_without_sidecar_are_leftovers(
    make_manifest: Callable[..., Manifest], s3_endpoint: S3Endpoint, bucket: str
) -> None:
    manifest = make_manifest(s3=(s3_endpoint, bucket), repositories=["s3"])
    backup = run_backup(manifest, "app_db", HEALTHY).record
    client = s3_endpoint.client()
    stale_key = f"backups/app_db/{HEALTHY}/{new_backup_id()}.dump.zst.age"
    upload = client.create_multipart_upload(Bucket=bucket, Key=stale_key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=stale_key, UploadId=upload, PartNumber=1, Body=b"p" * 1234)
    orphan_key = f"backups/app_db/{HEALTHY}/{new_backup_id()}.dump.zst.age"
    client.put_object(Bucket=bucket, Key=orphan_key, Body=b"o" * 321)

    assert prune_dataset(manifest, "app_db", dry_run=True).leftovers == []  # all younger than 24 h
    dry = prune_dataset(manifest, "app_db", dry_run=True, leftover_age=timedelta(0))
    found = {(item.kind, item.path): item.size for _, item in dry.leftovers}
    assert found == {
        (UNFINISHED_UPLOAD, stale_key.removeprefix("backups/")): 1234,
        (NO_SIDECAR, orphan_key.removeprefix("backups/")): 321,
    }
    assert all(f"s3://{bucket}/backups/app_db/" in item.uri for _, item in dry.leftovers)
    assert dry.bytes_freed == 1234 + 321
    prune_dataset(manifest, "app_db", leftover_age=timedelta(0))
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = {item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert orphan_key not in keys and f"backups/{backup.sidecar_path}" in keys
    verify_backup(manifest, "app_db", backup)


def damage(manifest: Manifest, record: BackupRecord, content: bytes | None) -> Path:
    root = Path(manifest.repositories["local"].path)  # type: ignore[union-attr]
    sidecar = root / record.sidecar_path
    sidecar.write_bytes(sidecar.read_bytes()[:200] if content is None else content)
    return sidecar


@pytest.mark.parametrize("content", [None, b"{}"], ids=["truncated", "empty-object"])
def test_a_damaged_sidecar_leaves_every_other_backup_usable(
    make_manifest: Callable[..., Manifest],
    age_keys: KeyPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
) -> None:
    manifest = make_manifest()
    healthy = run_backup(manifest, "app_db", HEALTHY).record
    broken = run_backup(manifest, "app_db", DAMAGED).record
    sidecar = damage(manifest, broken, content)

    assert cli(manifest, "list") == 1
    captured = capsys.readouterr()
    assert healthy.backup_id in captured.out and "DAMAGED" in captured.out and str(sidecar) in captured.out
    assert "Traceback" not in captured.err

    assert find_backup(manifest, "app_db") == healthy  # the newest readable one
    assert cli(manifest, "restore", "app_db", "--partition", HEALTHY, "--output", str(tmp_path / "a.dump")) == 0
    assert (tmp_path / "a.dump").read_bytes()[:5] == b"PGDMP"
    verify_backup(manifest, "app_db", healthy)
    assert restore_test_backup(manifest, "app_db", healthy, identity=age_keys.identity).failures == []

    report = prune_dataset(manifest, "app_db", leftover_age=timedelta(0))
    assert [damaged.uri for _, damaged in report.damaged] == [str(sidecar)]
    assert report.leftovers == []  # the object of a damaged sidecar is never taken for a leftover
    root = Path(manifest.repositories["local"].path)  # type: ignore[union-attr]
    assert (root / broken.object_path).exists() and sidecar.exists()
    assert cli(manifest, "prune", "--dry-run") == 1
    assert "DAMAGED sidecar" in capsys.readouterr().out
    assert "DAMAGED" in measured_from_repositories(manifest)["app_db"].problems[0]


def test_a_missing_bucket_still_lists_the_local_copies_and_exits_1(
    make_manifest: Callable[..., Manifest], s3_endpoint: S3Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_manifest(s3=(s3_endpoint, "bp-no-such-bucket"), repositories=["local", "s3"])
    backup = run_backup(manifest, "app_db", HEALTHY).record
    assert cli(manifest, "list") == 1
    out = capsys.readouterr().out
    assert backup.backup_id in out
    assert "UNREACHABLE repository s3" in out and "NoSuchBucket" in out
    assert cli(manifest, "runbook", "--repositories-only") == 1
    captured = capsys.readouterr()
    assert backup.backup_id in captured.out and "repository s3 is unreachable" in captured.out
    assert find_backup(manifest, "app_db") == backup


def test_list_marks_a_backup_whose_object_was_deleted(
    make_manifest: Callable[..., Manifest], s3_endpoint: S3Endpoint, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from backup_pipelines.copies import copy_backup

    manifest = make_manifest(s3=(s3_endpoint, bucket), repositories=["local", "s3"])
    backup = run_backup(manifest, "app_db", HEALTHY).record
    copy_backup(manifest, "app_db", backup)
    s3_endpoint.client().delete_object(Bucket=bucket, Key=f"backups/{backup.object_path}")
    assert cli(manifest, "list") == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if backup.backup_id in line]
    assert len(lines) == 2 and "MISSING" not in lines[0]
    assert f"MISSING: s3://{bucket}/backups/{backup.object_path}" in lines[1]


def test_restore_output_never_overwrites_and_a_failed_restore_leaves_no_file(
    make_manifest: Callable[..., Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_manifest()
    backup = run_backup(manifest, "app_db", HEALTHY).record
    existing = tmp_path / "existing.dump"
    existing.write_bytes(b"precious")
    assert cli(manifest, "restore", "app_db", "--output", str(existing)) == 1
    assert "already exists" in capsys.readouterr().err and existing.read_bytes() == b"precious"

    root = Path(manifest.repositories["local"].path)  # type: ignore[union-attr]
    stored = root / backup.object_path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    assert cli(manifest, "restore", "app_db", "--output", str(out_folder / "app.dump")) == 1
    assert list(out_folder.iterdir()) == []  # neither the file nor its temporary name


def test_a_failed_sidecar_write_removes_the_backups_objects(
    make_manifest: Callable[..., Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_manifest()
    original = LocalRepository.put_bytes

    def disk_full_at_the_sidecar(self: LocalRepository, path: str, data: bytes) -> None:
        if path.endswith(".json"):
            raise StorageError(f"cannot write {path}: No space left on device")
        original(self, path, data)

    monkeypatch.setattr(LocalRepository, "put_bytes", disk_full_at_the_sidecar)
    with pytest.raises(StorageError, match="No space left"):
        run_backup(manifest, "app_db", HEALTHY)
    root = Path(manifest.repositories["local"].path)  # type: ignore[union-attr]
    assert [path for path in root.rglob("*") if path.is_file()] == []  # the dump and its globals.sql companion


def test_an_s3_upload_error_names_the_key_once(s3_endpoint: S3Endpoint, bucket: str) -> None:
    from backup_pipelines.repository.s3 import S3ObjectWriter, S3Repository

    client = s3_endpoint.client()
    repository = S3Repository("s3", bucket, "backups", client, part_size=5 << 20)
    writer = S3ObjectWriter(repository, "backups/app_db/p/x.dump.zst")
    writer.write(b"x" * (5 << 20))  # starts the multipart upload
    client.abort_multipart_upload(Bucket=bucket, Key="backups/app_db/p/x.dump.zst", UploadId=writer.upload_id)
    with pytest.raises(StorageError) as raised:
        writer.write(b"x" * (5 << 20))
        writer.commit()
    message = str(raised.value)
    assert f"upload of s3://{bucket}/backups/app_db/p/x.dump.zst failed" in message and "backups/backups" not in message
