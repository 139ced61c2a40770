"""Restoring a postgres_cluster to a moment by hand: `backup-pipelines pitr-restore` and docs/restore.md's
pgBackRest block (run verbatim as the postgres user), each checked by starting the copy and counting the
rows written before and after the moment."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import psycopg

from backup_pipelines.cli import main
from backup_pipelines.engines.pitr_server import temporary_server, wait_promoted
from backup_pipelines.engines.postgres import connect
from backup_pipelines.manifest import PostgresServerConfig
from backup_pipelines.operations import run_backup
from backup_pipelines.pitr_setup import pitr_setup
from tests.e2e.restore_blocks import documented_block, with_variables
from tests.integration.pgbackrest_cluster import CIPHER, NEEDS_PGBACKREST, STANZA, Cluster, cluster

pytestmark = NEEDS_PGBACKREST
__all__ = ["cluster"]  # the module's fixture


def _stamped_then_moment(cluster: Cluster) -> tuple[datetime, str, str]:
    """Five rows, a moment, seven rows, each batch under a new label; return (moment, before, after labels)."""
    before, after = f"before-{time.time_ns()}", f"after-{time.time_ns()}"
    with psycopg.connect(cluster.sandbox.conninfo(), autocommit=True) as connection:
        connection.execute("create table if not exists timeline (phase text, at timestamptz default clock_timestamp())")
        connection.execute("insert into timeline (phase) select %s from generate_series(1, 5)", (before,))
        time.sleep(1.5)
        row = connection.execute("select clock_timestamp()").fetchone()
        assert row is not None
        moment: datetime = row[0]
        time.sleep(1.5)
        connection.execute("insert into timeline (phase) select %s from generate_series(1, 7)", (after,))
    return moment, before, after


def _phases_when_started(cluster: Cluster, data: Path) -> dict[str, int]:
    """Start a server on the restored `data`, wait for recovery, and count the timeline rows by phase."""
    manifest = cluster.manifest()
    server = manifest.servers["pg"]
    assert isinstance(server, PostgresServerConfig)
    environment = {"PGBACKREST_REPO1_CIPHER_PASS": CIPHER}
    with temporary_server(data, f"{cluster.sandbox.bin_dir}/pg_ctl", "postgres", 120, environment) as restored:
        local = server.model_copy(update={"port": restored.port, "sslmode": "disable"})
        wait_promoted(lambda: connect(local, "postgres", cluster.sandbox.password), restored, 120)
        with connect(local, "postgres", cluster.sandbox.password) as connection:
            return dict(connection.execute("select phase, count(*) from timeline group by phase").fetchall())


def test_pitr_restore_command_recovers_to_the_moment(cluster: Cluster) -> None:
    manifest = cluster.manifest()
    run_backup(manifest, "main_cluster", "2026-12-01-09:00")
    moment, before, after = _stamped_then_moment(cluster)
    pitr_setup(manifest, "main_cluster")  # pgbackrest check: the segment holding the rows after is archived
    data = cluster.folder / "restored-by-cli"  # pytest's own folders are closed to the postgres user
    arguments = ["--manifest", str(cluster.manifest_path), "pitr-restore", "main_cluster", "--data-directory"]
    assert main([*arguments, str(data), "--time", moment.isoformat()]) == 0
    phases = _phases_when_started(cluster, data)
    assert phases.get(before) == 5 and after not in phases
    assert main([*arguments, str(data), "--time", moment.isoformat()]) == 1  # never overwrites


def test_documented_pgbackrest_block_recovers_to_the_moment(cluster: Cluster) -> None:
    """docs/restore.md's block, run verbatim as the postgres user with only its variables set."""
    manifest = cluster.manifest()
    run_backup(manifest, "main_cluster", "2026-12-01-10:00")
    moment, before, after = _stamped_then_moment(cluster)
    pitr_setup(manifest, "main_cluster")
    work = cluster.folder / "documented"
    work.mkdir(mode=0o755)
    shutil.chown(work, "postgres", "postgres")  # the block runs as the cluster's user, who makes the new folder
    secret = work / "cipher.txt"
    secret.write_text(CIPHER + "\n")
    secret.chmod(0o644)
    data = work / "restored"
    script = with_variables(
        documented_block("pgbackrest"),
        {
            "PGBACKREST_CONFIG": str(cluster.folder / "pgbackrest.conf"),
            "STANZA": STANZA,
            "CIPHER_PASS_FILE": str(secret),
            "TARGET_TIME": moment.isoformat(sep=" "),
            "NEW_DATA_DIR": str(data),
        },
    )
    path = work / "restore.sh"
    path.write_text(script)
    path.chmod(0o644)
    completed = subprocess.run(
        [shutil.which("runuser") or "runuser", "-u", "postgres", "--", "bash", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
    )
    assert completed.returncode == 0, completed.stderr
    phases = _phases_when_started(cluster, data)
    assert phases.get(before) == 5 and after not in phases
