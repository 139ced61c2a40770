"""postgres_cluster datasets on a real cluster archiving its WAL to a real pgBackRest repository (encrypted).

One cluster per module: full then incremental base backups, a writer stamping rows throughout, verify (and a
corrupted repository file caught by it), the restore test to a random moment and to the newest one, retention
keeping what a kept backup needs, and a broken archive_command failing `pitr-setup`'s check. The restores
to a moment by hand are in test_pgbackrest_restore.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from assets.monitoring import current_freshness, wal_freshness
from assets.pitr import build_marker_sensor
from backup_pipelines.copies import copy_backup
from backup_pipelines.definitions import build_definitions
from backup_pipelines.errors import IntegrityError, StorageError
from backup_pipelines.freshness import plan_alerts
from backup_pipelines.manifest import load_manifest
from backup_pipelines.operations import restore_test_backup, run_backup, verify_backup
from backup_pipelines.pitr_setup import pitr_setup
from backup_pipelines.prune import prune_dataset
from backup_pipelines.quarantine import quarantine_backup
from backup_pipelines.repository import open_repository
from backup_pipelines.repository.pgbackrest_config import cluster_secrets
from backup_pipelines.runbook import restore_commands, setup_lines
from resources import ManifestResource
from tests.conftest import S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint, newest_hour
from tests.integration.pgbackrest_cluster import (
    CIPHER,
    CIPHER_ENV,
    NEEDS_PGBACKREST,
    S3_KEY,
    STANZA,
    Cluster,
    Writer,
    archive_refuses_writes,
    cluster,
)
from tests.integration.tls_s3 import TlsMotoServer, make_certificates

pytestmark = NEEDS_PGBACKREST
__all__ = ["cluster"]  # the module's fixture


def test_setup_backups_verify_restore_test_and_retention(cluster: Cluster) -> None:
    manifest = cluster.manifest()
    report = pitr_setup(manifest, "main_cluster")
    assert report.checked and "archive-push %p" in report.settings["archive_command"]
    assert "PGBACKREST_REPO1_CIPHER_PASS" in report.render()
    assert CIPHER not in Path(report.config_file).read_text()  # secrets travel in the environment only

    with Writer(cluster.sandbox.conninfo()):
        full = run_backup(manifest, "main_cluster", "2026-11-29-00:00").record  # a Sunday midnight: full
        time.sleep(1.5)
        incr = run_backup(manifest, "main_cluster", "2026-12-01-05:00").record
        time.sleep(1.5)
    assert full.format == "pgbackrest-full" and incr.format == "pgbackrest-incr"
    assert incr.source_stats["needs"] == [full.backup_id]
    assert incr.encrypted and incr.bytes_raw > 0

    checks = verify_backup(manifest, "main_cluster", incr)
    assert checks[0].archive["files_checked"] > 0 and checks[0].archive["wal_segments"] >= 1

    result = restore_test_backup(manifest, "main_cluster", incr)
    names = [outcome.name for outcome in result.outcomes]
    assert any(name.startswith("random moment: markers stamped after") for name in names)
    assert any(name.startswith("newest moment: markers stamped before") for name in names)
    assert not result.failures and result.restore_seconds > 0

    store = open_repository(manifest, "pitr")
    assert incr.backup_id in store.restore_tested("main_cluster")
    plan = prune_dataset(manifest, "main_cluster", dry_run=True)
    kept = {record.backup_id: reasons for record, reasons in plan.kept}
    assert full.backup_id in kept and any("needed by" in reason for reason in kept[full.backup_id])
    assert not plan.expired


def test_protect_job_runs_the_chain_and_the_rpo_follows_the_wal(cluster: Cluster) -> None:
    """The Dagster path: the hourly protect job backs up, verifies and restore-tests the cluster; its RPO check
    judges the newest archived WAL segment, not the base backup."""
    cluster.manifest()
    defs = build_definitions(cluster.manifest_path)
    result = defs.resolve_job_def("protect_hourly").execute_in_process(
        partition_key=newest_hour(),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    events = {event.asset_key.path[-1]: event for event in result.get_asset_materialization_events() if event.asset_key}
    assert {"backup", "verify", "restore_test"} <= set(events)
    manifest = load_manifest(cluster.manifest_path)
    fresh = current_freshness(manifest, {}, time.time())[0]
    assert not fresh.stale and fresh.wal_segment and "archived WAL segment" in fresh.describe()


def test_marker_sensor_stamps_each_cluster_once_per_interval(cluster: Cluster) -> None:
    cluster.manifest()
    sensor = build_marker_sensor(load_manifest(cluster.manifest_path))
    instance = dg.DagsterInstance.ephemeral()
    resources = {"manifest": ManifestResource(path=str(cluster.manifest_path))}

    def count() -> int:
        with psycopg.connect(cluster.sandbox.conninfo()) as connection:
            try:
                row = connection.execute("select count(*) from backup_pipelines.pitr_marker").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
            return int(row[0]) if row else 0

    before = count()
    context = dg.build_sensor_context(instance=instance, resources=resources)
    assert "main_cluster" in str(sensor(context).skip_message)  # type: ignore[union-attr]
    again = dg.build_sensor_context(instance=instance, cursor=context.cursor, resources=resources)
    assert "none due" in str(sensor(again).skip_message)  # type: ignore[union-attr]  # marker_every (5m) not passed
    assert count() == before + 1


def test_failing_archive_makes_the_cluster_stale_at_once(cluster: Cluster) -> None:
    """pg_stat_archiver reports a failure newer than the last success: the dataset is stale on the next check,
    long before its RPO has passed, and the description gives the server's reason."""
    manifest = cluster.manifest()
    pitr_setup(manifest, "main_cluster")
    with archive_refuses_writes(cluster):
        with psycopg.connect(cluster.sandbox.conninfo(), autocommit=True) as connection:
            connection.execute("create table if not exists churn (i int)")
            connection.execute("insert into churn values (1)")
            connection.execute("select pg_switch_wal()")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = connection.execute("select failed_count from pg_stat_archiver").fetchone()
                if row and row[0]:
                    break
                time.sleep(0.2)
        item = wal_freshness(manifest, "main_cluster", time.time())
        assert item.stale and item.archive_failing and "archive_command failed" in item.describe()
        alerts, _ = plan_alerts({"main_cluster": {"first_seen": 0, "stale": False}}, [item], None)
        assert [alert.kind for alert in alerts] == ["stale"] and "archive_command failed" in alerts[0].message


