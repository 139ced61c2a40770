"""Dataset kinds. `engine_for` is the one dispatch point from a dataset kind to its engine."""

from __future__ import annotations

from typing import Any

from backup_pipelines.engines.base import CheckOutcome, Dump, Engine, RestoreReport, StoringEngine
from backup_pipelines.engines.command import CommandEngine
from backup_pipelines.engines.files import FilesEngine
from backup_pipelines.engines.mariabackup import MariabackupEngine
from backup_pipelines.engines.mysql import MysqlEngine
from backup_pipelines.engines.pgbackrest import PgBackRestEngine
from backup_pipelines.engines.postgres import PostgresEngine
from backup_pipelines.engines.snapshots import AuroraEngine, EbsEngine, RdsEngine
from backup_pipelines.engines.sqlite import SqliteEngine

__all__ = [
    "ENGINES",
    "STORING_ENGINES",
    "CheckOutcome",
    "Dump",
    "Engine",
    "RestoreReport",
    "StoringEngine",
    "engine_for",
]

ENGINES: dict[str, Engine] = {
    "postgres": PostgresEngine(),
    "mysql": MysqlEngine(),
    "mariadb_physical": MariabackupEngine(),
    "sqlite": SqliteEngine(),
    "command": CommandEngine(),
}

# Kinds that store through their own tool or service (restic, AWS snapshots, pgBackRest) instead of the object pipeline.
STORING_ENGINES: dict[str, StoringEngine[Any]] = {
    "files": FilesEngine(),
    "rds": RdsEngine(),
    "aurora": AuroraEngine(),
    "ebs": EbsEngine(),
    "postgres_cluster": PgBackRestEngine(),
}


def engine_for(kind: str) -> Engine:
    """Return the engine of dataset kind `kind`. Raise KeyError naming the implemented kinds if none."""
    if kind not in ENGINES:
        raise KeyError(f"no engine for dataset kind {kind!r} (implemented: {', '.join(ENGINES)})")
    return ENGINES[kind]
