"""The disaster-recovery runbook, rendered from the manifest and the latest measurements.

Per dataset: what it is, where its backups are, the exact standard-tool commands to restore the newest one,
the RPO and RTO targets against what was measured, and when a restore test last passed. Markdown, so it
reads well printed, in a wiki, or in a terminal at 3 a.m.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime

from backup_pipelines.crypto import fingerprint
from backup_pipelines.durations import describe_duration
from backup_pipelines.manifest import SNAPSHOT_KINDS, Manifest
from backup_pipelines.repository import BackupRecord, BackupStore, ResticRepository
from backup_pipelines.repository.aws_snapshots import SnapshotStore


@dataclass(frozen=True)
class Measured:
    """What the last runs measured for one dataset (all optional: a new dataset has none)."""

    newest_backup: BackupRecord | None = None
    newest_backup_uri: str | None = None
    repository: BackupStore | None = None
    last_restore_test_at: float | None = None
    measured_rto_seconds: float | None = None


OBJECT_SETUP = "export AGE_IDENTITY_FILE=/path/to/age-identity.txt PGHOST=... PGUSER=... PGPASSWORD=..."
SNAPSHOT_SETUP = "export AWS_PROFILE=...  # an account allowed to restore snapshots in the region below"


def restore_commands(repository: BackupStore, record: BackupRecord, database: str = "restored") -> list[str]:
    """Return the shell commands that restore `record` with standard tools only (cp or aws s3 cp,
    sha256sum, age, zstd, pg_restore), as docs/restore.md explains them."""
    if isinstance(repository, SnapshotStore):
        return snapshot_restore_commands(repository, record, database)
    if isinstance(repository, ResticRepository):
        return [
            f"export RESTIC_REPOSITORY={shlex.quote(repository.location)} RESTIC_PASSWORD=...  # its password",
            f"restic snapshots --tag bp-id={record.backup_id}",
            f"restic restore {record.object_name} --target {shlex.quote(database)}",
        ]
    uri = repository.uri(record.object_path)
    fetch = (
        f"aws s3 cp {shlex.quote(uri)} backup.obj" if uri.startswith("s3://") else f"cp {shlex.quote(uri)} backup.obj"
    )
    raw = record.object_name.removeprefix(f"{record.backup_id}.").removesuffix(".age").removesuffix(".zst")
    plain = f"backup.{raw}"
    if record.encrypted:
        decode = f'age -d -i "$AGE_IDENTITY_FILE" backup.obj | zstd -d -q -o {plain}'
    else:
        decode = f"zstd -d -q backup.obj -o {plain}"
    return [
        fetch,
        f"echo '{record.sha256}  backup.obj' | sha256sum -c -",
        decode,
        *LAST_STEPS[record.kind](plain, database),
    ]


def snapshot_restore_commands(store: SnapshotStore, record: BackupRecord, target: str) -> list[str]:
    """Return the AWS CLI commands that restore an RDS or EBS snapshot into a new instance or volume."""
    region = shlex.quote(store.region)
    name = shlex.quote(target.replace("_", "-"))
    if record.kind == "aurora":
        return [
            f"aws rds describe-db-cluster-snapshots --region {region} --db-cluster-snapshot-identifier "
            f"{record.object_name}",
            f"aws rds restore-db-cluster-from-snapshot --region {region} --db-cluster-identifier {name} "
            f"--snapshot-identifier {record.object_name} --engine {record.source_stats.get('engine') or '<engine>'}",
            f"aws rds create-db-instance --region {region} --db-cluster-identifier {name} --db-instance-identifier "
            f"{name}-1 --db-instance-class <class> --engine {record.source_stats.get('engine') or '<engine>'}",
            f"aws rds wait db-instance-available --region {region} --db-instance-identifier {name}-1",
            "# then point the application at the cluster endpoint (describe-db-clusters)",
        ]
    if record.kind == "rds":
        return [
            f"aws rds describe-db-snapshots --region {region} --db-snapshot-identifier {record.object_name}",
            f"aws rds restore-db-instance-from-db-snapshot --region {region} --db-instance-identifier {name} "
            f"--db-snapshot-identifier {record.object_name} --db-instance-class <class> --no-publicly-accessible",
            f"aws rds wait db-instance-available --region {region} --db-instance-identifier {name}",
            "# then point the application at the new endpoint (describe-db-instances), or rename the instances",
        ]
    return [
        f"aws ec2 describe-snapshots --region {region} --snapshot-ids {record.object_name}",
        f"aws ec2 create-volume --region {region} --snapshot-id {record.object_name} --availability-zone <zone> "
        f"--volume-type gp3 --tag-specifications 'ResourceType=volume,Tags=[{{Key=Name,Value={name}}}]'",
        f"aws ec2 wait volume-available --region {region} --filters Name=tag:Name,Values={name}",
        "# then attach it: aws ec2 attach-volume --volume-id <vol-id> --instance-id <instance> --device /dev/sdf",
    ]


LAST_STEPS = {
    "postgres": lambda plain, database: [
        f"pg_restore --list {plain} > /dev/null",
        f"createdb {shlex.quote(database)}",
        f"pg_restore --no-owner --exit-on-error --dbname={shlex.quote(database)} {plain}",
    ],
    "mysql": lambda plain, database: [
        f"tail -n 1 {plain}  # must be: -- Dump completed ...",
        f"mysql -e 'create database {database} character set utf8mb4'",
        f"mysql --default-character-set=utf8mb4 {database} < {plain}",
    ],
    "sqlite": lambda plain, database: [
        f"sqlite3 {plain} 'pragma integrity_check'",
        f"mv {plain} {shlex.quote(database)}.sqlite",
    ],
    "command": lambda plain, database: [
        f"# {plain} is exactly what the dataset's command wrote: give it to the tool's own restore command",
    ],
}


def measured_from_repositories(manifest: Manifest) -> dict[str, Measured]:
    """Return each active dataset's newest committed backup, read from its repositories (first that has one)."""
    from backup_pipelines.repository import open_repository

    measured = {}
    for name, dataset in manifest.active_datasets().items():
        for repository_name in dataset.repositories:
            repository = open_repository(manifest, repository_name)
            records = repository.list_backups(name)
            if records:
                newest = records[-1]
                measured[name] = Measured(newest, repository.uri(newest.object_path), repository)
                break
    return measured


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC") if epoch else "never"


