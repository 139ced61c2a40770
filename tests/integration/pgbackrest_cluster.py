"""The pgBackRest test modules' cluster: one real PostgreSQL cluster per module, archiving its WAL to an
encrypted pgBackRest repository in a folder the postgres user can reach, with the manifest that protects it,
a writer stamping rows, and a way to make the archive refuse writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from backup_pipelines.manifest import Manifest, load_manifest
from backup_pipelines.pitr_setup import archive_settings
from backup_pipelines.sandbox import PostgresSandbox, start_postgres_sandbox

NEEDS_PGBACKREST = pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest is not installed")

CIPHER_ENV = "TEST_PGBACKREST_CIPHER"
PASSWORD_ENV = "TEST_PITR_PG_PASSWORD"
CIPHER = "test-cipher-pass-0123456789"
S3_KEY = "testing"  # both the key id and the secret
STANZA = "main"


class Cluster:
    def __init__(self, sandbox: PostgresSandbox, folder: Path) -> None:
        self.sandbox, self.folder = sandbox, folder
        self.manifest_path = folder / "backup_manifest.yaml"

    def manifest_data(self, **changes: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "partition_start": "2026-11-01",
            "repositories": {
                "pitr": {"type": "pgbackrest", "path": str(self.folder / "repo"), "cipher_pass_env": CIPHER_ENV}
            },
            "servers": {
                "pg": {
                    "kind": "postgres",
                    "host": "127.0.0.1",
                    "port": self.sandbox.port,
                    "user": self.sandbox.user,
                    "password_env": PASSWORD_ENV,
                }
            },
            "datasets": {
                "main_cluster": {
                    "kind": "postgres_cluster",
                    "schedule": "hourly",
                    "rpo": "10m",
                    "rto": "10m",
                    "retention": {"keep_last": 1},
                    "repositories": ["pitr"],
                    "source": {
                        "server": "pg",
                        "data_directory": str(self.sandbox.root / "data"),
                        "socket_directory": str(self.sandbox.root / "socket"),
                        "stanza": STANZA,
                        "config_file": str(self.folder / "pgbackrest.conf"),
                        "archive_wait": "10s",
                    },
                }
            },
        }
        data["datasets"]["main_cluster"].update(changes)
        return data

    def manifest(self, **changes: Any) -> Manifest:
        self.manifest_path.write_text(yaml.safe_dump(self.manifest_data(**changes)))
        return load_manifest(self.manifest_path)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bp-pitr-test-{os.getpid()}"
    folder.mkdir(mode=0o755)
    settings = archive_settings(folder / "pgbackrest.conf", STANZA, timedelta(seconds=30))
    os.environ[CIPHER_ENV] = CIPHER
    sandbox = start_postgres_sandbox(
        password="pitr-pässword",
        settings=settings,
        # the archive_command pushes to every repository configured: the copy test adds a second one, the S3
        # test puts the first in a bucket (moto takes any key)
        environment={
            **{f"PGBACKREST_REPO{index}_CIPHER_PASS": CIPHER for index in (1, 2)},
            **{f"PGBACKREST_REPO1_S3_{name}": S3_KEY for name in ("KEY", "KEY_SECRET")},
        },
    )
    os.environ[PASSWORD_ENV] = sandbox.password
    try:
        yield Cluster(sandbox, folder)
    finally:
        sandbox.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def archive_refuses_writes(cluster: Cluster) -> Iterator[None]:
    """Make the repository's WAL archive refuse writes (so the cluster's archive_command fails) until the end."""
    archive = cluster.folder / "repo" / "archive" / STANZA
    folders = [archive, *(path for path in archive.rglob("*") if path.is_dir())]
    for folder in folders:
        folder.chmod(0o500)
    try:
        yield
    finally:
        for folder in folders:
            folder.chmod(0o750)


class Writer:
    """Inserts a stamped row every 50 ms until stopped."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo, self.stop_flag = conninfo, threading.Event()
        self.thread = threading.Thread(target=self.write, daemon=True)

    def write(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            connection.execute("create table if not exists stamped (at timestamptz default clock_timestamp())")
            while not self.stop_flag.is_set():
                connection.execute("insert into stamped default values")
                time.sleep(0.05)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop_flag.set()
        self.thread.join()
