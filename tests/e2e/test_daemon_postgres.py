"""The production-shaped local profile end to end: `dagster-daemon run` on a Dagster instance stored in the
session's PostgreSQL (deploy/local-postgres/dagster.yaml, with the pool limit set to 1), no `dagster dev`.

Two datasets on one server share a two-minute cadence, so one scheduled run backs up both (a partition is backed
up at most one period after its window closed, and the two take turns in the pool: two minutes leave room on a
loaded machine); a third, on a server that is down, has a cadence of its own on the odd minutes. Within a few
minutes the daemon's scheduler and run queue launch the runs; the good run succeeds with the two backup steps one
after the other (pool `db-pg` of limit 1); the bad run fails and the failure sensor alerts it; the RPO sensor
(ticking every 5 s here through BACKUP_RPO_SENSOR_SECONDS) records the checks and alerts the dataset that never
got a backup. The daemon runs in its own process group, SIGKILLed at the end. Retention and the reports run every
two minutes here (`schedules:` in the manifest), so their scheduled runs succeed too and the dashboard is
written."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from backup_pipelines.crypto import KeyPair
from backup_pipelines.sandbox import PostgresSandbox, free_port
from tests.conftest import PG_PASSWORD_ENV, AlertReceiver, manifest_dict, write_manifest
from tests.e2e.conftest import BIN, ROOT, wait_for

HOOK_ENV = "DAEMON_TEST_WEBHOOK_URL"
INSTANCE_DB = "dagster_daemon_test"


@pytest.fixture
def profile(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, receiver: AlertReceiver
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project folder (manifest, workspace) and DAGSTER_HOME with the local-postgres profile; the environment."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute(f"drop database if exists {INSTANCE_DB}")
        admin.execute(f"create database {INSTANCE_DB}")
    today = datetime.now(UTC).date().isoformat()  # minutely partitions from today only
    data = manifest_dict(
        postgres, tmp_path / "backups", [age_keys.recipient], schedule="*/2 * * * *", rpo="10m", start=today
    )
    data["datasets"]["second_db"] = {**data["datasets"]["app_db"]}
    data["servers"]["down"] = {**data["servers"]["pg"], "port": free_port()}
    broken = {**data["datasets"]["app_db"], "schedule": "1-59/2 * * * *", "rpo": "3m"}
    data["datasets"]["broken_db"] = {**broken, "source": {"server": "down", "database": "app"}}
    data["alerts"] = {"channels": {"hook": {"type": "webhook", "url_env": HOOK_ENV, "retries": 0}}}
    # even minutes: the good backups and retention; odd minutes: the broken dataset and the reports (two runs
    # a minute, as many as the queue of 4 and a loaded 2-core machine keep on time)
    data["schedules"] = {"retention": "*/2 * * * *", "reports": "1-59/2 * * * *"}
    write_manifest(tmp_path / "backup_manifest.yaml", data)
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: backup_pipelines.definitions\n      working_directory: .\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance = yaml.safe_load((ROOT / "deploy" / "local-postgres" / "dagster.yaml").read_text())
    instance["concurrency"]["pools"]["default_limit"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance))
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "DAGSTER_HOME": str(home),
        "BACKUP_MANIFEST": str(tmp_path / "backup_manifest.yaml"),
        "BACKUP_AGE_IDENTITY": age_keys.identity,
        PG_PASSWORD_ENV: postgres.password,
        HOOK_ENV: f"{receiver.url}/hook",
        "BACKUP_RPO_SENSOR_SECONDS": "5",
        "DAGSTER_PG_USERNAME": postgres.user,
        "DAGSTER_PG_PASSWORD": postgres.password,
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_DB": INSTANCE_DB,
    }
    yield tmp_path, env


def alerts_of(receiver: AlertReceiver, kind: str) -> list[dict[str, Any]]:
    return [body for body in receiver.json_bodies("/hook") if body.get("kind") == kind]


def test_daemon_on_a_postgres_instance_schedules_queues_runs_and_alerts(
    profile: tuple[Path, dict[str, str]], receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, env = profile
    log = (folder / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for name in ("DAGSTER_HOME", *(key for key in env if key.startswith("DAGSTER_PG_"))):
        monkeypatch.setenv(name, env[name])
    try:
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PooledPostgresRunStorage"

            def finished(job_prefix: str, status: dg.DagsterRunStatus) -> dg.DagsterRun | None:
                runs = instance.get_runs(dg.RunsFilter(statuses=[status]))
                return next((run for run in runs if run.job_name.startswith(job_prefix)), None)

            good = wait_for(
                "a scheduled backup run to succeed", lambda: finished("backup_cron", dg.DagsterRunStatus.SUCCESS), 300
            )
            assert good.tags.get("dagster/schedule_name", "").startswith("backup_cron")
            steps = {
                stats.step_key: (stats.start_time, stats.end_time)
                for stats in instance.get_run_step_stats(good.run_id)
                if stats.step_key and stats.step_key.endswith("backup")
            }
            if len(steps) == 2:  # both datasets' backups in the one run: never at the same time (pool limit 1)
                (_, end_a), (start_b, _) = sorted(steps.values(), key=lambda pair: pair[0] or 0)
                assert end_a is not None and start_b is not None and end_a <= start_b, steps
            else:  # the two datasets fell into different ticks' runs: each alone
                assert len(steps) == 1, steps
            for job in ("retention", "reports"):
                run = wait_for(
                    f"a scheduled {job} run to succeed",
                    functools.partial(finished, job, dg.DagsterRunStatus.SUCCESS),
                    150,
                )
                assert run.job_name == job and run.tags.get("dagster/schedule_name") == f"{job}_schedule", run.tags
            assert (folder / "reports" / "backup_status.html").stat().st_size > 0
            wait_for("the failed run's alert", lambda: alerts_of(receiver, "failure"), 120)
            stale = wait_for(
                "the stale alert of the dataset never backed up", lambda: alerts_of(receiver, "stale"), 150
            )
            assert {alert["dataset"] for alert in stale} == {"broken_db"}
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(timeout=30)
        log.close()
        print((folder / "daemon.log").read_text(errors="replace")[-4000:])