def test_corrupted_file_fails_verify_and_a_quarantined_base_is_not_built_on(cluster: Cluster) -> None:
    """A byte flipped in a stored file fails verify; once that backup is quarantined, the next scheduled
    incremental becomes a full one (a chain never grows from a bad base), and expiring the bad one removes it."""
    manifest = cluster.manifest()
    record = run_backup(manifest, "main_cluster", "2026-11-22-00:00").record  # another full
    files = sorted((cluster.folder / "repo" / "backup" / STANZA / record.object_name / "pg_data").rglob("*"))
    victim = max((path for path in files if path.is_file()), key=lambda path: path.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"checksum invalid|not valid|status"):
        verify_backup(manifest, "main_cluster", record)
    quarantine_backup(manifest, "main_cluster", record.backup_id, "verify failed: checksum invalid")
    after = run_backup(manifest, "main_cluster", "2026-11-24-05:00").record  # an incr by the schedule
    assert after.format == "pgbackrest-full"
    store = open_repository(manifest, "pitr")
    store.delete_backup(store.find_backup("main_cluster", record.backup_id))  # type: ignore[arg-type]
    assert store.find_backup("main_cluster", record.backup_id) is None
    assert store.find_backup("main_cluster", after.backup_id) is not None


def test_broken_archive_command_fails_the_check(cluster: Cluster) -> None:
    """The archive_command fails (its repository folder refuses writes): pgbackrest check, and so pitr-setup,
    fail with pgBackRest's reason once archive_wait has passed."""
    manifest = cluster.manifest()
    pitr_setup(manifest, "main_cluster")
    with archive_refuses_writes(cluster), pytest.raises(StorageError, match="check of main_cluster"):
        pitr_setup(manifest, "main_cluster")


