"""Checks, sensors and alerts on a real Dagster instance with real backups; alerts go to a local HTTP server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from backup_pipelines.crypto import KeyPair
from backup_pipelines.definitions import build_definitions
from backup_pipelines.notify import Alert, WebhookChannel
from backup_pipelines.sample import create_sample_database
from backup_pipelines.sandbox import PostgresSandbox, free_port
from tests.conftest import AlertReceiver, manifest_dict, write_manifest

LATE_TAG = "backup/late"  # the fixed partitions below are old: their backups are recorded as late ones
PARTITIONS = [f"2026-11-22-{hour:02d}:00" for hour in range(10)]


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


def alerting_manifest(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
    database: str = "app",
    **dataset_fields: Any,
) -> dg.Definitions:
    monkeypatch.setenv("TEST_WEBHOOK_URL", f"{receiver.url}/hook")
    monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-test")
    monkeypatch.setenv("TEST_HEALTHCHECKS_URL", f"{receiver.url}/hc/app")
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient], database=database, **dataset_fields)
    data["alerts"] = {
        "dagster_url": "http://dagster.example:3000",
        "channels": {
            "hook": {"type": "webhook", "url_env": "TEST_WEBHOOK_URL", "retries": 1},
            "chat": {
                "type": "slack",
                "channel": "#backups",
                "token_env": "TEST_SLACK_TOKEN",
                "base_url": f"{receiver.url}/slack/",
            },
            "log": {"type": "log"},
        },
    }
    data["datasets"]["app_db"]["alerts"] = {"healthchecks_url_env": "TEST_HEALTHCHECKS_URL"}
    write_manifest(tmp_path / "m.yaml", data)
    return build_definitions(tmp_path / "m.yaml")


def backup(defs: dg.Definitions, instance: dg.DagsterInstance, partition: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("backup_hourly").execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False, tags={LATE_TAG: "allow"}
    )


def size_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "size_anomaly"]
    return check


def test_a_truncated_table_trips_the_size_check_and_blocks_verify(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_sample_database(postgres.conninfo(), "shrinking", orders=2000)
    defs = alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch, database="shrinking")
    instance = dg.DagsterInstance.ephemeral()
    for partition in PARTITIONS[:3]:
        result = backup(defs, instance, partition)
        assert result.success
        assert size_check(result).passed
    with psycopg.connect(postgres.conninfo("shrinking"), autocommit=True) as connection:
        connection.execute(
            "insert into shop.orders (id, customer_id, total) select g, 1, 1 from generate_series(2001, 2150) g"
        )
    grown = backup(defs, instance, PARTITIONS[3])
    assert grown.success and size_check(grown).passed  # normal growth is not an anomaly

    with psycopg.connect(postgres.conninfo("shrinking"), autocommit=True) as connection:
        connection.execute("delete from shop.orders where id > 300")
    truncated = backup(defs, instance, PARTITIONS[4])
    assert not truncated.success
    check = size_check(truncated)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "table shop.orders has 300 rows" in (check.description or "")
    assert truncated.asset_materializations_for_node("app_db__verify") == []
    assert [r.path for r in receiver.requests if r.path.startswith("/hc/")][-2:] == ["/hc/app/start", "/hc/app/fail"]


class Clock:
    """The monitoring code's view of the time, moved forward by hand: an RPO shorter than the schedule is
    refused by the manifest, so a test cannot wait for staleness; it skips ahead instead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import types

        import assets.monitoring

        self.offset = 0.0
        shim = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
        shim.time = lambda: time.time() + self.offset
        monkeypatch.setattr(assets.monitoring, "time", shim)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def test_rpo_check_and_sensor_go_stale_recover_and_go_stale_again_with_one_alert_each(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defs = alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch, rpo="1h")
    instance = dg.DagsterInstance.ephemeral()
    clock = Clock(monkeypatch)
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

    def rpo_check() -> dg.AssetCheckEvaluation:
        [evaluation] = defs.resolve_job_def("watch").execute_in_process(instance=instance).get_asset_check_evaluations()
        return evaluation

    assert backup(defs, instance, PARTITIONS[0]).success
    assert tick() == [] and rpo_check().passed
    clock.advance(3601)
    [stale] = tick()
    assert stale["kind"] == "stale" and stale["dataset"] == "app_db" and stale["partition"] == PARTITIONS[0]
    assert "older than its RPO of 1h" in stale["message"]
    assert tick() == [] and tick() == []  # no alert storm
    assert not rpo_check().passed
    # an old partition backed up now is a fresh copy of the data: its backup time is now
    clock.advance(-3601)  # back to the real clock, which the backup's time comes from
    assert backup(defs, instance, PARTITIONS[1]).success
    [recovered] = tick()
    assert recovered["kind"] == "recovered" and rpo_check().passed
    clock.advance(3601)
    assert [alert["kind"] for alert in tick()] == ["stale"]
    slack = [r for r in receiver.requests if r.path.startswith("/slack/chat.postMessage")]
    assert len(slack) == 3
    assert b"%23backups" in slack[0].body or b"#backups" in slack[0].body
    assert b"app_db+is+stale" in slack[0].body or b"app_db is stale" in slack[0].body


