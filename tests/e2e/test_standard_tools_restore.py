"""The restore runbook in docs/restore.md works with standard tools only: this runs its exact commands, from a
local repository, from S3, and (with the AWS CLI) from RDS and EBS snapshots. AWS is mocked for the last two:
moto's server plays RDS and EC2 (reached through AWS_ENDPOINT_URL, as a MinIO user would reach MinIO)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from backup_pipelines.crypto import KeyPair
from backup_pipelines.operations import run_backup
from backup_pipelines.sandbox import PostgresSandbox
from tests.conftest import S3_KEY_ENV, S3_SECRET_ENV, S3Endpoint, manifest_dict, write_manifest
from tests.e2e.conftest import BIN, ROOT, run


def documented_commands(name: str = "local") -> str:
    text = (ROOT / "docs" / "restore.md").read_text()
    pattern = rf"<!-- restore-{name}:begin -->\n```bash\n(.*?)```\n<!-- restore-{name}:end -->"
    block = re.search(pattern, text, re.S)
    assert block is not None, f"docs/restore.md lost its tested restore-{name} block"
    return block.group(1)


def with_variables(script: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        script, count = re.subn(rf"^{name}=.*$", f"{name}={value}", script, flags=re.M)
        assert count == 1, name
    return script


def test_documented_standard_tool_restore_restores_every_row(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    run_backup(manifest, "app_db", "2026-11-25-01:00")
    newest = run_backup(manifest, "app_db", "2026-11-25-02:00").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    script = with_variables(
        documented_commands(),
        {
            "REPO": str(tmp_path / "repo"),
            "DATASET": "app_db",
            "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
            "TARGET_DB": "restored_by_hand",
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    result = run(
        ["bash", "-euo", "pipefail", "-c", script],
        {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(postgres.port),
            "PGUSER": postgres.user,
            "PGPASSWORD": postgres.password,
            "PATH": f"{postgres.bin_dir}:/usr/bin:/bin",
        },
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert "backup.dump.zst.age: OK" in result.stdout
    assert newest.backup_id in result.stdout
    try:
        with psycopg.connect(postgres.conninfo("restored_by_hand")) as connection:
            for table, rows in newest.source_stats["tables"].items():
                assert connection.execute(f"select count(*) from {table}").fetchone() == (rows,), table
            assert connection.execute("select count(*) from pg_largeobject_metadata").fetchone() == (2,)
    finally:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute("drop database if exists restored_by_hand")


def test_cli_lists_backups_and_restores_to_a_file_without_dagster(
    postgres: PostgresSandbox, age_keys: KeyPair, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "m.yaml"
    manifest = write_manifest(manifest_path, manifest_dict(postgres, tmp_path / "repo", [age_keys.recipient]))
    record = run_backup(manifest, "app_db", "2026-11-25-03:00").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    env = {"BACKUP_MANIFEST": str(manifest_path), "BACKUP_AGE_IDENTITY_FILE": str(tmp_path / "identity.txt")}
    listing = run(["backup-pipelines", "list"], env)
    assert listing.returncode == 0 and record.backup_id in listing.stdout, listing.stderr
    restored = run(["backup-pipelines", "restore", "app_db", "--output", str(tmp_path / "app.dump")], env)
    assert restored.returncode == 0, restored.stderr
    toc = run([f"{postgres.bin_dir}/pg_restore", "--list", str(tmp_path / "app.dump")], {})
    assert "TABLE DATA shop orders" in toc.stdout
    commands = run(["backup-pipelines", "restore-commands", "app_db"], env)
    assert commands.returncode == 0 and record.sha256 in commands.stdout


def aws_cli_environment(endpoint: S3Endpoint, region: str = "us-east-1") -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def test_documented_s3_restore_restores_every_row(
    postgres: PostgresSandbox, age_keys: KeyPair, s3_endpoint: S3Endpoint, bucket: str, tmp_path: Path
) -> None:
    data = manifest_dict(
        postgres, tmp_path / "repo", [age_keys.recipient], s3=(s3_endpoint, bucket), repositories=["s3"]
    )
    manifest = write_manifest(tmp_path / "m.yaml", data)
    run_backup(manifest, "app_db", "2026-11-25-01:00")
    newest = run_backup(manifest, "app_db", "2026-11-25-02:00").record
    (tmp_path / "identity.txt").write_text(age_keys.identity_file_text())
    script = with_variables(
        documented_commands("s3"),
        {
            "BUCKET": bucket,
            "PREFIX": "backups",
            "DATASET": "app_db",
            "AGE_IDENTITY_FILE": str(tmp_path / "identity.txt"),
            "TARGET_DB": "restored_from_s3",
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    environment = {
        **aws_cli_environment(s3_endpoint),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "PGUSER": postgres.user,
        "PGPASSWORD": postgres.password,
        "PATH": f"{BIN}:{postgres.bin_dir}:/usr/bin:/bin",
    }
    result = run(["bash", "-euo", "pipefail", "-c", script], environment, cwd=work)
    assert result.returncode == 0, result.stderr
    assert f"{newest.backup_id}.dump.zst.age" in result.stdout and "backup.dump.zst.age: OK" in result.stdout
    try:
        with psycopg.connect(postgres.conninfo("restored_from_s3")) as connection:
            for table, rows in newest.source_stats["tables"].items():
                assert connection.execute(f"select count(*) from {table}").fetchone() == (rows,), table
    finally:
        with psycopg.connect(postgres.conninfo(), autocommit=True) as admin:
            admin.execute("drop database if exists restored_from_s3")


def test_documented_rds_and_ebs_restores_use_the_newest_snapshot(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    region = "eu-west-1"
    rds = s3_endpoint.client("rds", region)
    ec2 = s3_endpoint.client("ec2", region)
    rds.create_db_instance(
        DBInstanceIdentifier="docs-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="app",
        MasterUserPassword="not-a-real-password",
    )
    volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=4)["VolumeId"]
    repository = {
        "type": "aws_snapshots",
        "region": region,
        "endpoint_url": s3_endpoint.url,
        "access_key_id_env": S3_KEY_ENV,
        "secret_access_key_env": S3_SECRET_ENV,
        "poll_seconds": 1,
    }
    common = {"schedule": "daily", "rpo": "1d", "rto": "1h", "retention": {"keep_last": 3}, "repositories": ["aws"]}
    manifest = write_manifest(
        tmp_path / "aws.yaml",
        {
            "repositories": {"aws": repository},
            "datasets": {
                "docs_db": {**common, "kind": "rds", "source": {"db_instance_identifier": "docs-db", "region": region}},
                "docs_volume": {**common, "kind": "ebs", "source": {"volume_id": volume, "region": region}},
            },
        },
    )
    run_backup(manifest, "docs_db", "2026-11-24")
    newest = run_backup(manifest, "docs_db", "2026-11-25").record
    snapshot = run_backup(manifest, "docs_volume", "2026-11-25").record
    failed_attempt = [{"Key": "bp-dataset", "Value": "docs_db"}, {"Key": "bp-pending-id", "Value": "x"}]
    rds.create_db_snapshot(
        DBSnapshotIdentifier="bp-docs-db-failed", DBInstanceIdentifier="docs-db", Tags=failed_attempt
    )
    failed_attempt[0]["Value"] = "docs_volume"  # newer than the backups, but never committed (no bp-id)
    ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": failed_attempt}])
    environment = {**aws_cli_environment(s3_endpoint, region), "PATH": f"{BIN}:/usr/bin:/bin"}

    script = with_variables(
        documented_commands("rds"),
        {"REGION": region, "DATASET": "docs_db", "TARGET": "docs-db-restored", "CLASS": "db.t3.micro"},
    )
    result = run(["bash", "-euo", "pipefail", "-c", script], environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"restoring {newest.object_name}" in result.stdout and "docs-db-restored." in result.stdout
    [restored] = rds.describe_db_instances(DBInstanceIdentifier="docs-db-restored")["DBInstances"]
    assert restored["DBInstanceStatus"] == "available"

    script = with_variables(
        documented_commands("ebs"), {"REGION": region, "DATASET": "docs_volume", "ZONE": f"{region}b"}
    )
    result = run(["bash", "-euo", "pipefail", "-c", script], environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    new_volume = result.stdout.split()[-1]
    assert f"restored {snapshot.object_name} to vol-" in result.stdout
    [created] = ec2.describe_volumes(VolumeIds=[new_volume])["Volumes"]
    assert created["SnapshotId"] == snapshot.object_name and created["AvailabilityZone"] == f"{region}b"