def test_prune_expires_with_pgbackrest_and_keeps_chains_whole(cluster: Cluster) -> None:
    """keep_last 1: a real prune expires the older chains through `pgbackrest expire --set`, keeps the newest
    backup with the full it needs, and the newest restore-tested one; pgBackRest lists exactly what is kept."""
    manifest = cluster.manifest(retention={"keep_last": 1, "min_age": "1s"})
    old_full = run_backup(manifest, "main_cluster", "2026-11-15-00:00").record  # an older chain: a full ...
    old_incr = run_backup(manifest, "main_cluster", "2026-11-16-05:00").record  # ... and an incremental on it
    full = run_backup(manifest, "main_cluster", "2026-12-06-00:00").record  # a Sunday: full
    incr = run_backup(manifest, "main_cluster", "2026-12-07-05:00").record
    store = open_repository(manifest, "pitr")
    store.mark_restore_tested(old_incr, {"tested_at": "2026-12-07T06:00:00+00:00"})  # the newest tested one
    planned = prune_dataset(manifest, "main_cluster", dry_run=True)
    done = prune_dataset(manifest, "main_cluster")
    assert {r.backup_id for r in planned.expired} == {r.backup_id for r in done.expired} != set()
    remaining = {record.backup_id for record in store.list_backups("main_cluster")}
    assert {incr.backup_id, full.backup_id} <= remaining
    assert remaining == {record.backup_id for record, _ in done.kept}
    assert not {r.backup_id for r in done.expired} & remaining
    assert {old_incr.backup_id, old_full.backup_id} <= remaining, "the newest restore-tested backup stays, whole"


def test_a_second_repository_gets_its_own_base_backup_and_the_wal(cluster: Cluster) -> None:
    """Two pgbackrest repositories (repo1, repo2): the backup goes to the first, the copy step has pgBackRest
    take the same partition's backup into the second, the archive_command ships the WAL to both, and verify
    checks each repository's own backup."""
    data = cluster.manifest_data(repositories=["pitr", "pitr_offsite"])
    data["repositories"]["pitr_offsite"] = {
        "type": "pgbackrest",
        "path": str(cluster.folder / "repo-offsite"),
        "cipher_pass_env": CIPHER_ENV,
        "offsite": True,
    }
    cluster.manifest_path.write_text(yaml.safe_dump(data))
    manifest = load_manifest(cluster.manifest_path)
    try:
        pitr_setup(manifest, "main_cluster")  # stanza-create on both, check archives to both
        record = run_backup(manifest, "main_cluster", "2026-12-02-06:00").record
        locations = copy_backup(manifest, "main_cluster", record)
        assert set(locations) == {"pitr", "pitr_offsite"} and "repo-offsite" in locations["pitr_offsite"]
        checks = verify_backup(manifest, "main_cluster", record)
        assert [check.repository for check in checks] == ["pitr", "pitr_offsite"]
        assert all(check.archive["files_checked"] > 0 for check in checks)
        again = copy_backup(manifest, "main_cluster", record)  # already there: not taken twice
        assert again == locations
        # the runbook's commands for the copy, run as the cluster's user with the secrets its set-up line names
        offsite = open_repository(manifest, "pitr_offsite")
        (copy,) = [item for item in offsite.list_backups("main_cluster") if item.backup_id == record.backup_id]
        (setup,) = setup_lines(manifest, copy, offsite)
        secrets = cluster_secrets(manifest, "main_cluster")
        assert [variable for variable, _, _ in secrets] == [f"PGBACKREST_REPO{n}_CIPHER_PASS" for n in (1, 2)]
        assert all(f"{variable}=..." in setup for variable, _, _ in secrets)
        info = next(line for line in restore_commands(offsite, copy, "/unused") if " info " in line)
        shown = subprocess.run(
            [shutil.which("runuser") or "runuser", "-u", "postgres", "--", "bash", "-c", info],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", **{variable: os.environ[source] for variable, source, _ in secrets}},
        )
        assert shown.returncode == 0 and f"full backup: {copy.object_name}" in shown.stdout, shown.stderr
        assert "repo2" in shown.stdout and "repo1" not in shown.stdout
    finally:
        cluster.manifest()  # back to one repository