def test_a_failed_backup_run_sends_one_alert_with_dataset_partition_error_and_link(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch)
    data = yaml.safe_load((tmp_path / "m.yaml").read_text())
    data["servers"]["pg"]["port"] = free_port()
    write_manifest(tmp_path / "m.yaml", data)
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()
    result = backup(defs, instance, PARTITIONS[2])
    assert not result.success
    failure_sensor_alerts(defs, instance, result)
    [alert] = receiver.json_bodies("/hook")
    assert alert["kind"] == "failure" and alert["dataset"] == "app_db" and alert["partition"] == PARTITIONS[2]
    assert "backup failed: " in alert["message"] and "cannot connect to PostgreSQL" in alert["message"]
    assert alert["run_url"] == f"http://dagster.example:3000/runs/{result.run_id}"
    assert [r.path for r in receiver.requests if r.path.startswith("/hc/")] == ["/hc/app/start", "/hc/app/fail"]


def test_webhook_retries_server_errors_and_gives_up_on_client_errors(receiver: AlertReceiver) -> None:
    alert = Alert(kind="failure", dataset="app_db", title="t", message="m")
    receiver.statuses = [500, 503]
    WebhookChannel("hook", f"{receiver.url}/hook", retries=3, backoff=0.01).send(alert)
    assert len(receiver.requests) == 3 and receiver.json_bodies()[-1]["source"] == "backup-pipelines"
    receiver.statuses = [404]
    with pytest.raises(Exception, match="404"):
        WebhookChannel("hook", f"{receiver.url}/hook", retries=3, backoff=0.01).send(alert)
    assert len(receiver.requests) == 4


def failure_sensor_alerts(defs: dg.Definitions, instance: dg.DagsterInstance, result: Any) -> None:
    """Run the failure sensor on `result`'s failed run, as the daemon does for one failure event."""
    sensor = defs.resolve_sensor_def("backup_failure_alerts")
    with dg.build_run_status_sensor_context(
        sensor_name="backup_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        repository_def=defs.get_repository_def(),
        resources={"notifier": (defs.resources or {})["notifier"]},
    ) as context:
        sensor(context.for_run_failure())


def alert_tag(instance: dg.DagsterInstance, run_id: str) -> str | None:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.tags.get("backup-pipelines/alert")


def test_a_failure_alert_carries_the_failed_checks_findings_with_their_numbers(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_sample_database(postgres.conninfo(), "shrinking_alert", orders=2000)
    defs = alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch, database="shrinking_alert")
    instance = dg.DagsterInstance.ephemeral()
    for partition in PARTITIONS[:3]:
        assert backup(defs, instance, partition).success
    with psycopg.connect(postgres.conninfo("shrinking_alert"), autocommit=True) as connection:
        connection.execute("delete from shop.orders where id > 300")
    truncated = backup(defs, instance, PARTITIONS[3])
    assert not truncated.success
    failure_sensor_alerts(defs, instance, truncated)
    failure_sensor_alerts(defs, instance, truncated)  # the same failure seen again is not alerted twice
    [alert] = receiver.json_bodies("/hook")
    assert "check size_anomaly failed (ERROR)" in alert["message"]
    assert "table shop.orders has 300 rows" in alert["message"] and "median" in alert["message"]
    findings = {finding["check"]: finding for finding in alert["details"]["failed_checks"]}
    assert findings["size_anomaly"]["severity"] == "ERROR" and findings["size_anomaly"]["metadata"]["history_size"] == 3
    assert alert_tag(instance, truncated.run_id) == "delivered"


