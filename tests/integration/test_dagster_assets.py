"""The assets on a real (ephemeral) Dagster instance: materializations are backups, with their metadata."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets.partitions import LATE_ALLOW, LATE_TAG
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.repository import open_repository
from backup_pipelines.sandbox import PostgresSandbox, free_port
from resources.manifest import ManifestResource
from tests.conftest import PG_PASSWORD_ENV, manifest_dict, newest_hour, write_manifest

# The hour that just closed: a backup taken now is on time for it (partitions older than one period are refused).
PARTITION = newest_hour()  # set again as each test starts


@pytest.fixture(autouse=True)
def newest_partition() -> None:
    global PARTITION
    PARTITION = newest_hour()


LATE_PARTITION = "2026-11-21-08:00"


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def materialized(result: dg.ExecuteInProcessResult, prefix: str) -> dict[str, object]:
    [event] = result.asset_materializations_for_node(f"app_db__{prefix}")
    assert event.partition == PARTITION
    return {key: value.value for key, value in event.metadata.items()}


def test_protect_job_records_backup_verify_and_restore_test_metadata(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    defs = build_definitions(tmp_path / "m.yaml")
    result = defs.resolve_job_def("protect_hourly").execute_in_process(
        partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    backup = materialized(result, "backup")
    assert str(backup["location"]).startswith(str(tmp_path / "repo" / "app_db" / PARTITION))
    assert backup["bytes_raw"] > backup["bytes_stored"] > 0  # type: ignore[operator]
    assert backup["encrypted"] is True and backup["source_table_count"] == 4
    assert backup["dagster/row_count"] == 2000 + 1000 + 50 + 2
    assert len(str(backup["sha256"])) == 64 and backup["throughput_mb_per_s"] > 0  # type: ignore[operator]
    assert all(tool in str(backup["tool_versions"]) for tool in ("pg_dump", "zstd", "age"))
    fingerprint = f"sha256:{__import__('hashlib').sha256(age_keys.recipient.encode()).hexdigest()[:16]}"
    assert fingerprint in str(backup["recipient_fingerprints"])
    verify = materialized(result, "verify")
    assert verify["backup_id"] == backup["backup_id"] and verify["copies_verified"] == 1
    restore = materialized(result, "restore_test")
    assert restore["backup_id"] == backup["backup_id"]
    assert restore["checks_passed"] == restore["checks_total"] and restore["within_rto"] is True
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert checks["restore_within_rto"].passed
    assert checks["size_anomaly"].passed  # no history yet: passes with a note
    assert "only 0 earlier backups" in str(checks["size_anomaly"].metadata["note"].value)
    three_two_one = checks["three_two_one"]  # one local repository: the source and one copy, one medium
    assert not three_two_one.passed
    assert three_two_one.description is not None and "3 copies: only 2" in three_two_one.description
    assert "1 off-site" in three_two_one.description
    assert backup["taken_at"] and "UTC" in str(backup["partition_window"]) and "taken_after_window_closed" not in backup


def test_each_check_records_one_evaluation_for_the_partition_and_no_skipped_twin(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()
    selection = dg.AssetSelection.groups("app_db")  # as the UI's Materialize of the group: every check of it
    assert defs.resolve_asset_graph().get(dg.AssetKey(["app_db", "retention"])).group_name == "retention"
    job = dg.define_asset_job("ui_like", selection=selection)
    result = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        .resolve_job_def("ui_like")
        .execute_in_process(partition_key=PARTITION, instance=instance)
    )
    assert result.success
    check_keys = {
        dg.AssetCheckKey(dg.AssetKey(["app_db", "backup"]), name) for name in ("size_anomaly", "three_two_one")
    } | {dg.AssetCheckKey(dg.AssetKey(["app_db", "restore_test"]), "restore_within_rto")}
    assert {evaluation.asset_check_key for evaluation in result.get_asset_check_evaluations()} == check_keys
    for check_key in check_keys:
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=10)
        assert [(record.partition, record.status.value) for record in history] in (
            [(PARTITION, "SUCCEEDED")],
            [(PARTITION, "FAILED")],
        ), check_key
    assert result.asset_materializations_for_node("app_db__retention") == []  # the group never prunes


def test_a_late_partition_is_refused_unless_the_run_allows_it_and_then_says_when_it_was_taken(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], retries=2))
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("backup_hourly")
    refused = job.execute_in_process(partition_key=LATE_PARTITION, instance=instance, raise_on_error=False)
    assert not refused.success
    [failure] = [event for event in refused.all_events if event.is_step_failure]
    message = str(failure.step_failure_data.error) + str(failure.step_failure_data.user_failure_data)
    assert f"partition {LATE_PARTITION} (2026-11-21 08:00 - 09:00 UTC) closed" in message
    assert f"{LATE_TAG}={LATE_ALLOW}" in message
    assert not [event for event in refused.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").rglob("*.json"))
    accepted = job.execute_in_process(partition_key=LATE_PARTITION, instance=instance, tags={LATE_TAG: LATE_ALLOW})
    assert accepted.success
    [event] = accepted.asset_materializations_for_node("app_db__backup")
    metadata = {key: value.value for key, value in event.metadata.items()}
    assert metadata["partition_window"] == "2026-11-21 08:00 - 09:00 UTC"
    assert str(metadata["taken_at"]) > "2026-11-21T09:00" and metadata["taken_after_window_closed"]
    assert str(metadata["taken_at"])[:16] == str(metadata["created_at"])[:16]


def test_a_missing_secret_fails_at_once_without_retries(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], retries=2, retry_delay="30s")
    write_manifest(tmp_path / "m.yaml", data)
    monkeypatch.delenv(PG_PASSWORD_ENV, raising=False)
    started = time.monotonic()
    result = (
        build_definitions(tmp_path / "m.yaml")
        .resolve_job_def("backup_hourly")
        .execute_in_process(partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success and time.monotonic() - started < 25
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "app_db__backup"
    assert failure.step_failure_data.user_failure_data is not None
    assert f"MissingSecretError: environment variable {PG_PASSWORD_ENV} is not set" in str(
        failure.step_failure_data.user_failure_data.description
    )


def test_a_failed_backup_fails_the_run_and_records_no_materialization(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["servers"]["pg"]["port"] = free_port()
    write_manifest(tmp_path / "m.yaml", data)
    instance = dg.DagsterInstance.ephemeral()
    result = (
        build_definitions(tmp_path / "m.yaml")
        .resolve_job_def("backup_hourly")
        .execute_in_process(partition_key=PARTITION, instance=instance, raise_on_error=False)
    )
    assert not result.success
    assert instance.get_latest_materialization_event(dg.AssetKey(["app_db", "backup"])) is None
    failures = [event for event in result.all_events if event.is_step_failure]
    assert "cannot connect to PostgreSQL" in str(failures[0].step_failure_data.error)


def test_restore_test_failure_fails_the_asset_with_the_numbers(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["datasets"]["app_db"]["verification"] = {
        "queries": [
            {"name": "orders", "sql": "select count(*) from shop.orders", "expect": {"equals": 5}},
        ]
    }
    write_manifest(tmp_path / "m.yaml", data)
    result = (
        build_definitions(tmp_path / "m.yaml")
        .resolve_job_def("protect_hourly")
        .execute_in_process(partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "app_db__restore_test"
    assert "query orders: expected = 5, restored copy has 2000" in str(failure.step_failure_data.error)


def test_verify_checks_the_backup_this_partition_materialized(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("backup_hourly")
    first = job.execute_in_process(partition_key=PARTITION, instance=instance)
    second = job.execute_in_process(partition_key=PARTITION, instance=instance)
    backup_ids = [materialized(run, "backup")["backup_id"] for run in (first, second)]
    assert backup_ids[0] != backup_ids[1]
    assert materialized(second, "verify")["backup_id"] == backup_ids[1]
    manifest_resource = (defs.resources or {})["manifest"]
    assert isinstance(manifest_resource, ManifestResource)
    manifest = manifest_resource.load()
    assert len(open_repository(manifest, "local").list_backups("app_db")) == 2


def test_a_failed_backup_is_retried_as_the_manifest_says(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], retries=1, retry_delay="1s")
    data["servers"]["pg"]["port"] = free_port()
    write_manifest(tmp_path / "m.yaml", data)
    result = (
        build_definitions(tmp_path / "m.yaml")
        .resolve_job_def("backup_hourly")
        .execute_in_process(partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    assert not result.success
    retries = [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1 and retries[0].step_key == "app_db__backup"


def test_copy_asset_copies_off_site_between_backup_and_verify_and_meets_3_2_1(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, s3_endpoint: Any, bucket: str
) -> None:
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["local", "s3"]
    )
    data["repositories"]["s3"]["offsite"] = True
    write_manifest(tmp_path / "m.yaml", data)
    defs = build_definitions(tmp_path / "m.yaml")
    verify_deps = defs.resolve_assets_def(dg.AssetKey(["app_db", "verify"])).asset_deps[
        dg.AssetKey(["app_db", "verify"])
    ]
    assert verify_deps == {dg.AssetKey(["app_db", "copy"])}
    result = defs.resolve_job_def("protect_hourly").execute_in_process(
        partition_key=PARTITION, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    copied = materialized(result, "copy")
    locations = copied["locations"]
    assert isinstance(locations, dict)
    assert set(locations) == {"local", "s3"} and copied["three_two_one"] == "pass"
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert checks["three_two_one"].passed and checks["three_two_one"].asset_key == dg.AssetKey(["app_db", "copy"])
    assert materialized(result, "verify")["copies_verified"] == 2
