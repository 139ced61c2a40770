"""Prune real backups in local and S3 repositories: plan, dry run, safety rules, interruption, object lock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from backup_pipelines.copies import copy_backup
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import restore_test_backup, run_backup, verify_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.repository import BackupRecord, open_repository
from backup_pipelines.repository.local import LocalRepository
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3Endpoint, manifest_dict, write_manifest

# Yesterday at noon, so that the two newest backups share a day whatever the time the suite runs (from "now" at
# 01:00, 2 and 3 hours back would be the day before, with the 1-day-old one).
NOW = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
# newest first: two that day, one the day before, one 2 days before, one 3 days before, one 10 days before
AGES = [
    timedelta(hours=2),
    timedelta(hours=3),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=3),
    timedelta(days=10),
]


def make_history(manifest: Manifest) -> list[BackupRecord]:
    records = []
    for age in reversed(AGES):
        moment = NOW - age
        record = run_backup(manifest, "app_db", f"{moment:%Y-%m-%d-%H}:00", started_at=moment).record
        copy_backup(manifest, "app_db", record)
        records.append(record)
    return list(reversed(records))  # newest first


def ids(records: list[BackupRecord]) -> set[str]:
    return {record.backup_id for record in records}


@pytest.fixture
def retention_manifest(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Manifest]:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)

    def build(**extra: Any) -> Manifest:
        data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], verification={}, **extra)
        data["datasets"]["app_db"]["retention"] = {"keep_daily": 2, "min_age": "1h"}
        return write_manifest(tmp_path / "m.yaml", data)

    return build


def test_prune_keeps_the_plan_and_the_newest_restore_tested_backup(
    retention_manifest: Callable[..., Manifest], age_keys: KeyPair
) -> None:
    manifest = retention_manifest()
    history = make_history(manifest)
    restore_test_backup(manifest, "app_db", history[4], identity=age_keys.identity)  # the 3-day-old one
    dry = prune_dataset(manifest, "app_db", dry_run=True)
    assert ids(dry.expired) == ids([history[1], history[3], history[5]])
    assert len(open_repository(manifest, "local").list_backups("app_db")) == 6  # a dry run deletes nothing

    report = prune_dataset(manifest, "app_db")
    kept = {record.backup_id: reasons for record, reasons in report.kept}
    assert kept[history[0].backup_id] == ("daily", "safety: newest backup")
    assert kept[history[2].backup_id] == ("daily",)
    assert kept[history[4].backup_id] == ("safety: newest verified backup",)
    assert report.bytes_freed == sum(r.bytes_stored for r in (history[1], history[3], history[5]))
    remaining = open_repository(manifest, "local").list_backups("app_db")
    assert ids(remaining) == ids([history[0], history[2], history[4]])
    for record in remaining:
        verify_backup(manifest, "app_db", record)
    assert prune_dataset(manifest, "app_db").expired == []  # idempotent


def test_prune_deletes_from_every_repository(
    retention_manifest: Callable[..., Manifest], s3_endpoint: S3Endpoint, bucket: str
) -> None:
    manifest = retention_manifest(s3=(s3_endpoint, bucket), repositories=["local", "s3"])
    history = make_history(manifest)
    report = prune_dataset(manifest, "app_db")
    assert set(report.deleted["local"]) == ids(report.expired) == set(report.deleted["s3"])
    for name in ("local", "s3"):
        assert ids(open_repository(manifest, name).list_backups("app_db")) == ids([history[0], history[2]])
    keys = [item["Key"] for item in s3_endpoint.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    # two backups left: the dump, its globals.sql companion and the sidecar each; nothing of the expired ones
    assert len(keys) == 6
    assert {key.rsplit("/", 1)[-1].split(".")[0] for key in keys} == ids([history[0], history[2]])
    assert report.bytes_freed == 2 * sum(r.bytes_stored for r in report.expired)


def test_an_interrupted_prune_leaves_the_rest_intact_and_the_next_run_finishes(
    retention_manifest: Callable[..., Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = retention_manifest()
    history = make_history(manifest)
    original = LocalRepository.delete
    calls = {"n": 0}

    def fail_on_second_sidecar(self: LocalRepository, path: str) -> None:
        if path.endswith(".json"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("simulated crash in the middle of a prune")
        original(self, path)

    monkeypatch.setattr(LocalRepository, "delete", fail_on_second_sidecar)
    with pytest.raises(OSError, match="simulated crash"):
        prune_dataset(manifest, "app_db")
    monkeypatch.setattr(LocalRepository, "delete", original)
    repository = open_repository(manifest, "local")
    live = repository.list_backups("app_db")
    assert ids([history[0], history[2]]) <= ids(live)
    for record in live:
        verify_backup(manifest, "app_db", record)  # every remaining backup is intact
    tombstones = [r for r in repository.list_backups("app_db", include_expiring=True) if r.expired_at]
    assert len(tombstones) == 1
    report = prune_dataset(manifest, "app_db")
    assert report.finished_interrupted == [tombstones[0].backup_id]
    assert ids(repository.list_backups("app_db", include_expiring=True)) == ids([history[0], history[2]])


def test_prune_never_deletes_an_object_under_object_lock(
    retention_manifest: Callable[..., Manifest], s3_endpoint: S3Endpoint
) -> None:
    client = s3_endpoint.client()
    client.create_bucket(Bucket="bp-locked-bucket", ObjectLockEnabledForBucket=True)
    manifest = retention_manifest(s3=(s3_endpoint, "bp-locked-bucket"), repositories=["s3"])
    history = make_history(manifest)
    locked = history[5]
    client.put_object_retention(
        Bucket="bp-locked-bucket",
        Key=f"backups/{locked.object_path}",
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": datetime.now(UTC) + timedelta(days=30)},
    )
    report = prune_dataset(manifest, "app_db")
    kept = {record.backup_id: reasons for record, reasons in report.kept}
    assert kept[locked.backup_id] == ("safety: object lock",)
    assert locked.backup_id in ids(open_repository(manifest, "s3").list_backups("app_db"))


def test_retention_job_reports_kept_and_expired_and_marks_expired_partitions(
    retention_manifest: Callable[..., Manifest],
) -> None:
    manifest = retention_manifest()
    history = make_history(manifest)
    defs = build_definitions(manifest.path)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("retention")
    dry = job.execute_in_process(
        instance=instance, run_config={"resources": {"retention": {"config": {"dry_run": True}}}}
    )
    [materialization] = dry.asset_materializations_for_node("app_db__retention")
    assert materialization.metadata["dry_run"].value is True and materialization.metadata["expired_count"].value == 4
    assert len(open_repository(manifest, "local").list_backups("app_db")) == 6

    result = job.execute_in_process(instance=instance)
    [materialization] = result.asset_materializations_for_node("app_db__retention")
    metadata = materialization.metadata
    bytes_freed, kept = metadata["bytes_freed"].value, metadata["kept"]
    assert metadata["kept_count"].value == 2 and isinstance(bytes_freed, int) and bytes_freed > 0
    assert isinstance(kept, dg.TableMetadataValue)
    assert {row.data["kept_by"] for row in kept.value.records} == {"daily, safety: newest backup", "daily"}
    observations = instance.fetch_observations(dg.AssetKey(["app_db", "backup"]), limit=10).records
    expired = {record.partition_key for record in observations}
    assert expired == {history[i].partition_key for i in (1, 3, 4, 5)} - {history[0].partition_key}
    assert all(r.asset_observation.metadata["expired"].value is True for r in observations)  # type: ignore[union-attr]


def test_cli_prune_dry_run_prints_the_plan(
    retention_manifest: Callable[..., Manifest], capsys: pytest.CaptureFixture[str]
) -> None:
    from backup_pipelines.cli import main

    manifest = retention_manifest()
    history = make_history(manifest)
    assert main(["--manifest", str(manifest.path), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "app_db: keep 2, would expire 4" in out and f"keep    {history[0].backup_id}" in out
    assert len(open_repository(manifest, "local").list_backups("app_db")) == 6
