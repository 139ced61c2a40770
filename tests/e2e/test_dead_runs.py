"""A backup started by `dagster asset materialize` whose processes are killed mid-dump: `backup-pipelines doctor`
fails the run and frees its pool slot, and the next backup on that server runs without waiting.

The dump is slowed by a `pg_dump` wrapper in the server's `bin_dir` that waits while a `slow` file exists; the
pool `db-pg` has one slot, so a slot nobody gives back would block the next backup for ever.

The dataset is backed up daily and each test takes yesterday's partition, chosen when the test starts: a backup
asset refuses a partition whose window closed more than one period ago, so an hourly partition chosen when the
module was collected could be refused by the time a test ran (a suite in worker processes collects every module
first and may reach these tests after an hour has turned).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.engines.postgres_restore import find_bin_dir
from backup_pipelines.manifest import load_manifest
from backup_pipelines.repository import open_repository
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import cli_folder, manifest_dict, write_manifest
from tests.e2e.conftest import BIN, dagster_environment, run

POOL = "db-pg"
DEADLINE_SECONDS = 180


def slow_bin_dir(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A PostgreSQL bin dir whose pg_dump touches `started` then waits while `slow` exists; return (dir, slow,
    started)."""
    real = find_bin_dir(None)
    assert real is not None
    folder, slow, started = tmp_path / "slow-bin", tmp_path / "slow", tmp_path / "started"
    folder.mkdir()
    for tool in os.listdir(real):
        os.symlink(f"{real}/{tool}", folder / tool)
    (folder / "pg_dump").unlink()
    (folder / "pg_dump").write_text(
        f'#!/bin/sh\ntouch "{started}"\nwhile [ -e "{slow}" ]; do sleep 0.2; done\nexec "{real}/pg_dump" "$@"\n'
    )
    (folder / "pg_dump").chmod(0o755)
    slow.touch()
    return folder, slow, started


@pytest.fixture
def setup(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, str], dg.DagsterInstance, Path, Path]]:
    bin_dir, slow, started = slow_bin_dir(tmp_path)
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], schedule="daily", rpo="2d", retention={"keep_daily": 7}
    )
    data["servers"]["pg"]["bin_dir"] = str(bin_dir)
    write_manifest(tmp_path / "backup_manifest.yaml", data)
    environment = dagster_environment(tmp_path / "home", tmp_path / "backup_manifest.yaml", age_keys.identity)
    monkeypatch.setenv("DAGSTER_HOME", environment["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        yield environment, instance, slow, started


MATERIALIZE = ["dagster", "asset", "materialize", "-m", "backup_pipelines.definitions", "--select", "key:app_db/backup"]


def partition() -> str:
    """Yesterday's partition: the last complete day, which a backup taken now still belongs to until midnight."""
    return f"{datetime.now(UTC) - timedelta(days=1):%Y-%m-%d}"


def materialize(environment: dict[str, str], key: str, step_processes: bool = False) -> subprocess.Popen[bytes]:
    """Start `dagster asset materialize` of the backup of partition `key` in its own process group, its output to
    a file (a pipe would be held open by an orphaned step). A one-dataset run executes its step in the run's
    process; with `step_processes` the run forks it into its own process, as a run over several datasets does."""
    forked = ["--config-json", json.dumps({"execution": {"config": {"multiprocess": {}}}})] if step_processes else []
    with open(Path(environment["DAGSTER_HOME"]) / "materialize.log", "ab") as log:
        return subprocess.Popen(
            [*MATERIALIZE, "--partition", key, *forked],
            cwd=cli_folder(),
            env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **environment},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(
    condition: Callable[[], object],
    what: str,
    seconds: float = DEADLINE_SECONDS,
    process: subprocess.Popen[bytes] | None = None,
    environment: dict[str, str] | None = None,
) -> None:
    """Wait for `condition`; fail at once, with the end of its log, if the watched `process` ends first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            assert environment is not None
            raise AssertionError(f"`dagster asset materialize` ended before {what}:\n{log_tail(environment)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds}s waiting for {what}")
        time.sleep(0.3)


def log_tail(environment: dict[str, str]) -> str:
    return (Path(environment["DAGSTER_HOME"]) / "materialize.log").read_text(errors="replace")[-3000:]


def held(instance: dg.DagsterInstance) -> set[str]:
    """The runs holding a slot of the pool or queued for one."""
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return {claim.run_id for claim in info.claimed_slots} | {step.run_id for step in info.pending_steps}


def only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    [found] = instance.get_runs()
    return found


def doctor(environment: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    return run(["backup-pipelines", "doctor", *options], environment, timeout=120)


def test_doctor_fails_a_killed_materialize_frees_its_slot_and_the_next_backup_does_not_wait(
    setup: tuple[dict[str, str], dg.DagsterInstance, Path, Path],
) -> None:
    environment, instance, slow, started = setup
    key = partition()
    process = materialize(environment, key)
    try:
        wait_for(
            lambda: started.exists() and held(instance),
            "the dump to start holding the pool's slot",
            process=process,
            environment=environment,
        )
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    killed = only_run(instance)
    assert killed.status == dg.DagsterRunStatus.STARTED and held(instance) == {killed.run_id}

    listed = doctor(environment, "--dry-run")
    assert listed.returncode == 1, listed.stdout + listed.stderr
    [line] = [line for line in listed.stdout.splitlines() if killed.run_id in line]
    assert "STARTED): DEAD, gone: pid" in line and f"holds 1 slot(s) of {POOL}" in line
    assert only_run(instance).status == dg.DagsterRunStatus.STARTED  # a dry run changes nothing

    repaired = doctor(environment)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"marked run {killed.run_id} FAILURE" in repaired.stdout
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
    assert held(instance) == set()
    assert doctor(environment).stdout.startswith("no run in progress")

    slow.unlink()
    begun = time.monotonic()
    second = run([*MATERIALIZE, "--partition", key], environment, timeout=DEADLINE_SECONDS)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "blocked by limit for pool" not in second.stdout + second.stderr
    assert time.monotonic() - begun < DEADLINE_SECONDS / 2
    [record] = open_repository(load_manifest(environment["BACKUP_MANIFEST"]), "local").list_backups("app_db")
    assert record.partition_key == key and held(instance) == set()


def test_doctor_leaves_a_run_whose_orphaned_step_still_dumps_and_fails_it_once_the_step_ends(
    setup: tuple[dict[str, str], dg.DagsterInstance, Path, Path],
) -> None:
    environment, instance, slow, started = setup
    process = materialize(environment, partition(), step_processes=True)
    try:
        wait_for(
            lambda: started.exists() and held(instance),
            "the dump to start holding the pool's slot",
            process=process,
            environment=environment,
        )
        os.kill(process.pid, signal.SIGKILL)  # the parent only: its step's worker goes on
        process.wait(timeout=60)
        run_id = only_run(instance).run_id

        first = doctor(environment)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "running: pid" in first.stdout and "(step app_db__backup)" in first.stdout
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
        assert held(instance) == {run_id}  # the orphan still dumps: its slot stays taken

        slow.unlink()  # the orphan finishes its dump and commits it
        wait_for(lambda: "DEAD" in doctor(environment, "--dry-run").stdout, "the orphaned step to end")
        assert doctor(environment).returncode == 0
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        assert held(instance) == set()
        manifest = load_manifest(environment["BACKUP_MANIFEST"])
        assert len(open_repository(manifest, "local").list_backups("app_db")) == 1
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        slow.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the orphan, if a failed assertion left it running
