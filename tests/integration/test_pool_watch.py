"""The rpo_alerts tick with a `db-<server>` pool whose slots are held: the blocked backup is logged at WARNING and
alerted once with the holder's run id, the dataset's RPO alert still fires, and a run failed from outside (its
worker killed) is alerted under its dataset's name, not "all".

A real Dagster instance (a temporary DAGSTER_HOME with the project's dagster.yaml); the slots are claimed
through the instance's own concurrency API, as a run's steps claim them.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest

from assets import monitoring
from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import AlertReceiver
from tests.e2e.conftest import dagster_environment
from tests.integration.test_monitoring import PARTITIONS, alerting_manifest, backup

POOL = "db-pg"


@pytest.fixture
def instance(tmp_path: Path, age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> Any:
    environment = dagster_environment(tmp_path / "home", tmp_path / "m.yaml", age_keys.identity)
    monkeypatch.setenv("DAGSTER_HOME", environment["DAGSTER_HOME"])
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)
    with dg.DagsterInstance.get() as instance:
        yield instance


def started_run(instance: dg.DagsterInstance, run_id: str) -> None:
    instance.add_run(dg.DagsterRun(job_name="backup_hourly", run_id=run_id, status=dg.DagsterRunStatus.STARTED))


def test_a_backup_blocked_on_a_held_pool_is_warned_with_the_holder_and_its_rpo_alert_still_fires(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    defs = alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch)  # rpo 2h
    assert backup(defs, instance, PARTITIONS[0]).success
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POOL, 2)
    started_run(instance, "holder")
    started_run(instance, "waiter")
    for step in ("app_db__backup", "app_db__restore_test"):
        assert storage.claim_concurrency_slot(POOL, "holder", step).is_claimed
    assert not storage.claim_concurrency_slot(POOL, "waiter", "app_db__backup").is_claimed

    sensor = defs.resolve_sensor_def("rpo_alerts")
    cursor: str | None = None

    def tick() -> list[dict[str, Any]]:
        nonlocal cursor
        before = len(receiver.json_bodies("/hook"))
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        ) as context:
            sensor.evaluate_tick(context)
            cursor = context.cursor
        return receiver.json_bodies("/hook")[before:]

    assert tick() == []  # neither stale nor blocked for long yet
    three_hours_later = time.time() + 3 * 3600  # past the RPO and the pool-wait threshold
    monkeypatch.setattr(monitoring, "time", SimpleNamespace(time=lambda: three_hours_later))
    alerts = tick()
    assert sorted(alert["kind"] for alert in alerts) == ["finding", "stale"]
    [blocked] = [alert for alert in alerts if alert["kind"] == "finding"]
    assert blocked["dataset"] == "app_db" and blocked["title"] == "app_db: backup blocked on pool db-pg"
    assert blocked["details"]["holders"] == ["holder", "holder"] and blocked["details"]["run_id"] == "waiter"
    assert "step app_db__backup of run waiter has waited" in blocked["message"]
    assert "has waited 3h00m for a slot of pool db-pg" in blocked["message"]
    assert "held by run holder (step app_db__backup, STARTED)" in blocked["message"]
    logged = capfd.readouterr().err
    assert "WARNING - blocked on a pool: step app_db__backup of run waiter has waited 3h00m" in logged
    assert "held by run holder (step app_db__backup, STARTED), run holder (step app_db__restore_test" in logged
    assert tick() == []  # one alert per wait, no storm

    storage.free_concurrency_slots_for_run("holder")  # the waiter gets its slot: nothing blocked any more
    assert storage.claim_concurrency_slot(POOL, "waiter", "app_db__backup").is_claimed
    assert tick() == []


def test_a_run_failed_from_outside_alerts_the_dataset_of_its_unfinished_step(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
    instance: dg.DagsterInstance,
) -> None:
    """As the code server does when a daemon-launched run's worker dies: no step failure, only RUN_FAILURE."""
    defs = alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch)
    assert backup(defs, instance, PARTITIONS[0]).success
    [done] = instance.get_runs()
    job = defs.resolve_job_def("backup_hourly")
    killed = instance.create_run_for_job(
        job, run_config={}, tags={"dagster/partition": PARTITIONS[1]}, status=dg.DagsterRunStatus.STARTED
    )
    step_start = [e for e in instance.all_logs(done.run_id) if e.dagster_event_type == dg.DagsterEventType.STEP_START]
    for entry in step_start[:1]:
        instance.handle_new_event(entry._replace(run_id=killed.run_id))
    failure = instance.report_run_failed(killed, "Run execution process for it unexpectedly exited")
    sensor = build_definitions(tmp_path / "m.yaml").resolve_sensor_def("backup_failure_alerts")
    with dg.build_run_status_sensor_context(
        sensor_name="backup_failure_alerts",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(killed.run_id),  # type: ignore[arg-type]
        dagster_event=failure,
        repository_def=defs.get_repository_def(),
        resources={"notifier": (defs.resources or {})["notifier"]},
    ) as context:
        sensor(context.for_run_failure())
    [alert] = receiver.json_bodies("/hook")
    assert alert["dataset"] == "app_db" and alert["partition"] == PARTITIONS[1]
    assert alert["title"] == "app_db: backup_hourly failed"
    assert alert["message"].startswith("backup failed: Run execution process")
