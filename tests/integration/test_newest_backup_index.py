"""The newest backup index (assets/history.py): what the backup step writes, what the RPO sensor and check read,
and the event-log fallback, on a real Dagster instance with real backups."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from assets.history import latest_backups, newest_backup_key, record_newest_backup
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.integration.test_monitoring import PARTITIONS, backup


@pytest.fixture
def defs(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dg.Definitions:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], rpo="1h"))
    return build_definitions(tmp_path / "m.yaml")


def indexed(instance: dg.DagsterInstance, name: str) -> dict[str, object]:
    key = newest_backup_key(name)
    return dict(json.loads(instance.run_storage.get_cursor_values({key})[key]))


def backed_up_id(result: dg.ExecuteInProcessResult) -> str:
    [materialization] = result.asset_materializations_for_node("app_db__backup")
    return str(materialization.metadata["backup_id"].value)


def test_the_backup_step_indexes_its_backup_and_the_rpo_views_read_the_index(defs: dg.Definitions) -> None:
    instance = dg.DagsterInstance.ephemeral()
    first = backup(defs, instance, PARTITIONS[0])
    assert first.success
    entry = indexed(instance, "app_db")
    assert entry["backup_id"] == backed_up_id(first) and entry["partition"] == PARTITIONS[0]
    assert entry["quarantined"] is None and abs(float(str(entry["created_at"])) - time.time()) < 300

    # a materialization reported by hand is not a committed backup: the index, not the event log, is read
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            dg.AssetKey(["app_db", "backup"]),
            partition=PARTITIONS[5],
            metadata={"backup_id": "reported-by-hand", "created_at": "2030-01-01T00:00:00+00:00"},
        )
    )
    [evaluation] = defs.resolve_job_def("watch").execute_in_process(instance=instance).get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["newest_partition"].value == PARTITIONS[0]

    # a backup of an older partition caught up later is taken later: it becomes the newest
    second = backup(defs, instance, PARTITIONS[1])
    assert second.success and indexed(instance, "app_db")["backup_id"] == backed_up_id(second)
    # a record taken before the indexed one never replaces it
    record_newest_backup(instance, "app_db", "older", 1_000.0, PARTITIONS[2], None)
    newest = latest_backups(instance, ["app_db"])["app_db"]
    assert newest is not None and newest.partition == PARTITIONS[1]
    assert newest.metadata["backup_id"] == backed_up_id(second)


def test_a_dataset_without_an_index_record_is_read_from_the_event_log() -> None:
    """History from before the index: the newest materialization of the backup asset, as before."""
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            dg.AssetKey(["old_db", "backup"]),
            partition=PARTITIONS[3],
            metadata={"backup_id": "b3", "created_at": "2026-11-22T03:05:00+00:00"},
        )
    )
    found = latest_backups(instance, ["old_db", "never_backed_up"])
    assert found["never_backed_up"] is None
    old = found["old_db"]
    assert old is not None and old.partition == PARTITIONS[3] and old.metadata["backup_id"] == "b3"
    assert old.created_at == datetime(2026, 11, 22, 3, 5, tzinfo=UTC).timestamp()


def test_a_backup_the_instance_cannot_index_stands_and_says_so(
    defs: dg.Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance's key-value write is made to fail (a fault injected into Dagster's storage, which is not
    ours): the committed backup is still reported, with a WARNING naming it."""
    instance = dg.DagsterInstance.ephemeral()

    def refuse(pairs: object) -> None:
        raise OSError("the instance database is read-only")

    monkeypatch.setattr(instance.run_storage, "set_cursor_values", refuse)
    result = backup(defs, instance, PARTITIONS[0])
    assert result.success
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
    backup_id = backed_up_id(result)
    assert any(f"backup {backup_id} is committed but could not be indexed" in text for text in warnings), warnings
    assert any("read-only" in text for text in warnings)
