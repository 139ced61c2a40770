"""What the tests of docs/restore.md share: finding a bash block in the markdown, setting its variables, running
it as a user does, and the environments of the standard tools."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import psycopg

from backup_pipelines.repository import BackupRecord
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import (
    S3Endpoint,
)
from tests.e2e.conftest import BIN, ROOT, run
from tests.postgres_checks import conninfo

BLOCKS = ("postgres", "mysql", "mariabackup", "sqlite", "command", "files", "rds", "ebs", "pgbackrest")
OBJECT_BLOCKS = ("postgres", "mysql", "mariabackup", "sqlite", "command")


def documented_block(name: str) -> str:
    """The bash block of docs/restore.md between `<!-- restore-NAME:begin -->` and its end marker."""
    text = (ROOT / "docs" / "restore.md").read_text()
    pattern = rf"<!-- restore-{name}:begin -->\n```bash\n(.*?)```\n<!-- restore-{name}:end -->"
    block = re.search(pattern, text, re.S)
    assert block is not None, f"docs/restore.md lost its tested restore-{name} block"
    return block.group(1)


def with_variables(script: str, values: dict[str, str]) -> str:
    """`script` with each `NAME=...` line at its top set to `NAME=<value>` (the value quoted for bash)."""
    for name, value in values.items():
        line = f"{name}=" + shlex.quote(value)
        script, count = re.subn(rf"^{name}=.*$", line.replace("\\", "\\\\"), script, count=1, flags=re.M)
        assert count == 1, name
    return script


def run_block(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` as a user does: saved to a file and run with plain `bash` (its own `set` line decides)."""
    path = cwd.parent / f"restore-{cwd.name}.sh"
    path.write_text(script)
    return run(["bash", str(path)], env, cwd=cwd)


def postgres_environment(sandbox: PostgresSandbox) -> dict[str, str]:
    return {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(sandbox.port),
        "PGUSER": sandbox.user,
        "PGPASSWORD": sandbox.password,
        "PATH": f"{BIN}:{sandbox.bin_dir}:/usr/bin:/bin",
    }


def aws_cli_environment(endpoint: S3Endpoint, region: str = "us-east-1") -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def row_counts(sandbox: PostgresSandbox, database: str, record: BackupRecord) -> dict[str, int]:
    with psycopg.connect(conninfo(sandbox, database)) as connection:
        counts = {
            table: connection.execute(f"select count(*) from {table}").fetchone()[0]  # type: ignore[index]
            for table in record.source_stats["tables"]
        }
        counts["large objects"] = connection.execute("select count(*) from pg_largeobject_metadata").fetchone()[0]  # type: ignore[index]
        return counts


def database_exists(sandbox: PostgresSandbox, database: str) -> bool:
    with psycopg.connect(sandbox.conninfo()) as connection:
        return connection.execute("select 1 from pg_database where datname = %s", (database,)).fetchone() is not None