def _span(seconds: float | None) -> str:
    return "not measured" if seconds is None else describe_duration(seconds)


def render_runbook(manifest: Manifest, measured: dict[str, Measured], now: float) -> str:
    """Return the DR runbook (Markdown) for every active dataset of `manifest`."""
    lines = [
        "# Disaster-recovery runbook",
        "",
        f"Generated {_when(now)} from `{manifest.path.name if manifest.path else 'the manifest'}` and the latest "
        "measurements. Restores need only standard tools: see docs/restore.md.",
        "",
        "You need the age identity (private key) matching the recipients below, kept apart from the backups.",
        "",
    ]
    for name, dataset in manifest.active_datasets().items():
        item = measured.get(name, Measured())
        record = item.newest_backup
        age = None if record is None else now - record.created.timestamp()
        rpo, rto = dataset.rpo.total_seconds(), dataset.rto.total_seconds()
        stale = " (**STALE**)" if age is None or age > rpo else ""
        slow = " (**over target**)" if item.measured_rto_seconds and item.measured_rto_seconds > rto else ""
        if record is None:
            keys = "unknown"
        elif record.kind in SNAPSHOT_KINDS:
            keys = (
                f"KMS ({record.source_stats.get('kms_key_id') or 'no key recorded'})"
                if record.encrypted
                else "not encrypted"
            )
        elif record.encrypted:
            keys = ", ".join(fingerprint(recipient) for recipient in record.recipients)
        else:
            keys = "not encrypted"
        lines += [
            f"## {name}",
            "",
            dataset.description or f"{dataset.kind} dataset",
            "",
            f"- Source: {dataset.source_summary()}",
            f"- Schedule: {dataset.schedule}; repositories: {', '.join(dataset.repositories)}",
            f"- RPO target {_span(rpo)}; newest backup is {_span(age)} old{stale}",
            f"- RTO target {_span(rto)}; last measured restore {_span(item.measured_rto_seconds)}{slow}",
            f"- Last successful restore test: {_when(item.last_restore_test_at)}",
            f"- Encrypted to: {keys}",
            "",
        ]
        if record is None or item.repository is None:
            lines += ["No committed backup found: there is nothing to restore. Check the backup runs.", ""]
            continue
        lines += [
            f"Newest backup: `{record.backup_id}` (partition {record.partition_key}, {record.bytes_stored:,} bytes, "
            f"taken {record.created_at[:19]} UTC) at `{item.newest_backup_uri}`.",
            "",
            "```bash",
            SNAPSHOT_SETUP if record.kind in SNAPSHOT_KINDS else OBJECT_SETUP,
            *restore_commands(item.repository, record, f"{name}_restored"),
            "```",
            "",
        ]
        tables = record.source_stats.get("tables", {})
        if tables:
            lines += ["Row counts at backup time (the restored copy must match):", ""]
            lines += [f"- `{table}`: {rows:,}" for table, rows in sorted(tables.items())] + [""]
    return "\n".join(lines)
