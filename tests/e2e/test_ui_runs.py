"""The Dagster UI as the control room: `dagster dev` started the way the README says (from the project folder,
nothing on the command line but the workspace; the secrets and DAGSTER_HOME come from the `.env` the demo
writes) runs what is launched through its GraphQL API, keeps its schedules and sensors running, and alerts
every failed run exactly once: one launched through the webserver, one by `dagster job execute` and one by
`dagster asset materialize`.

The project folder is temporary: a manifest with a dataset on the session's PostgreSQL (and a copy repository,
so its 3-2-1 check passes) and a dataset whose server is down, alerts to the `receiver` webhook on 127.0.0.1.
`dagster dev` runs in its own session and the whole process group is SIGKILLed at the end."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from assets.keys import DatasetKeys
from backup_pipelines.crypto import KeyPair
from backup_pipelines.sandbox import PostgresSandbox, free_port
from tests.conftest import PG_PASSWORD_ENV, AlertReceiver, manifest_dict, newest_hour, write_manifest
from tests.e2e.conftest import BIN, ROOT, wait_for

HOOK_ENV = "UI_TEST_WEBHOOK_URL"
BROKEN = "broken_db"
REPOSITORY = "__repository__"
LATE = {"key": "backup/late", "value": "allow"}  # partitions older than the newest complete one are late
STRIPPED = ("DAGSTER_HOME", "BACKUP_MANIFEST", "BACKUP_AGE_IDENTITY", "BACKUP_AGE_IDENTITY_FILE", PG_PASSWORD_ENV)


def load_demo() -> ModuleType:
    """scripts/demo.py as a module: the test writes `.env` with the demo's own writer."""
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hourly_partitions(count: int) -> list[str]:
    """The `count` newest complete hourly partitions, oldest first."""
    newest = datetime.strptime(newest_hour(), "%Y-%m-%d-%H:%M")
    return [(newest - timedelta(hours=n)).strftime("%Y-%m-%d-%H:%M") for n in reversed(range(count))]


class Webserver:
    """The GraphQL API of the `dagster dev` webserver on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.location = ""

    def query(self, text: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": text, "variables": variables}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def loaded_location(self) -> str | None:
        try:
            data = self.query(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
            )
        except OSError:
            return None
        for entry in data["workspaceOrError"]["locationEntries"]:
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                pytest.fail(f"code location failed to load: {loaded['message']}")
            if loaded and loaded["__typename"] == "RepositoryLocation":
                self.location = entry["name"]
                return str(entry["name"])
        return None

    def selector(self) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": REPOSITORY}

    def launch_run(self, job: str, partition: str) -> str:
        data = self.query(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
            "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
            p={
                "selector": {**self.selector(), "jobName": job},
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}, LATE]},
            },
        )["launchRun"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return str(data["run"]["runId"])

    def launch_backfill(self, keys: list[list[str]], partitions: list[str]) -> str:
        data = self.query(
            "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
            "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
            p={"partitionNames": partitions, "assetSelection": [{"path": path} for path in keys], "tags": [LATE]},
        )["launchPartitionBackfill"]
        assert data["__typename"] == "LaunchBackfillSuccess", data
        return str(data["backfillId"])

    def run_status(self, run_id: str) -> str:
        data = self.query("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id)
        return str(data["runOrError"]["status"])

    def backfill(self, backfill_id: str) -> tuple[str, list[str]]:
        """Return the backfill's status and the statuses of its runs."""
        data = self.query(
            "query($id: String!, $tags: [ExecutionTag!]) { partitionBackfillOrError(backfillId: $id) "
            "{ ... on PartitionBackfill { status } } runsOrError(filter: {tags: $tags}) "
            "{ ... on Runs { results { status } } } }",
            id=backfill_id,
            tags=[{"key": "dagster/backfill", "value": backfill_id}],
        )
        runs = [run["status"] for run in data["runsOrError"]["results"]]
        return str(data["partitionBackfillOrError"]["status"]), runs

    def instigators(self) -> dict[str, str]:
        """Return every schedule's and sensor's name and status."""
        data = self.query(
            "query($r: RepositorySelector!) { "
            "schedulesOrError(repositorySelector: $r) "
            "{ ... on Schedules { results { name scheduleState { status } } } }"
            " sensorsOrError(repositorySelector: $r) { ... on Sensors { results { name sensorState { status } } } } }",
            r=self.selector(),
        )
        schedules = {s["name"]: s["scheduleState"]["status"] for s in data["schedulesOrError"]["results"]}
        sensors = {s["name"]: s["sensorState"]["status"] for s in data["sensorsOrError"]["results"]}
        return schedules | sensors


