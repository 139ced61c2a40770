"""What a physical MariaDB restore needs: extracting an mbstream archive (`mbstream -x`), preparing it
(`mariabackup --prepare`), and a temporary server started on the prepared copy; plus the source's table row
counts, taken in a consistent snapshot.

As root, extraction, preparation and the server run as the dataset's `os_user` (the files must be theirs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pymysql

from backup_pipelines.engines import mysql_fingerprint
from backup_pipelines.engines.base import Feed, run_restore_tool
from backup_pipelines.errors import RestoreTargetError, ValidationFailedError
from backup_pipelines.execute import Command, run
from backup_pipelines.manifest import MysqlDataset, Verification
from backup_pipelines.ports import free_port
from backup_pipelines.system_user import as_user, owned_folder, owned_scratch

SYSTEM_SCHEMAS = ("mysql", "sys", "information_schema", "performance_schema")


def extract_and_prepare(feed: Feed, data: Path, user: str) -> None:
    """Extract the archive `feed` writes into the new folder `data`, then make it a consistent datadir with
    `mariabackup --prepare` (it applies the redo log copied during the backup). Raise RestoreTargetError when
    `user` cannot reach the folder's parent, CommandFailedError when a tool fails."""
    if os.geteuid() == 0 and user != "root":
        reach = subprocess.run(as_user(user, "test", "-x", str(data.parent)), check=False)
        if reach.returncode != 0:
            raise RestoreTargetError(
                f"{data.parent} cannot be reached by {user}, who runs the restored copy: choose a folder under "
                "one open to that user (e.g. /var/tmp), or change the folders' modes"
            )
    owned_folder(data, user)
    run_restore_tool(Command(as_user(user, "mbstream", "-x", "-C", str(data))), feed)
    run(Command(as_user(user, "mariabackup", "--prepare", f"--target-dir={data}")), timeout=None)


@contextlib.contextmanager
def temporary_server(data: Path, user: str, wait_seconds: float) -> Iterator[int]:
    """Start mariadbd on the prepared `data` (with the InnoDB settings the backup recorded in backup-my.cnf)
    on 127.0.0.1 and a free port; yield the port; stop it whatever happens. Raise ValidationFailedError with
    its log if it does not accept connections within `wait_seconds`."""
    work = owned_scratch(user, "bp-mariadb-copy-")
    port = free_port()
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    argv = [
        server,
        f"--defaults-file={data / 'backup-my.cnf'}",
        f"--datadir={data}",
        f"--socket={work / 'mysqld.sock'}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        f"--pid-file={work / 'mysqld.pid'}",
        f"--log-error={work / 'error.log'}",
        "--skip-name-resolve",
        "--skip-slave-start",
        "--innodb-buffer-pool-size=64M",
    ]
    if os.geteuid() == 0:
        argv.append(f"--user={user}")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + wait_seconds
        while not (work / "mysqld.sock").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                log = (work / "error.log").read_text(errors="replace") if (work / "error.log").exists() else ""
                raise ValidationFailedError(f"the restored MariaDB copy did not start: {log[-3000:]}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


def user_tables(cursor: Any, databases: list[str]) -> list[tuple[str, str]]:
    """The (database, table) base tables of `databases` (default: every non-system database), sorted."""
    cursor.execute(
        "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' "
        "order by table_schema, table_name"
    )
    rows = [(str(schema), str(table)) for schema, table in cursor.fetchall()]
    if databases:
        return [row for row in rows if row[0] in databases]
    return [row for row in rows if row[0] not in SYSTEM_SCHEMAS]


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def snapshot(
    connection: Any, databases: list[str], verification: Verification | None
) -> tuple[dict[str, int], dict[str, Any]]:
    """In one consistent snapshot: every table's row count ({"db.table": rows}) and, given the dataset's
    `verification`, the content fingerprint of every database (the mysql kind's items: row digests, SHOW
    CREATE of every object, defaults), each item named "<db> | <item>"."""
    with connection.cursor() as cursor:
        cursor.execute("set session transaction isolation level repeatable read")
        cursor.execute("start transaction with consistent snapshot")
        counts: dict[str, int] = {}
        by_database: dict[str, list[str]] = {}
        for schema, table in user_tables(cursor, databases):
            cursor.execute(f"select count(*) from {quote(schema)}.{quote(table)}")
            counts[f"{schema}.{table}"] = int(cursor.fetchone()[0])
            by_database.setdefault(schema, []).append(table)
        items: dict[str, Any] = {}
        if verification is not None:
            scope = SimpleNamespace(verification=verification, source=SimpleNamespace(exclude_tables=[]))
            for schema, tables in by_database.items():
                found = mysql_fingerprint.fingerprint(cursor, schema, schema, tables, cast(MysqlDataset, scope))
                items.update({f"{schema} | {item}": value for item, value in found.items()})
        cursor.execute("commit")
    return counts, items


def check_tables(connection: Any, tables: list[str]) -> list[str]:
    """Run CHECK TABLE on each "db.table"; return those whose result is not OK, with the message."""
    problems = []
    with connection.cursor() as cursor:
        for name in tables:
            schema, table = name.split(".", 1)
            cursor.execute(f"check table {quote(schema)}.{quote(table)}")
            rows = cursor.fetchall()
            status = [row for row in rows if row[2] in ("status", "error")]
            if not status or any(row[3] != "OK" for row in status):
                problems.append(f"{name}: {'; '.join(str(row[3]) for row in status) or 'no status'}")
    return problems


def connect_copy(port: int, user: str, password: str | None) -> Any:
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=user,
        password=(password or "").encode(),
        autocommit=True,
        charset="utf8mb4",
        connect_timeout=10,
    )
