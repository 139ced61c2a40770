"""Quarantine end to end: a real PostgreSQL table loses 90 % of its rows, the next backup's size check fails, and
that backup is quarantined in every copy (local and S3) and passed over by everything that picks "the newest
backup", until an operator releases it. File trees carry the mark as restic tags."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from assets.history import backup_history, latest_backups, record_quarantine
from assets.keys import DatasetKeys
from assets.partitions import LATE_ALLOW, LATE_TAG
from assets.reports import gather_statuses
from backup_pipelines.cli import main
from backup_pipelines.copies import copy_backup
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.operations import find_backup, run_backup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.quarantine import quarantine_backup, release_backup
from backup_pipelines.repository import BackupRecord, open_repository
from backup_pipelines.runbook import measured_from_repositories, render_runbook
from backup_pipelines.sample import create_sample_database
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3Endpoint, manifest_dict, write_manifest

# Fixed partitions of the past: the backup asset refuses them unless the run says a late backup is meant.
LATE = {LATE_TAG: LATE_ALLOW}

PARTITIONS = [f"2026-11-23-{hour:02d}:00" for hour in range(6)]
REPOSITORIES = ["local", "s3"]


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def backup(defs: dg.Definitions, instance: dg.DagsterInstance, partition: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("backup_hourly").execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False, tags=LATE
    )


def size_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "size_anomaly"]
    return check


def backup_id(result: dg.ExecuteInProcessResult) -> str:
    [event] = result.asset_materializations_for_node("app_db__backup")
    return str(event.metadata["backup_id"].value)


def records(manifest: Manifest, repository: str) -> dict[str, BackupRecord]:
    return {record.backup_id: record for record in open_repository(manifest, repository).list_backups("app_db")}


def cli(manifest: Manifest, capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    status = main(["--manifest", str(manifest.path), *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_backup_after_a_90_percent_deletion_is_quarantined_everywhere_and_passed_over_until_released(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    s3_endpoint: S3Endpoint,
    bucket: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_sample_database(postgres.conninfo(), "quarantined", orders=2000)
    data = manifest_dict(
        postgres,
        tmp_path / "repo",
        [age_keys.recipient],
        database="quarantined",
        s3=(s3_endpoint, bucket),
        repositories=REPOSITORIES,
        retention={"keep_last": 2, "min_age": "1h"},
    )
    manifest = write_manifest(tmp_path / "m.yaml", data)
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()
    good = []
    for partition in PARTITIONS[:3]:
        result = backup(defs, instance, partition)
        assert result.success and size_check(result).passed
        good.append(backup_id(result))

    with psycopg.connect(postgres.conninfo("quarantined"), autocommit=True) as connection:
        connection.execute("delete from shop.orders where id > 200")  # 90 % of the rows
    damaged = backup(defs, instance, PARTITIONS[3])
    assert not damaged.success  # the blocking check stops copy and verify
    check = size_check(damaged)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    bad = backup_id(damaged)
    [event] = damaged.asset_materializations_for_node("app_db__backup")
    reason = str(event.metadata["quarantined"].value)
    assert reason.startswith("size_anomaly failed: ") and "shop.orders has 200 rows" in reason

    # committed and marked in the primary; a copy made later keeps the mark
    assert records(manifest, "local")[bad].quarantine_reason == reason
    assert bad not in records(manifest, "s3")
    copy_backup(manifest, "app_db", find_backup(manifest, "app_db", backup_id=bad))
    assert records(manifest, "s3")[bad].quarantine_reason == reason

    # list shows the mark and the reason
    status, out, _ = cli(manifest, capsys, "list", "app_db")
    lines = [line for line in out.splitlines() if bad in line]
    assert status == 0 and len(lines) == 2 and all(f"QUARANTINED: {reason}" in line for line in lines)
    assert not any("QUARANTINED" in line for line in out.splitlines() if good[2] in line)

    # the newest backup, for a restore without an id, restore-commands and the runbook, is the newest good one
    assert find_backup(manifest, "app_db").backup_id == good[2]
    with pytest.raises(StorageError, match=f"quarantined, restorable with --backup-id: {bad}"):
        find_backup(manifest, "app_db", partition_key=PARTITIONS[3])
    status, out, err = cli(manifest, capsys, "restore-commands", "app_db")
    assert status == 0 and f"backup {good[2]}" in out.splitlines()[0] and err == ""
    status, out, err = cli(manifest, capsys, "restore", "app_db", "--output", str(tmp_path / "newest.dump"))
    assert status == 0 and f"restored {good[2]}" in out and "warning" not in err
    measured = measured_from_repositories(manifest)["app_db"]
    assert measured.newest_backup is not None and measured.newest_backup.backup_id == good[2]
    runbook = render_runbook(manifest, {"app_db": measured}, 0)
    assert f"Newest backup: `{good[2]}`" in runbook and f"Quarantined, not offered above: `{bad}`" in runbook

    # restoring it takes its id and warns with the reason
    status, out, err = cli(
        manifest, capsys, "restore", "app_db", "--backup-id", bad, "--output", str(tmp_path / "bad.dump")
    )
    assert status == 0 and f"restored {bad}" in out
    assert f"warning: backup {bad} of app_db is QUARANTINED since" in err and reason in err

    # the RPO check and the dashboard take the newest good backup; the history leaves the bad one out
    latest = latest_backups(instance, ["app_db"])["app_db"]
    assert latest is not None and latest.partition == PARTITIONS[2] and latest.quarantined_newer == reason
    [rpo] = defs.resolve_job_def("watch").execute_in_process(instance=instance).get_asset_check_evaluations()
    assert rpo.passed and rpo.metadata["newest_partition"].value == PARTITIONS[2]
    assert "newer backups are quarantined" in (rpo.description or "")
    [status_now] = gather_statuses(instance, manifest)
    assert status_now.partition == PARTITIONS[2]
    [finding] = [failure for failure in status_now.failures if failure.startswith("size_anomaly check failed: ")]
    assert "90% fewer" in finding, status_now.failures  # what the blocking check found on the newest backup
    history = backup_history(instance, DatasetKeys("app_db").backup, 10)
    assert len(history) == 3 and min(m.tables["shop.orders"] for m in history) == 2000

    # so the next backup is still compared with the good ones, not with the damaged one: quarantined too
    again = backup(defs, instance, PARTITIONS[4])
    assert not size_check(again).passed and records(manifest, "local")[backup_id(again)].quarantined
    latest_again = latest_backups(instance, ["app_db"])["app_db"]
    assert latest_again is not None and latest_again.partition == PARTITIONS[2]

    # the restore drill of the damaged partition tests the newest good backup instead
    drill = defs.resolve_job_def("restore_drill_hourly").execute_in_process(
        partition_key=PARTITIONS[3], instance=instance
    )
    [tested] = drill.asset_materializations_for_node("app_db__restore_test")
    assert drill.success and tested.metadata["backup_id"].value == good[2]

    # retention: keep_last counts good backups only; a quarantined one is kept only while younger than min_age
    report = prune_dataset(manifest, "app_db", dry_run=True)
    kept = {record.backup_id: reasons for record, reasons in report.kept}
    assert kept[good[2]][:2] == ("last", "safety: newest backup") and kept[good[1]][0] == "last"
    assert kept[bad] == ("safety: younger than the minimum age",)
    later = prune_dataset(manifest, "app_db", now=measured.newest_backup.created + timedelta(hours=2), dry_run=True)
    assert {record.backup_id for record in later.expired} == {good[0], bad, backup_id(again)}

    # an operator quarantines a good backup (marked in both copies), then releases it and the damaged one
    status, out, _ = cli(manifest, capsys, "quarantine", "app_db", good[2], "--reason", "restored from it: wrong")
    assert status == 0 and "in: local, s3" in out
    assert all(records(manifest, name)[good[2]].quarantine_reason == "restored from it: wrong" for name in REPOSITORIES)
    assert find_backup(manifest, "app_db").backup_id == good[1]
    assert cli(manifest, capsys, "quarantine", "app_db", good[2], "--release")[0] == 0
    status, out, _ = cli(manifest, capsys, "quarantine", "app_db", bad, "--release")
    assert status == 0 and "released" in out
    assert not any(records(manifest, name)[bad].quarantined for name in REPOSITORIES)
    assert find_backup(manifest, "app_db").backup_id == bad  # the 90 % deletion was intended: normal again
    record_quarantine(instance, "app_db", bad, None)  # what the CLI does with $DAGSTER_HOME set
    released = latest_backups(instance, ["app_db"])["app_db"]
    assert released is not None and released.partition == PARTITIONS[3]
    assert len(backup_history(instance, DatasetKeys("app_db").backup, 10, {bad: None})) == 4


def test_the_quarantine_command_records_the_decision_in_the_dagster_instance(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    stored = run_backup(manifest, "app_db", PARTITIONS[0]).record
    status, out, _ = cli(manifest, capsys, "quarantine", "app_db", stored.backup_id, "--reason", "judged bad")
    assert status == 0 and "recorded in the Dagster instance" in out
    with dg.DagsterInstance.get() as instance:
        value = instance.run_storage.get_cursor_values({"backup_pipelines/quarantine/app_db"})
    assert json.loads(value["backup_pipelines/quarantine/app_db"]) == {stored.backup_id: "judged bad"}
    status, _, err = cli(manifest, capsys, "quarantine", "app_db", "20990101T000000Z-000000", "--reason", "x")
    assert status == 1 and "no repository of app_db holds backup 20990101T000000Z-000000" in err


def restic_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    monkeypatch.setenv("TEST_RESTIC_PASSWORD", "restic-test-password")
    monkeypatch.setenv("TEST_RESTIC_OFFSITE_PASSWORD", "another-password")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("setting = 1\n" * 50)
    restic: dict[str, Any] = {"type": "restic", "password_env": "TEST_RESTIC_PASSWORD"}
    data = {
        "partition_start": "2026-11-01",
        "repositories": {
            "restic": {**restic, "repository": str(tmp_path / "restic")},
            "offsite": {
                **restic,
                "repository": str(tmp_path / "offsite"),
                "password_env": "TEST_RESTIC_OFFSITE_PASSWORD",
                "offsite": True,
            },
        },
        "datasets": {
            "configs": {
                "kind": "files",
                "schedule": "daily",
                "rpo": "26h",
                "rto": "1h",
                "retention": {"keep_last": 1},
                "repositories": ["restic", "offsite"],
                "encryption": {"enabled": False},
                "source": {"paths": ["etc"]},
            }
        },
    }
    return write_manifest(tmp_path / "m.yaml", data)


def test_a_quarantined_file_tree_snapshot_is_tagged_in_every_restic_repository_and_copies_keep_the_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = restic_manifest(tmp_path, monkeypatch)
    first = run_backup(manifest, "configs", "2026-11-20").record
    copy_backup(manifest, "configs", first)
    second = run_backup(manifest, "configs", "2026-11-21").record
    reason = "size_anomaly failed: files 1 is 99% below the median (100), see run 1,2"
    assert quarantine_backup(manifest, "configs", second.backup_id, reason) == ["restic"]
    copy_backup(manifest, "configs", find_backup(manifest, "configs", backup_id=second.backup_id))
    for name in ("restic", "offsite"):
        listed = {r.backup_id: r for r in open_repository(manifest, name).list_backups("configs")}
        assert listed[second.backup_id].quarantine_reason == reason and not listed[first.backup_id].quarantined
    assert find_backup(manifest, "configs").backup_id == first.backup_id
    later = second.created + timedelta(hours=2)  # past the minimum age of 1 hour
    report = prune_dataset(manifest, "configs", now=later, dry_run=True)  # keep_last 1
    assert [r.backup_id for r, _ in report.kept] == [first.backup_id]
    assert [r.backup_id for r in report.expired] == [second.backup_id]
    assert release_backup(manifest, "configs", second.backup_id) == ["restic", "offsite"]
    assert find_backup(manifest, "configs").backup_id == second.backup_id
    assert not any(r.quarantined for r in open_repository(manifest, "offsite").list_backups("configs"))


@pytest.mark.parametrize("kind", ["rds", "ebs"])
def test_a_quarantined_aws_snapshot_is_tagged_and_its_cross_region_copy_keeps_the_tag(
    s3_endpoint: S3Endpoint, tmp_path: Path, kind: str
) -> None:
    from tests.integration.aws_helpers import DR, PRIMARY, aws_manifest, create_instance, kms_key, rds_dataset

    source_key, dr_key = kms_key(s3_endpoint, PRIMARY), kms_key(s3_endpoint, DR)
    if kind == "rds":
        create_instance(s3_endpoint, "quarantine-source", source_key)
        dataset = rds_dataset("quarantine-source")
    else:
        ec2 = s3_endpoint.client("ec2", PRIMARY)
        volume = ec2.create_volume(AvailabilityZone=f"{PRIMARY}b", Size=8, Encrypted=True, KmsKeyId=source_key)
        dataset = {**rds_dataset(""), "kind": "ebs", "source": {"volume_id": volume["VolumeId"], "region": PRIMARY}}
    name = f"q_{kind}"
    manifest = aws_manifest(s3_endpoint, tmp_path, {name: dataset}, dr_key)
    good = run_backup(manifest, name, "2026-11-24").record
    bad = run_backup(manifest, name, "2026-11-25").record
    reason = "size_anomaly failed: 90% (of 20 GiB); see run 1,2"
    assert quarantine_backup(manifest, name, bad.backup_id, reason) == ["snapshots"]
    copy_backup(manifest, name, find_backup(manifest, name, backup_id=bad.backup_id))
    for repository in ("snapshots", "dr"):
        [listed] = [r for r in open_repository(manifest, repository).list_backups(name) if r.backup_id == bad.backup_id]
        assert listed.quarantine_reason == "size_anomaly failed: 90 of 20 GiB see run 1 2"
    assert find_backup(manifest, name).backup_id == good.backup_id
    assert release_backup(manifest, name, bad.backup_id) == ["snapshots", "dr"]
    assert not any(r.quarantined for r in open_repository(manifest, "dr").list_backups(name))
    assert find_backup(manifest, name).backup_id == bad.backup_id