def test_a_stale_alert_refused_by_a_down_webhook_arrives_once_when_it_is_up(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defs = alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch, rpo="1h")
    instance = dg.DagsterInstance.ephemeral()
    clock = Clock(monkeypatch)
    sensor = defs.resolve_sensor_def("rpo_alerts")
    cursor: str | None = None

    def tick() -> str:
        nonlocal cursor
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        ) as context:
            result = sensor.evaluate_tick(context)
            cursor = context.cursor
        return result.skip_message or ""

    def accepted_stale_hooks() -> int:
        return sum(1 for body in receiver.json_bodies("/hook") if body["kind"] == "stale") - refused

    assert backup(defs, instance, PARTITIONS[0]).success
    tick()
    clock.advance(3601)
    refused = 2  # the webhook is down: its first attempt and its one retry both get a 500
    receiver.statuses = [500, 500]
    assert "alerts: 0 delivered, 1 pending" in tick()
    assert accepted_stale_hooks() == 0
    assert "alerts: 1 delivered, 0 pending" in tick()  # the webhook is up again (no reminder is configured)
    assert accepted_stale_hooks() == 1
    assert "alerts: 0 delivered, 0 pending" in tick() and accepted_stale_hooks() == 1
    slack = [r for r in receiver.requests if r.path.startswith("/slack/chat.postMessage")]
    assert len(slack) == 1  # Slack took it the first time and is not sent it again


def test_the_failure_sensor_alerts_each_failed_run_of_its_code_location_once_and_retries_refused_ones(
    postgres: PostgresSandbox,
    age_keys: KeyPair,
    tmp_path: Path,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerting_manifest(postgres, age_keys, tmp_path, receiver, monkeypatch)
    data = yaml.safe_load((tmp_path / "m.yaml").read_text())
    data["servers"]["pg"]["port"] = free_port()
    write_manifest(tmp_path / "m.yaml", data)
    defs = build_definitions(tmp_path / "m.yaml")
    instance = dg.DagsterInstance.ephemeral()
    cursor: str | None = None

    def tick() -> None:
        """One tick of the failure sensor, as the daemon runs it (monitoring every code location)."""
        nonlocal cursor
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
        ) as context:
            defs.resolve_sensor_def("backup_failure_alerts").evaluate_tick(context)
            cursor = context.cursor

    tick()  # the first tick only starts the cursor

    @dg.op
    def elsewhere() -> None:
        raise RuntimeError("a job of another code location")

    @dg.job
    def other_location_job() -> None:
        elsewhere()

    assert not other_location_job.execute_in_process(instance=instance, raise_on_error=False).success
    failed = backup(defs, instance, PARTITIONS[5])
    assert not failed.success
    before = len(receiver.json_bodies("/hook"))
    receiver.statuses = [500, 500]  # the webhook refuses the first alert (its attempt and its one retry)
    tick()
    assert alert_tag(instance, failed.run_id) == "pending"
    tick()  # no new failure: the run is not alerted again by this sensor
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        result = defs.resolve_sensor_def("rpo_alerts").evaluate_tick(context)
    assert "alerts: 1 delivered, 0 pending" in (result.skip_message or "")
    assert alert_tag(instance, failed.run_id) == "delivered"
    tick()
    accepted = receiver.json_bodies("/hook")[before + 2 :]  # after the two refused attempts
    assert [(body["kind"], body["details"]["run_id"]) for body in accepted] == [("failure", failed.run_id)]
