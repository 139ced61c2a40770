"""Faults on the Dagster path: the backup job runs in process, fails, and the `backup_failure_alerts`
sensor sends one alert to a webhook (the `receiver` fixture); the next run of the job succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import AlertReceiver, manifest_dict, newest_hour, stored_files, write_manifest
from tests.faults.common import assert_committed_backups_restore, killed_after, postgres_bin_dir_with
from tests.faults.test_disk_full import grow, tiny_tmpfs
from tests.integration.test_monitoring import failure_sensor_alerts

EXPECTED = {
    "pg_dump-killed": "killed by signal",
    "pg_dump-truncated-exit-0": "is not whole",
    "disk-full": "No space left on device",
}


def alerting_data(
    postgres: PostgresSandbox, database: str, age_keys: KeyPair, root: Path, receiver: AlertReceiver, monkeypatch: Any
) -> dict[str, Any]:
    monkeypatch.setenv("FAULTS_WEBHOOK_URL", f"{receiver.url}/hook")
    data = manifest_dict(postgres, root, [age_keys.recipient], database=database)
    data["alerts"] = {
        "dagster_url": "http://dagster.example:3000",
        "channels": {"hook": {"type": "webhook", "url_env": "FAULTS_WEBHOOK_URL", "retries": 1}},
    }
    return data


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance, partition: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("backup_hourly").execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False
    )


@pytest.mark.parametrize("fault", ["pg_dump-killed", "pg_dump-truncated-exit-0", "disk-full"])
def test_a_fault_on_the_dagster_path_fails_the_run_alerts_once_and_the_next_run_succeeds(
    tmp_path: Path,
    postgres: PostgresSandbox,
    faults_database: str,
    age_keys: KeyPair,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    root = tmp_path / "repo"
    data = alerting_data(postgres, faults_database, age_keys, root, receiver, monkeypatch)
    if fault == "pg_dump-killed":
        script = killed_after("$REAL", 20_000, "KILL")
        data["servers"]["pg"]["bin_dir"] = str(postgres_bin_dir_with(tmp_path / "bin", script))
    elif fault == "pg_dump-truncated-exit-0":
        script = '"$REAL" "$@" | head -c 20000\nexit 0'
        data["servers"]["pg"]["bin_dir"] = str(postgres_bin_dir_with(tmp_path / "bin", script))
    disk = tiny_tmpfs(tmp_path / "disk", 1) if fault == "disk-full" else None
    if disk is not None:
        root = disk.__enter__()
        data["repositories"]["local"]["path"] = str(root)
    try:
        write_manifest(tmp_path / "m.yaml", data)
        instance = dg.DagsterInstance.ephemeral()
        partition = newest_hour()
        result = run_job(build_definitions(tmp_path / "m.yaml"), instance, partition)
        assert not result.success
        assert stored_files(root) == []
        failure_sensor_alerts(build_definitions(tmp_path / "m.yaml"), instance, result)
        [alert] = receiver.json_bodies("/hook")
        assert alert["kind"] == "failure" and alert["dataset"] == "app_db" and alert["partition"] == partition
        assert "backup failed: " in alert["message"] and EXPECTED[fault] in alert["message"], alert["message"]
        if disk is not None:
            grow(root)
        data["servers"]["pg"].pop("bin_dir", None)
        manifest = write_manifest(tmp_path / "m.yaml", data)
        assert run_job(build_definitions(tmp_path / "m.yaml"), instance, partition).success
        assert len(assert_committed_backups_restore(manifest, "app_db")) == 1
    finally:
        if disk is not None:
            disk.__exit__(None, None, None)
