"""File-tree datasets with the real restic, into a local restic repository and one on the S3 test server."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.partitions import LATE_ALLOW, LATE_TAG
from backup_pipelines.definitions import build_definitions
from backup_pipelines.errors import SourceUnavailableError, ValidationFailedError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import find_backup, restore_backup, restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import ResticRepository, open_repository
from backup_pipelines.repository.restic_walk import read_walk, walk_ids
from tests.conftest import S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint, write_manifest

# Fixed partitions of the past: the backup asset refuses them unless the run says a late backup is meant.
LATE = {LATE_TAG: LATE_ALLOW}

PARTITIONS = ["2026-11-20", "2026-11-21", "2026-11-22"]


def make_tree(root: Path) -> None:
    (root / "sites").mkdir(parents=True, exist_ok=True)
    (root / "nginx.conf").write_text("worker_processes auto;\n")
    for index in range(30):
        (root / "sites" / f"site{index}.conf").write_text(f"server {{ server_name s{index}.example; }} ✓\n" * 20)
    (root / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "key.pem").chmod(0o600)
    (root / "scratch.tmp").write_text("excluded")


def files_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repository: dict[str, Any], **source: Any
) -> Manifest:
    monkeypatch.setenv("TEST_RESTIC_PASSWORD", "restic-test-password")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the walk cache stays in the test's folder
    make_tree(tmp_path / "etc")
    data = {
        "partition_start": "2026-11-01",
        "repositories": {"restic": {"type": "restic", "password_env": "TEST_RESTIC_PASSWORD", **repository}},
        "datasets": {
            "configs": {
                "kind": "files",
                "schedule": "daily",
                "rpo": "26h",
                "rto": "1h",
                "retention": {"keep_last": 1},
                "repositories": ["restic"],
                "encryption": {"enabled": False},
                "source": {"paths": ["etc"], "exclude": ["*.tmp"], "sample_files": 10, **source},
            }
        },
    }
    return write_manifest(tmp_path / "m.yaml", data)


def test_files_round_trip_incremental_with_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = files_manifest(tmp_path, monkeypatch, {"repository": "restic-repo"})
    as_root = os.geteuid() == 0  # only root can give a file away (this machine runs as root)
    if as_root:
        os.chown(tmp_path / "etc" / "key.pem", 1234, 2345)
    first = run_backup(manifest, "configs", PARTITIONS[0])
    assert first.record.source_stats["files"] == 32  # scratch.tmp is excluded
    assert first.record.source_stats["files_new"] == 32
    second = run_backup(manifest, "configs", PARTITIONS[1]).record
    assert second.source_stats["files_new"] == 0 and second.source_stats["files_changed"] == 0
    (tmp_path / "etc" / "nginx.conf").write_text("worker_processes 4;\n")
    third = run_backup(manifest, "configs", PARTITIONS[2]).record
    assert third.source_stats["files_changed"] == 1
    records = open_repository(manifest, "restic").list_backups("configs")
    assert [r.partition_key for r in records] == PARTITIONS
    [check] = verify_backup(manifest, "configs", third)
    assert check.archive["restic_check"] == "no errors found"
    report = restore_test_backup(manifest, "configs", third)
    assert [o.name for o in report.outcomes] == ["file count", "total bytes", "sample digest", "content fingerprint"]
    assert not report.failures
    restored = restore_backup(
        manifest, "configs", find_backup(manifest, "configs", PARTITIONS[0]), str(tmp_path / "out")
    )
    key = Path(restored + str(tmp_path / "etc" / "key.pem"))
    assert (
        oct(key.stat().st_mode & 0o777) == "0o600"
        and not Path(restored + str(tmp_path / "etc" / "scratch.tmp")).exists()
    )
    if as_root:  # restored as root, restic gives files back their owners
        assert (key.stat().st_uid, key.stat().st_gid) == (1234, 2345)
    assert open_repository(manifest, "restic").restore_tested("configs") == {third.backup_id}


def test_a_missing_tree_fails_and_commits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = files_manifest(tmp_path, monkeypatch, {"repository": "restic-repo"}, paths=["etc", "nowhere"])
    with pytest.raises(SourceUnavailableError, match=r"dataset configs: .*nowhere does not exist"):
        run_backup(manifest, "configs", PARTITIONS[0])
    assert open_repository(manifest, "restic").list_backups("configs") == []


def test_a_restore_that_disagrees_with_the_record_fails_with_the_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = files_manifest(tmp_path, monkeypatch, {"repository": "restic-repo"})
    record = run_backup(manifest, "configs", PARTITIONS[0]).record
    environment = {
        **os.environ,
        "RESTIC_REPOSITORY": str(tmp_path / "restic-repo"),
        "RESTIC_PASSWORD": "restic-test-password",
    }
    subprocess.run(
        ["restic", "tag", "--remove", "bp-files=32", "--add", "bp-files=40", record.object_name],
        env=environment,
        check=True,
        capture_output=True,
    )
    with pytest.raises(ValidationFailedError, match="file count: expected 40, restored copy has 32"):
        restore_test_backup(manifest, "configs", record)


def test_files_into_a_restic_repository_on_s3_with_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: S3Endpoint, bucket: str
) -> None:
    manifest = files_manifest(
        tmp_path,
        monkeypatch,
        {
            "repository": f"s3:{s3_endpoint.url}/{bucket}/restic",
            "aws_access_key_id_env": S3_KEY_ENV,
            "aws_secret_access_key_env": S3_SECRET_ENV,
        },
    )
    now = datetime.now(UTC)
    records = [
        run_backup(manifest, "configs", partition, started_at=now - timedelta(days=3 - index)).record
        for index, partition in enumerate(PARTITIONS)
    ]
    assert restore_test_backup(manifest, "configs", records[0]).failures == []
    report = prune_dataset(manifest, "configs")  # keep_last 1 + the newest restore-tested one
    assert {r.backup_id for r in report.expired} == {records[1].backup_id}
    repository = open_repository(manifest, "restic")
    left = repository.list_backups("configs")
    assert {r.backup_id for r in left} == {records[0].backup_id, records[2].backup_id}
    assert isinstance(repository, ResticRepository)  # the expired backup's walk went with it, not the others'
    assert [bool(walk_ids(repository, record.backup_id)) for record in records] == [True, False, True]


def test_files_datasets_get_the_same_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = files_manifest(tmp_path, monkeypatch, {"repository": "restic-repo"})
    result = (
        build_definitions(manifest.path)
        .resolve_job_def("protect_daily")
        .execute_in_process(partition_key=PARTITIONS[0], instance=dg.DagsterInstance.ephemeral(), tags=LATE)
    )
    assert result.success
    [backup] = result.asset_materializations_for_node("configs__backup")
    assert str(backup.metadata["location"].value).startswith("restic:")
    [restore] = result.asset_materializations_for_node("configs__restore_test")
    assert restore.metadata["checks_passed"].value == 4  # the three numbers and the content fingerprint


def test_file_tree_snapshots_are_copied_to_a_second_restic_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backup_pipelines.copies import copy_backup

    manifest = files_manifest(tmp_path, monkeypatch, {"repository": "restic-repo"})
    data = __import__("yaml").safe_load((tmp_path / "m.yaml").read_text())
    data["repositories"]["offsite"] = {
        "type": "restic",
        "repository": "restic-offsite",
        "password_env": "TEST_RESTIC_OFFSITE_PASSWORD",
        "offsite": True,
    }
    data["datasets"]["configs"]["repositories"] = ["restic", "offsite"]
    monkeypatch.setenv("TEST_RESTIC_OFFSITE_PASSWORD", "another-password")
    manifest = write_manifest(tmp_path / "m.yaml", data)
    record = run_backup(manifest, "configs", PARTITIONS[0]).record
    locations = copy_backup(manifest, "configs", record)
    assert set(locations) == {"restic", "offsite"}
    [copied] = open_repository(manifest, "offsite").list_backups("configs")
    assert copied.backup_id == record.backup_id and copied.source_stats["sample"] == record.source_stats["sample"]
    offsite = open_repository(manifest, "offsite")
    assert isinstance(offsite, ResticRepository) and read_walk(offsite, record.backup_id) is not None
    assert restore_test_backup(manifest, "configs", record).failures == []
    assert [check.repository for check in verify_backup(manifest, "configs", record)] == ["restic", "offsite"]


def test_a_repository_locked_by_another_run_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another dataset's run holds the shared repository: a `restic backup --stdin` whose input stays open holds
    its lock, so our exclusive `prune` must wait until that run ends instead of failing."""
    manifest = files_manifest(tmp_path, monkeypatch, {"repository": str(tmp_path / "repo")})
    run_backup(manifest, "configs", PARTITIONS[0])
    repository = open_repository(manifest, "restic")
    assert isinstance(repository, ResticRepository)
    environment = {**os.environ, **repository.environment}
    other = subprocess.Popen(
        ["restic", "backup", "--stdin", "--stdin-filename", "other.txt"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    locks = tmp_path / "repo" / "locks"
    try:
        while not any(locks.iterdir()):  # the other run holds its lock from here on
            assert other.poll() is None, "restic backup --stdin ended early"
            time.sleep(0.05)
        timer = threading.Timer(2.0, lambda: other.communicate(b"the other dataset\n", timeout=60))
        timer.start()
        with caplog.at_level(logging.INFO, logger="backup_pipelines"):
            repository.run("prune", timeout=300)  # exclusive: refused until the other run finishes
        timer.join()
    finally:
        other.kill()
    assert other.returncode == 0
    assert any("is locked by another run; trying again" in message for message in caplog.messages)
