"""Session-wide test servers and helpers.

The fixtures start real servers once per test process (scripts/test.sh runs two), bound to 127.0.0.1 only: a
throw-away PostgreSQL cluster (the same sandbox the demo uses), a MariaDB server and moto's standalone S3 server,
which speaks the real S3 wire protocol.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from backup_pipelines.crypto import KeyPair, generate_key_pair
from backup_pipelines.manifest import Manifest, load_manifest
from backup_pipelines.repository import BackupRecord, new_backup_id
from backup_pipelines.sample import create_sample_database, create_sample_mysql_database
from backup_pipelines.sandbox import PostgresSandbox, free_port, start_postgres_sandbox

PG_PASSWORD_ENV = "TEST_PG_PASSWORD"
S3_KEY_ENV = "TEST_S3_ACCESS_KEY_ID"
S3_SECRET_ENV = "TEST_S3_SECRET_ACCESS_KEY"


@functools.cache
def cli_folder() -> Path:
    """An empty folder, one per test process, for the dagster CLIs to run in. Dagster loads the `.env` of the
    folder it runs in over the environment, and the demo (the README's first command) writes one in the project
    folder with its own DAGSTER_HOME and secrets: run there, a test's CLI would use the demo's instance."""
    folder = tempfile.mkdtemp(prefix="bp-cli-")
    atexit.register(shutil.rmtree, folder, True)
    return Path(folder)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresSandbox]:
    """A PostgreSQL server for the whole run, with the sample database `app`."""
    sandbox = start_postgres_sandbox(password="test-password-ünï")
    os.environ[PG_PASSWORD_ENV] = sandbox.password
    try:
        create_sample_database(sandbox.conninfo(), "app")
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def empty_postgres() -> Iterator[PostgresSandbox]:
    """A second PostgreSQL cluster for the whole run, for restores onto an empty server: none of the roles the
    tests create on `postgres` exist there until a restore creates them."""
    sandbox = start_postgres_sandbox(password="fresh-pässword")
    try:
        yield sandbox
    finally:
        sandbox.stop()


MYSQL_PASSWORD_ENV = "TEST_MYSQL_PASSWORD"


@pytest.fixture(scope="session")
def mariadb() -> Iterator[Any]:
    """A MariaDB server for the whole run, with the sample database `shop`."""
    from backup_pipelines.sandbox import start_mariadb_sandbox

    sandbox = start_mariadb_sandbox(password="test-mysql-pässword")
    os.environ[MYSQL_PASSWORD_ENV] = sandbox.password
    try:
        with sandbox.connect() as connection:
            create_sample_mysql_database(connection, "shop")
        yield sandbox
    finally:
        sandbox.stop()


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    ca_file: str | None = None  # the CA an https endpoint's certificate is checked against

    def client(self, service: str = "s3", region: str = "us-east-1") -> Any:
        """A boto3 client of any service moto's server plays (S3, RDS, EC2, KMS, ...)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            verify=self.ca_file,
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1 for the whole run."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({S3_KEY_ENV: "testing", S3_SECRET_ENV: "testing"})
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def age_keys() -> KeyPair:
    return generate_key_pair()


@pytest.fixture
def bucket(s3_endpoint: S3Endpoint, request: pytest.FixtureRequest) -> str:
    """A new empty bucket for one test."""
    name = "bp-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{os.getpid() % 1000}"
    s3_endpoint.client().create_bucket(Bucket=name)
    return name


def manifest_dict(
    postgres: PostgresSandbox,
    repository_root: Path,
    recipients: list[str],
    database: str = "app",
    s3: tuple[S3Endpoint, str] | None = None,
    repositories: list[str] | None = None,
    **dataset_fields: Any,
) -> dict[str, Any]:
    """Return a manifest (as data) with one postgres dataset `app_db` on the test server."""
    manifest: dict[str, Any] = {
        "partition_start": "2026-11-01",
        "repositories": {"local": {"type": "local", "path": str(repository_root)}},
        "servers": {
            "pg": {
                "kind": "postgres",
                "host": "127.0.0.1",
                "port": postgres.port,
                "user": postgres.user,
                "password_env": PG_PASSWORD_ENV,
            },
        },
        "datasets": {
            "app_db": {
                "kind": "postgres",
                "schedule": "hourly",
                "rpo": "2h",
                "rto": "30m",
                "retention": {"keep_hourly": 24},
                "repositories": repositories or ["local"],
                "encryption": {"recipients": recipients} if recipients else {"enabled": False},
                "source": {"server": "pg", "database": database},
                "verification": {
                    "queries": [
                        {
                            "name": "orders",
                            "sql": "select count(*) from shop.orders",
                            "expect": {"same_as_source": True, "min": 1},
                        },
                    ]
                },
                **dataset_fields,
            }
        },
    }
    if s3 is not None:
        endpoint, bucket_name = s3
        manifest["repositories"]["s3"] = {
            "type": "s3",
            "bucket": bucket_name,
            "prefix": "backups",
            "endpoint_url": endpoint.url,
            "access_key_id_env": S3_KEY_ENV,
            "secret_access_key_env": S3_SECRET_ENV,
            "part_size_mb": 5,
        }
    return manifest


def newest_hour(margin: timedelta = timedelta(seconds=90)) -> str:
    """The newest complete hourly partition. The backup asset refuses a partition once a newer one is complete,
    so a test must take it when it starts, not when its module was imported: a suite runs across hours. Less
    than `margin` before the hour turns, wait for the turn, so the key stays on time for at least `margin`."""
    import dagster as dg

    now = datetime.now(UTC)
    turn = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if turn - now < margin:
        time.sleep((turn - now).total_seconds() + 1)
    key = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", timezone="UTC").get_last_partition_key()
    assert key is not None
    return key


def stored_files(root: Path) -> list[Path]:
    """Every file under `root` (a local repository), sorted; [] when it does not exist."""
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def write_manifest(path: Path, data: dict[str, Any]) -> Manifest:
    """Write `data` as YAML to `path` and return it loaded."""
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return load_manifest(path)


def manifest_for(
    tmp_path: Path, age_keys: KeyPair, datasets: dict[str, Any], servers: dict[str, Any] | None = None
) -> Manifest:
    """Write and load a manifest with one local repository under `tmp_path`, the `servers` given, and
    `datasets`: each daily, kept 7 days, encrypted to `age_keys`, then its own fields (kind, source, ...)."""
    base = {
        "schedule": "daily",
        "rpo": "26h",
        "rto": "1h",
        "retention": {"keep_daily": 7},
        "repositories": ["local"],
        "encryption": {"recipients": [age_keys.recipient]},
    }
    data = {
        "partition_start": "2026-11-01",
        "repositories": {"local": {"type": "local", "path": str(tmp_path / "repo")}},
        **({"servers": servers} if servers else {}),
        "datasets": {name: {**base, **fields} for name, fields in datasets.items()},
    }
    return write_manifest(tmp_path / "m.yaml", data)


def mysql_server(mariadb: Any, port: int | None = None) -> dict[str, Any]:
    """The manifest entry of the session's MariaDB server (another `port` to point at a closed one)."""
    return {
        "kind": "mysql",
        "host": "127.0.0.1",
        "port": port or mariadb.port,
        "user": mariadb.user,
        "password_env": MYSQL_PASSWORD_ENV,
    }


@dataclass
class Received:
    method: str
    path: str
    body: bytes


class AlertReceiver:
    """A local HTTP server on 127.0.0.1 that records every request and answers with scripted statuses."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.requests: list[Received] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.requests.append(Received(self.command, self.path, self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                body = b'{"ok": true, "channel": "C1", "ts": "1.0"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = _handle

            def log_message(self, *arguments: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json_bodies(self, path_prefix: str = "/") -> list[dict[str, Any]]:
        import json

        return [json.loads(r.body) for r in self.requests if r.path.startswith(path_prefix) and r.body.startswith(b"{")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    server = AlertReceiver()
    try:
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Count the fault suite's cases (tests/faults) by category and outcome. It lives here because with worker
    processes (pytest-xdist) only the controlling process writes the summary, and it loads this conftest only."""
    reports = [
        report
        for outcome in ("passed", "failed", "skipped", "error")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") in ("call", "setup") and "tests/faults/" in str(report.nodeid)
    ]
    counted: dict[str, str] = {}
    for report in reports:  # one outcome per case: a failed setup, else the call
        if report.when == "call" or report.outcome != "passed":
            counted[report.nodeid] = report.outcome
    if not counted:
        return
    by_category = Counter(
        nodeid.split("/")[-1].split("::")[0].removeprefix("test_").removesuffix(".py") for nodeid in counted
    )
    outcomes = Counter(counted.values())
    terminalreporter.write_sep("-", f"fault suite: {len(counted)} injected faults")
    for category, count in sorted(by_category.items()):
        terminalreporter.write_line(f"  {category}: {count}")
    terminalreporter.write_line("  outcomes: " + ", ".join(f"{key} {value}" for key, value in sorted(outcomes.items())))


def backup_record(backup_id: str | None = None, **fields: Any) -> BackupRecord:
    """A BackupRecord for tests: a postgres backup of dataset orders (a new backup id unless `backup_id`, its
    object named after it), with any other field given in `fields`."""
    backup_id = backup_id or new_backup_id()
    defaults: dict[str, Any] = {
        "dataset": "orders",
        "partition_key": "2026-11-01-05:00",
        "kind": "postgres",
        "format": "pg_dump-custom",
        "object_name": f"{backup_id}.dump.zst",
        "created_at": "2026-11-01T06:05:00+00:00",
        "bytes_raw": 10,
        "bytes_stored": 4,
        "sha256": "0" * 64,
        "compression": "zstd",
        "encrypted": False,
    }
    return BackupRecord(backup_id=backup_id, **{**defaults, **fields})