def test_an_s3_repository_over_https_takes_the_wal_and_restores_from_the_bucket(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repository in an S3 bucket (moto over HTTPS, its certificate signed by a CA made for the test and
    given as `ca_file`): pitr-setup creates the stanza and checks the WAL push there, the backup goes to the
    bucket, verify reads it back, and the restore test restores from the bucket to a moment, fetching the WAL
    from it."""
    monkeypatch.setenv(S3_KEY_ENV, S3_KEY)
    monkeypatch.setenv(S3_SECRET_ENV, S3_KEY)
    certificates = make_certificates(cluster.folder)
    server = TlsMotoServer(certificates)
    server.start()
    endpoint = f"127.0.0.1:{server.port}"
    bucket = S3Endpoint(f"https://{endpoint}", str(certificates.ca_file)).client()
    bucket.create_bucket(Bucket="pitr-offsite")
    data = cluster.manifest_data(repositories=["pitr_s3"])
    data["repositories"]["pitr_s3"] = {
        "type": "pgbackrest",
        "path": "/clusters",
        "cipher_pass_env": CIPHER_ENV,
        "s3": {
            "bucket": "pitr-offsite",
            "endpoint": endpoint,
            "uri_style": "path",
            "ca_file": str(certificates.ca_file),
            "access_key_id_env": S3_KEY_ENV,
            "secret_access_key_env": S3_SECRET_ENV,
        },
    }
    cluster.manifest_path.write_text(yaml.safe_dump(data))
    manifest = load_manifest(cluster.manifest_path)
    try:
        certificates.ca_file.chmod(0o600)  # root's alone: pgBackRest, run as postgres, could not read it
        with pytest.raises(StorageError, match="system user postgres cannot read the CA file"):
            pitr_setup(manifest, "main_cluster")
        certificates.ca_file.chmod(0o644)
        report = pitr_setup(manifest, "main_cluster")  # stanza-create and a WAL push into the bucket
        assert report.checked and f"PGBACKREST_REPO1_S3_KEY_SECRET (the value of {S3_SECRET_ENV})" in report.render()
        with Writer(cluster.sandbox.conninfo()):
            record = run_backup(manifest, "main_cluster", "2026-12-02-07:00").record
            time.sleep(1.5)
        assert record.format == "pgbackrest-full" and record.bytes_raw > 0
        stored = [item["Key"] for item in bucket.list_objects_v2(Bucket="pitr-offsite")["Contents"]]
        assert any(key.startswith(f"clusters/backup/{STANZA}/") and "/bundle/" in key for key in stored)
        wal = [key for key in stored if key.startswith(f"clusters/archive/{STANZA}/") and key.endswith(".zst")]
        assert wal, stored
        (check,) = verify_backup(manifest, "main_cluster", record)
        assert check.repository == "pitr_s3" and check.archive["files_checked"] > 0
        result = restore_test_backup(manifest, "main_cluster", record)
        assert not result.failures and result.restore_seconds > 0
        assert any(outcome.name.startswith("random moment") for outcome in result.outcomes)
    finally:
        pitr_setup(cluster.manifest(), "main_cluster")  # back to the folder repository before the server goes
        server.stop()