@pytest.fixture(scope="module")
def ui_receiver() -> Iterator[AlertReceiver]:
    """One webhook receiver for the module's one `dagster dev` (starting it is the slow part: done once)."""
    server = AlertReceiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def project(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path_factory: pytest.TempPathFactory, ui_receiver: AlertReceiver
) -> tuple[Path, dict[str, str]]:
    """A project folder like the demo's after its setup: manifest, workspace, dagster.yaml in DAGSTER_HOME, age
    identity, and the `.env` the demo writes; return it and the environment a user's shell has (no secrets)."""
    receiver = ui_receiver
    folder = tmp_path_factory.mktemp("ui") / "project"
    folder.mkdir()
    data = manifest_dict(
        postgres, folder / "backups", [age_keys.recipient], repositories=["local", "offsite"], rpo="2h"
    )
    data["repositories"]["offsite"] = {
        "type": "local",
        "path": str(folder / "backups-offsite"),
        "medium": "usb-disk",
        "offsite": True,
    }
    data["servers"]["down"] = {**data["servers"]["pg"], "port": free_port()}
    broken = {**data["datasets"]["app_db"], "schedule": "daily", "rpo": "26h", "repositories": ["local", "offsite"]}
    data["datasets"][BROKEN] = {**broken, "source": {"server": "down", "database": "app"}}
    data["alerts"] = {"channels": {"hook": {"type": "webhook", "url_env": HOOK_ENV, "retries": 0}}}
    write_manifest(folder / "backup_manifest.yaml", data)
    (folder / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: backup_pipelines.definitions\n      working_directory: .\n"
    )
    home = folder / ".local" / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    identity = folder / "age-identity.txt"
    identity.write_text(age_keys.identity + "\n")
    load_demo().write_dotenv(
        folder / ".env",
        {
            "DAGSTER_HOME": str(home),
            "BACKUP_AGE_IDENTITY_FILE": str(identity),
            PG_PASSWORD_ENV: postgres.password,
            HOOK_ENV: f"{receiver.url}/hook",
        },
    )
    shell = {name: value for name, value in os.environ.items() if name not in STRIPPED}
    shell["PATH"] = f"{BIN}:{shell.get('PATH', '')}"
    return folder, shell


@pytest.fixture(scope="module")
def webserver(project: tuple[Path, dict[str, str]]) -> Iterator[Webserver]:
    """`dagster dev -w workspace.yaml` in the project folder (as the README says), in its own process group."""
    folder, shell = project
    port = free_port()
    log = (folder / "dagster-dev.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=folder,
        env=shell,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        server = Webserver(port)
        wait_for("the code location to load", server.loaded_location, timeout=180)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()
        print((folder / "dagster-dev.log").read_text()[-4000:])


def failure_alerts(receiver: AlertReceiver) -> dict[str, int]:
    """Failure alerts received so far, counted by run id."""
    counts: dict[str, int] = {}
    for body in receiver.json_bodies("/hook"):
        if body.get("kind") == "failure":
            run_id = body["details"]["run_id"]
            counts[run_id] = counts.get(run_id, 0) + 1
    return counts


def test_runs_launched_from_the_ui_succeed_with_the_secrets_of_the_demo_env_file(
    webserver: Webserver, project: tuple[Path, dict[str, str]], ui_receiver: AlertReceiver
) -> None:
    receiver = ui_receiver
    running = webserver.instigators()
    assert running and set(running.values()) == {"RUNNING"}, running
    assert {"backup_failure_alerts", "rpo_alerts", "reports_schedule", "retention_schedule"} <= set(running)

    first, *backfilled = hourly_partitions(4)
    run_id = webserver.launch_run("backup_hourly", first)
    keys = DatasetKeys("app_db")
    backfill_id = webserver.launch_backfill([list(keys.backup.path), list(keys.copy.path)], backfilled)

    def run_done() -> str | None:
        status = webserver.run_status(run_id)
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    def backfill_done() -> tuple[str, list[str]] | None:
        status, runs = webserver.backfill(backfill_id)
        return (status, runs) if status not in ("REQUESTED", "CANCELING", "FAILING") else None

    assert wait_for(f"run {run_id}", run_done, timeout=300) == "SUCCESS"
    status, runs = wait_for(f"backfill {backfill_id}", backfill_done, timeout=420)
    assert status in ("COMPLETED_SUCCESS", "COMPLETED") and runs and set(runs) == {"SUCCESS"}, (status, runs)
    assert failure_alerts(receiver) == {}


def test_every_failed_run_is_alerted_once_whatever_launched_it(
    webserver: Webserver, project: tuple[Path, dict[str, str]], ui_receiver: AlertReceiver
) -> None:
    receiver = ui_receiver
    folder, shell = project
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    ui_run = webserver.launch_run("backup_daily", day)
    cli = [str(BIN / "dagster"), "job", "execute", "-m", "backup_pipelines.definitions", "-j", "backup_daily"]
    job_execute = subprocess.run(
        [*cli, "--tags", json.dumps({"dagster/partition": day})],
        cwd=folder,
        env=shell,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job_execute.returncode != 0
    select = ["--select", DatasetKeys(BROKEN).backup.to_user_string(), "--partition", day]
    materialize = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "backup_pipelines.definitions", *select],
        cwd=folder,
        env=shell,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert materialize.returncode != 0

    alerted = wait_for("three failed runs alerted", lambda: len(failure_alerts(receiver)) >= 3 or None, 240)
    assert alerted
    time.sleep(45)  # another sensor interval: nothing is alerted twice
    counts = failure_alerts(receiver)
    assert ui_run in counts and len(counts) == 3 and set(counts.values()) == {1}, counts
    bodies = [body for body in receiver.json_bodies("/hook") if body.get("kind") == "failure"]
    assert {body["dataset"] for body in bodies} == {BROKEN}
    assert all("cannot connect to PostgreSQL" in body["message"] for body in bodies), bodies
    assert {body["details"]["job"] for body in bodies} >= {"backup_daily"}
