"""The pooled PostgreSQL instance storage (backup_pipelines/pooled_storage.py) on the session's real server, as
deploy/local-postgres/dagster.yaml configures it: it reuses its connections where dagster-postgres connects for
every call, survives a server that dropped them, and lets them go when the instance is disposed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import sqlalchemy
import yaml

from backup_pipelines.pooled_storage import POOL_SIZE, PooledPostgresEventLogStorage
from backup_pipelines.sandbox import PostgresSandbox

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_DB = "dagster_pooled_test"
EVENTS = 30


@pytest.fixture
def home(postgres: PostgresSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DAGSTER_HOME with the local-postgres profile on a fresh database of the session's server."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute(f"drop database if exists {INSTANCE_DB} with (force)")
        admin.execute(f"create database {INSTANCE_DB}")
    for name, value in {
        "DAGSTER_PG_USERNAME": postgres.user,
        "DAGSTER_PG_PASSWORD": postgres.password,
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_DB": INSTANCE_DB,
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text((ROOT / "deploy" / "local-postgres" / "dagster.yaml").read_text())
    yield tmp_path


def stock(home: Path) -> None:
    """Rewrite the instance to dagster-postgres's own `storage: postgres:` (a new connection per call)."""
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    database = config.pop("run_storage")["config"]
    del config["event_log_storage"], config["schedule_storage"]
    config["storage"] = {"postgres": database}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def count_connects(engine: sqlalchemy.engine.Engine) -> list[int]:
    opened = [0]

    def connected(*_: object) -> None:
        opened[0] += 1

    sqlalchemy.event.listen(engine, "connect", connected)
    return opened


def record_events(instance: dg.DagsterInstance) -> None:
    for index in range(EVENTS):
        instance.report_runless_asset_event(dg.AssetMaterialization("pooled", metadata={"index": index}))


def engine_of(storage: object) -> sqlalchemy.engine.Engine:
    engine = getattr(storage, "_engine")  # noqa: B009 (dagster-postgres keeps it private)
    assert isinstance(engine, sqlalchemy.engine.Engine)
    return engine


def open_backends(postgres: PostgresSandbox) -> set[int]:
    """The server processes of the connections open to the instance's database now."""
    return set(backend_activity(postgres))


def backend_activity(postgres: PostgresSandbox) -> dict[int, str]:
    """Each server process open to the instance's database, with its state and last query."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        rows = admin.execute(
            "select pid, state, left(query, 120) from pg_stat_activity where datname = %s", (INSTANCE_DB,)
        ).fetchall()
    return {int(pid): f"{state}: {query}" for pid, state, query in rows}


def assert_all_closed(postgres: PostgresSandbox, seconds: float = 5.0) -> None:
    """Assert that no connection to the instance's database stays open. A server process leaves
    pg_stat_activity a moment after its client closes the connection (CI once saw one still listed right after
    dispose), so this waits up to `seconds`; a connection left open in a pool stays listed however long."""
    deadline = time.monotonic() + seconds
    while (open_now := backend_activity(postgres)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_now == {}, f"connections still open {seconds:.0f} s after the instance was disposed: {open_now}"


def test_the_profile_reuses_connections_where_the_stock_storage_connects_for_each_event(
    home: Path, postgres: PostgresSandbox
) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PooledPostgresEventLogStorage"
        opened = count_connects(engine_of(instance.event_log_storage))
        record_events(instance)
        assert opened[0] <= POOL_SIZE
        assert len(instance.fetch_materializations(dg.AssetKey("pooled"), limit=100).records) == EVENTS

    stock(home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        opened = count_connects(engine_of(instance.event_log_storage))
        record_events(instance)
        assert opened[0] >= EVENTS  # what the pool saves: one connection per stored event


def test_connections_the_server_dropped_are_replaced_and_disposing_closes_the_pool(
    home: Path, postgres: PostgresSandbox
) -> None:
    instance = dg.DagsterInstance.from_config(str(home))
    record_events(instance)
    instance.get_runs()
    instance.all_instigator_state()
    assert 0 < len(open_backends(postgres)) <= 2 * POOL_SIZE  # kept open: the run and event log storages'

    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:  # as a server restart would
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
            (INSTANCE_DB,),
        )
    record_events(instance)  # each pooled connection is checked before use: no call fails
    assert len(instance.fetch_materializations(dg.AssetKey("pooled"), limit=100).records) == 2 * EVENTS
    instance.all_instigator_state()

    instance.dispose()
    assert_all_closed(postgres)


def test_instances_made_and_disposed_one_after_another_leave_no_connection_open(
    home: Path, postgres: PostgresSandbox
) -> None:
    """As a code server does, making an instance for each sensor evaluation: nothing is left to the garbage
    collector."""
    for _ in range(5):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            instance.report_runless_asset_event(dg.AssetMaterialization("pooled"))
            instance.get_runs(limit=1)
            instance.all_instigator_state()
            assert open_backends(postgres)
        assert_all_closed(postgres)


def backend_pid(instance: dg.DagsterInstance) -> int:
    """The server process behind the connection the event log storage hands out next."""
    with engine_of(instance.event_log_storage).connect() as connection:
        return int(connection.exec_driver_sql("select pg_backend_pid()").scalar_one())


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(
    home: Path, tmp_path: Path, postgres: PostgresSandbox
) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        record_events(instance)
        parents = open_backends(postgres)  # the parent's pooled connections: nothing else uses this database
        child = os.fork()
        if child == 0:  # the child: a connection of its own, the parent's left open
            code = 1
            try:
                (tmp_path / "child_pid").write_text(str(backend_pid(instance)))
                instance.report_runless_asset_event(dg.AssetMaterialization("pooled", metadata={"index": -1}))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert parents and int((tmp_path / "child_pid").read_text()) not in parents
        assert parents <= open_backends(postgres)  # the child closed none of the parent's
        assert backend_pid(instance) in parents  # and used none: the parent's next call reuses its own
        record_events(instance)
        assert len(instance.fetch_materializations(dg.AssetKey("pooled"), limit=100).records) == 2 * EVENTS + 1


def test_the_asset_key_table_is_reflected_once_per_process_not_per_read(home: Path) -> None:
    """Dagster's storage asks which columns the asset key table has on every asset record read (three times
    per asset check evaluation); the pooled storage reflects the table once and gives the same answers after."""
    statements: list[str] = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledPostgresEventLogStorage)
        record_events(instance)

        def executed(_connection: object, _cursor: object, statement: str, *_: object) -> None:
            statements.append(statement)

        sqlalchemy.event.listen(engine_of(storage), "before_cursor_execute", executed)
        for _ in range(EVENTS):
            [record] = instance.get_asset_records([dg.AssetKey("pooled")])
            assert record.asset_entry.last_materialization is not None
        reflections = [statement for statement in statements if "pg_attribute" in statement]
        assert 1 <= len(reflections) <= 2, len(reflections)  # the table's columns, once (not once per read)
        assert storage.has_asset_key_col("last_materialization_timestamp")
        assert not storage.has_asset_key_col("no_such_column")
