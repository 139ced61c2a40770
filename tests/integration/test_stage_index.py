"""The stage index (assets/stage_index.py): what the steps write, what the RPO sensor and check, the status page
and the runbook read, and the event-log fallback, on a real Dagster instance with real backups."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets import stage_index
from assets.history import latest_backups
from assets.keys import DatasetKeys
from assets.reports import gather_statuses
from assets.stage_index import read_index, record_done
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.manifest import load_manifest
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import manifest_dict, write_manifest
from tests.integration.test_monitoring import PARTITIONS, backup, failure_sensor_alerts


@pytest.fixture
def defs(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dg.Definitions:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], rpo="1h"))
    return build_definitions(tmp_path / "m.yaml")


def indexed(instance: dg.DagsterInstance, name: str) -> dict[str, Any]:
    """The backup step's completion as indexed: its metadata values, partition and run."""
    done, _, _ = read_index(instance, [DatasetKeys(name).backup])
    record = done[DatasetKeys(name).backup]
    return {**record.metadata, "partition": record.partition, "run_id": record.run_id}


def backed_up_id(result: dg.ExecuteInProcessResult) -> str:
    [materialization] = result.asset_materializations_for_node("app_db__backup")
    return str(materialization.metadata["backup_id"].value)


def test_the_backup_step_indexes_its_backup_and_the_rpo_views_read_the_index(defs: dg.Definitions) -> None:
    instance = dg.DagsterInstance.ephemeral()
    first = backup(defs, instance, PARTITIONS[0])
    assert first.success
    entry = indexed(instance, "app_db")
    assert entry["backup_id"] == backed_up_id(first) and entry["partition"] == PARTITIONS[0]
    assert entry["run_id"] == first.run_id and "quarantined" not in entry and entry["size_check"] == "pass"
    assert abs(datetime.fromisoformat(str(entry["created_at"])).timestamp() - time.time()) < 300
    assert [size for _, size in entry["recent_sizes"]] == [entry["bytes_stored"]]

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
    key = DatasetKeys("app_db").backup
    record_done(
        instance, key, "a-run", PARTITIONS[2], {"backup_id": "older", "created_at": "2026-01-01T00:00:00+00:00"}
    )
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
    """The instance's key-value writes of entries are made to fail (a fault injected into Dagster's storage,
    which is not ours): the committed backup is still reported, with a WARNING naming what was not indexed, and
    the entry of the backup before is emptied, so the views read the event log rather than an older backup."""
    instance = dg.DagsterInstance.ephemeral()
    assert backup(defs, instance, PARTITIONS[0]).success
    write = instance.run_storage.set_cursor_values

    def refuse_entries(pairs: dict[str, str]) -> None:
        if any(pairs.values()):
            raise OSError("the instance database is read-only")
        write(pairs)

    monkeypatch.setattr(instance.run_storage, "set_cursor_values", refuse_entries)
    result = backup(defs, instance, PARTITIONS[1])
    assert result.success
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
    assert any("app_db/backup: its completion could not be indexed" in text for text in warnings), warnings
    assert any("app_db/backup: its start could not be indexed" in text for text in warnings), warnings
    assert any("read-only" in text for text in warnings)
    assert read_index(instance, [DatasetKeys("app_db").backup])[0] == {}
    newest = latest_backups(instance, ["app_db"])["app_db"]
    assert newest is not None and newest.partition == PARTITIONS[1]
    assert newest.metadata["backup_id"] == backed_up_id(result)


def test_a_value_that_cannot_be_indexed_is_a_fault_of_the_code_not_a_warning() -> None:
    instance = dg.DagsterInstance.ephemeral()
    table = dg.MetadataValue.table([dg.TableRecord({"a": 1})])
    with pytest.raises(TypeError, match="app_db/copy: indexed values must be text or numbers"):
        record_done(instance, DatasetKeys("app_db").copy, "a-run", PARTITIONS[0], {"copies": table})


def test_a_run_failed_before_its_step_began_is_named_once_the_failure_sensor_saw_it(
    defs: dg.Definitions, tmp_path: Path
) -> None:
    """A backup of a closed partition without `late: allow` is refused before the step indexes its start (as a
    step pod that never started would be): the failure sensor indexes the run as the step's newest attempt,
    the status page names it, and the next good backup clears it; the sensor seeing the old run again does not
    bring it back."""
    instance = dg.DagsterInstance.ephemeral()
    manifest = load_manifest(tmp_path / "m.yaml")
    assert backup(defs, instance, PARTITIONS[0]).success
    refused = defs.resolve_job_def("backup_hourly").execute_in_process(
        partition_key=PARTITIONS[1], instance=instance, raise_on_error=False
    )
    assert not refused.success

    def failed_lines() -> list[str]:
        [status] = gather_statuses(instance, manifest)
        return [line for line in status.failures if " run " in line]

    assert failed_lines() == []  # the step never started: nothing indexed it
    failure_sensor_alerts(defs, instance, refused)
    [line] = failed_lines()
    assert line.startswith(f"backup run {refused.run_id[:8]} failed")
    assert backup(defs, instance, PARTITIONS[2]).success
    assert failed_lines() == []
    failure_sensor_alerts(defs, instance, refused)
    assert failed_lines() == []


def test_every_step_of_a_chain_indexes_its_completion_and_the_status_page_reads_them(
    defs: dg.Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("protect_hourly").execute_in_process(
        partition_key=PARTITIONS[0], instance=instance, tags={"backup/late": "allow"}
    )
    assert result.success
    keys = DatasetKeys("app_db")
    chain = [keys.backup, keys.verify, keys.restore_test]
    done, attempts, _ = read_index(instance, chain)
    assert set(done) == set(chain) and {key: attempt.run_id for key, attempt in attempts.items()} == {
        key: result.run_id for key in chain
    }
    assert {record.run_id for record in done.values()} == {result.run_id}
    assert {record.partition for record in done.values()} == {PARTITIONS[0]}
    [restored] = result.asset_materializations_for_node("app_db__restore_test")
    assert done[keys.restore_test].metadata == {
        "backup_id": restored.metadata["backup_id"].value,
        "measured_rto_seconds": restored.metadata["measured_rto_seconds"].value,
    }
    logs = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == logging.WARNING]
    assert not [text for text in logs if "could not be indexed" in text], logs
    monkeypatch.setattr(stage_index, "KV_BATCH", 2)  # one asset's two entries per query
    assert read_index(instance, chain)[:2] == (done, attempts)

    [status] = gather_statuses(instance, load_manifest(tmp_path / "m.yaml"))
    assert status.last_verified_at == done[keys.verify].at and status.last_restore_test_at == done[keys.restore_test].at
    assert status.measured_rto_seconds == restored.metadata["measured_rto_seconds"].value
    assert status.partition == PARTITIONS[0] and not [line for line in status.failures if " run " in line]
