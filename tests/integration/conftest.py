"""Integration tests: real PostgreSQL, real S3 wire protocol (moto server), real zstd and age."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.manifest import Manifest
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3Endpoint, manifest_dict, write_manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def big_database(postgres: PostgresSandbox) -> str:
    """A database of about 60 MB of poorly compressible rows, big enough to interrupt a dump mid-stream."""
    with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
        admin.execute("create database big")
    with psycopg.connect(postgres.conninfo("big"), autocommit=True) as connection:
        connection.execute(
            "create table blobs as select g as id, (select string_agg(md5(random()::text), '') "
            "from generate_series(1, 8 + g % 2)) as payload from generate_series(1, 200000) g"
        )
    return "big"


@pytest.fixture
def big_manifest(
    postgres: PostgresSandbox,
    big_database: str,
    s3_endpoint: S3Endpoint,
    bucket: str,
    age_keys: KeyPair,
    tmp_path: Path,
) -> Callable[[list[str]], Manifest]:
    """Return a function writing the manifest that backs up the big database to `repositories` (of "local",
    the folder tmp_path/repo, and "s3", the test's bucket), with an empty `verification:` (no queries)."""

    def write(repositories: list[str]) -> Manifest:
        data = manifest_dict(
            postgres,
            tmp_path / "repo",
            [age_keys.recipient],
            database=big_database,
            s3=(s3_endpoint, bucket),
            repositories=repositories,
            verification={},
        )
        return write_manifest(tmp_path / "m.yaml", data)

    return write


def _children_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name", "").strip() == name and fields.get("PPid", "").strip() == str(os.getpid()):
            found.append(int(entry.name))
    return found


class Killer(threading.Thread):
    """Kills this process's child `name` with SIGKILL once it has written `after_bytes` bytes."""

    def __init__(self, name: str, after_bytes: int) -> None:
        super().__init__(daemon=True)
        self.name_to_kill = name
        self.after_bytes = after_bytes
        self.killed = False
        self.stop = False

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop and not self.killed and time.monotonic() < deadline:
            for pid in _children_named(self.name_to_kill):
                try:
                    written = int(
                        dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())["wchar"]
                    )
                except (OSError, KeyError, ValueError):
                    continue
                if written >= self.after_bytes:
                    os.kill(pid, signal.SIGKILL)
                    self.killed = True
            time.sleep(0.005)
