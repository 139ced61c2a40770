"""`dagster definitions validate`, `dagster job execute` and `dagster asset materialize`, as CI runs them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.repository import open_repository
from backup_pipelines.sandbox import PostgresSandbox, free_port
from tests.conftest import manifest_dict, newest_hour, write_manifest
from tests.e2e.conftest import dagster_environment, job_execute, run

# The hour that just closed: older partitions are refused as late unless the run is tagged backup/late=allow.
PARTITION = newest_hour()  # set again as each test starts


@pytest.fixture(autouse=True)
def newest_partition() -> None:
    global PARTITION
    PARTITION = newest_hour()


@pytest.fixture
def environment(postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path) -> dict[str, str]:
    manifest = tmp_path / "backup_manifest.yaml"
    write_manifest(manifest, manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    return dagster_environment(tmp_path / "dagster_home", manifest, age_keys.identity)


def test_definitions_validate(environment: dict[str, str]) -> None:
    result = run(["dagster", "definitions", "validate", "-m", "backup_pipelines.definitions"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation successful" in result.stdout + result.stderr


def test_job_execute_backs_up_verifies_and_restore_tests_one_partition(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = job_execute("protect_hourly", environment, PARTITION)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Executing steps in process" in result.stderr  # one dataset's chain: no step subprocess
    from backup_pipelines.manifest import load_manifest

    manifest = load_manifest(environment["BACKUP_MANIFEST"])
    [record] = open_repository(manifest, "local").list_backups("app_db")
    assert record.partition_key == PARTITION
    monkeypatch.setenv("DAGSTER_HOME", environment["DAGSTER_HOME"])
    instance = dg.DagsterInstance.get()
    for stage in ("backup", "verify", "restore_test"):
        event = instance.get_latest_materialization_event(dg.AssetKey(["app_db", stage]))
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.partition == PARTITION
        assert event.asset_materialization.metadata["backup_id"].value == record.backup_id


def test_asset_materialize_backs_up_one_partition(environment: dict[str, str]) -> None:
    result = run(
        [
            "dagster",
            "asset",
            "materialize",
            "-m",
            "backup_pipelines.definitions",
            "--select",
            "key:app_db/backup",
            "--partition",
            PARTITION,
        ],
        environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Executing steps in process" in result.stderr
    from backup_pipelines.manifest import load_manifest

    assert len(open_repository(load_manifest(environment["BACKUP_MANIFEST"]), "local").list_backups()) == 1


def test_a_job_over_two_datasets_runs_their_steps_in_parallel_processes(
    postgres: PostgresSandbox, age_keys: KeyPair, environment: dict[str, str], tmp_path: Path
) -> None:
    database = tmp_path / "notes.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("create table notes (id integer primary key, body text)")
        connection.execute("insert into notes (body) values ('one'), ('two')")
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["datasets"]["notes"] = {
        **{key: data["datasets"]["app_db"][key] for key in ("schedule", "rpo", "rto", "retention", "repositories")},
        "encryption": data["datasets"]["app_db"]["encryption"],
        "kind": "sqlite",
        "source": {"path": str(database)},
    }
    write_manifest(Path(environment["BACKUP_MANIFEST"]), data)
    result = job_execute("backup_hourly", environment, PARTITION)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Executing steps using multiprocess executor" in result.stderr
    from backup_pipelines.manifest import load_manifest

    backups = open_repository(load_manifest(environment["BACKUP_MANIFEST"]), "local").list_backups()
    assert sorted(record.dataset for record in backups) == ["app_db", "notes"]


def test_job_execute_exits_non_zero_when_the_source_is_down(
    postgres: PostgresSandbox, age_keys: KeyPair, environment: dict[str, str], tmp_path: Path
) -> None:
    data = manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient])
    data["servers"]["pg"]["port"] = free_port()
    write_manifest(Path(environment["BACKUP_MANIFEST"]), data)
    result = job_execute("backup_hourly", environment, PARTITION)
    assert result.returncode != 0
    assert "cannot connect to PostgreSQL" in result.stdout + result.stderr
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").rglob("*.json"))


def test_asset_materialize_of_the_dataset_group_runs_the_whole_chain_and_never_prunes(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    command = ["dagster", "asset", "materialize", "-m", "backup_pipelines.definitions", "--select", "group:app_db"]
    result = run([*command, "--partition", PARTITION], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.setenv("DAGSTER_HOME", environment["DAGSTER_HOME"])
    instance = dg.DagsterInstance.get()
    for stage in ("backup", "verify", "restore_test"):
        assert instance.get_latest_materialization_event(dg.AssetKey(["app_db", stage])) is not None
    assert instance.get_latest_materialization_event(dg.AssetKey(["app_db", "retention"])) is None
