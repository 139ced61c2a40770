"""The database a benchmark runs on: `--dsn` (an existing one, neither created nor dropped) or `--size-gb` (one
built by bench_postgres in a new sandbox, stopped at the end)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from bench_postgres import build_database
from psycopg.conninfo import conninfo_to_dict

from backup_pipelines.sandbox import start_postgres_sandbox


@dataclass
class Target:
    """The database under test, how to reach it, and its server's postmaster pid if known."""

    host: str
    port: int
    user: str
    password: str
    database: str
    server_pid: int | None


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the required choice between --dsn and --size-gb to `parser`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dsn", help="an existing database (libpq URI); it is neither created nor dropped")
    source.add_argument("--size-gb", type=float, help="build a database of this size in a new sandbox")


@contextlib.contextmanager
def database_target(arguments: argparse.Namespace, name: str, server_pid: int | None = None) -> Iterator[Target]:
    """Yield the database to benchmark: the --dsn one (its server's postmaster pid `server_pid` if known), or a
    database `name` of --size-gb GB in a new sandbox (stopped after)."""
    if arguments.dsn:
        parts = conninfo_to_dict(arguments.dsn)
        password = str(parts.get("password", os.environ.get("PGPASSWORD", "")))
        host, port, user = str(parts.get("host", "127.0.0.1")), int(str(parts.get("port", 5432))), str(parts["user"])
        yield Target(host, port, user, password, str(parts["dbname"]), server_pid)
        return
    sandbox = start_postgres_sandbox(password=name.replace("_", "-"))
    try:
        print(f"[{name}] building a {arguments.size_gb} GB database on port {sandbox.port}", file=sys.stderr)
        size = build_database(sandbox, name, arguments.size_gb)
        print(f"[{name}] database {name}: {size / 1e9:.2f} GB", file=sys.stderr)
        pid = int((sandbox.root / "data" / "postmaster.pid").read_text().split()[0])
        yield Target(sandbox.host, sandbox.port, sandbox.user, sandbox.password, name, pid)
    finally:
        sandbox.stop()
