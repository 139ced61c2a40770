"""Dagster's PostgreSQL instance storage, keeping its connections in a small pool.

dagster-postgres opens a new connection for every storage call outside the webserver (SQLAlchemy's NullPool):
each event a run writes, each check evaluation a sensor or the watch job records, each run the queue looks at.
With password authentication that is a few milliseconds of connecting per call, and on a busy instance it
dominates: a tick of the RPO sensor, or the watch job at 1,000 datasets, spent most of its time connecting
(see benchmarks/bench_monitoring.py). These two classes are the dagster-postgres run and event log storages
with a pool per process instead: a connection is checked before reuse (a restarted server costs no failed
call), recycled after an hour, and closed when the instance is disposed. A forked child drops the connections
it inherited. The schedule storage stays dagster-postgres's own: a Dagster instance does not dispose of it, so
a pool there would keep connections open until the garbage collector finds each instance (a code server makes
an instance per sensor evaluation), and a tick makes only a few calls to it.

Use them in the instance's `dagster.yaml` in place of `storage: postgres:` (deploy/local-postgres/dagster.yaml)
wherever every process that opens the instance can import this package: the daemon, the webserver, the run
workers and the code server.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Self

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
from sqlalchemy.engine import Engine

POOL_SIZE = 2  # connections kept open per storage and process
MAX_OVERFLOW = 20  # more, opened for a burst of concurrent calls and closed when returned
RECYCLE_SECONDS = 3600

_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def pooled_engine(postgres_url: str, token_provider: Any) -> Engine:
    engine = create_pg_engine(
        postgres_url,
        token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=RECYCLE_SECONDS,
        pool_pre_ping=True,
    )
    _ENGINES.add(engine)
    return engine


def _forget_inherited_connections() -> None:
    """In a forked child, let go of the parent's pooled connections without closing them (they are the
    parent's), as SQLAlchemy prescribes; the child opens its own."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


class _Pooled:
    """Mixin for a dagster-postgres storage: swap its per-call engine for a pooled one after it is built."""

    postgres_url: str
    _engine: Engine
    _token_provider: Any

    def _pool(self) -> None:
        unpooled, self._engine = self._engine, pooled_engine(self.postgres_url, self._token_provider)
        unpooled.dispose()

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> Self:
        return cls(
            inst_data=inst_data,  # type: ignore[call-arg]
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool()


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._asset_key_columns: dict[str, bool] = {}
        super().__init__(*args, **kwargs)
        self._pool()

    def _has_asset_key_col_on_connection(self, conn: Any, column_name: str) -> bool:
        """Whether the asset key table has `column_name`, reflected once per process: Dagster reflects the table
        on every call, three times per asset check evaluation (7 s of a 17.5 s watch job at 1,000 datasets).
        Columns are only ever added, by `dagster instance migrate` with the processes stopped."""
        if column_name not in self._asset_key_columns:
            self._asset_key_columns[column_name] = super()._has_asset_key_col_on_connection(conn, column_name)
        return self._asset_key_columns[column_name]
