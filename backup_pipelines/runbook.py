"""The disaster-recovery runbook, rendered from the manifest and the latest measurements.

Per dataset: what it is, where its backups are, the exact standard-tool commands to restore the newest one,
the RPO and RTO targets against what was measured, and when a restore test last passed. Markdown, so it
reads well printed, in a wiki, or in a terminal at 3 a.m.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from backup_pipelines.crypto import fingerprint
from backup_pipelines.durations import describe_duration
from backup_pipelines.manifest import SNAPSHOT_KINDS, Manifest, PgBackRestRepositoryConfig
from backup_pipelines.repository import BackupRecord, BackupStore, ResticRepository
from backup_pipelines.repository.aws_snapshots import SnapshotStore
from backup_pipelines.repository.pgbackrest import PgBackRestRepository
from backup_pipelines.repository.pgbackrest_config import cluster_secrets
from backup_pipelines.units import human_bytes


@dataclass(frozen=True)
class Measured:
    """What the last runs measured for one dataset (all optional: a new dataset has none)."""

    newest_backup: BackupRecord | None = None
    newest_backup_uri: str | None = None
    repository: BackupStore | None = None
    last_restore_test_at: float | None = None
    measured_rto_seconds: float | None = None
    quarantined: tuple[BackupRecord, ...] = ()  # backups newer than `newest_backup` that are quarantined
    problems: tuple[str, ...] = ()  # repositories that could not be read, damaged sidecars met on the way


AGE_SETUP = "AGE_IDENTITY_FILE=/path/to/age-identity.txt"
SERVER_SETUP = {  # what each kind's restore needs besides the age identity
    "postgres": "PGHOST=... PGPORT=5432 PGUSER=... PGPASSWORD=...  # the server to restore onto",
    "mysql": "MYSQL_PWD=...  # the password of DB_USER on the server set below (DB_HOST, DB_PORT, DB_USER)",
}
SNAPSHOT_SETUP = "export AWS_PROFILE=...  # an account allowed to restore snapshots in the region below"


def restore_commands(repository: BackupStore, record: BackupRecord, database: str = "restored") -> list[str]:
    """Return the shell commands that restore `record` with standard tools only, as docs/restore.md explains
    them: a bash script that stops at the first failure, works in a new temporary folder, fetches the backup's
    objects (cp or aws s3 cp; a PostgreSQL backup's globals.sql companion too), checks each against its
    recorded sha256, decodes them (age, zstd) and restores into the new database (or file) `database` with the
    kind's tool, names quoted for the shell and, inside MySQL statements, with backticks."""
    if isinstance(repository, SnapshotStore):
        return snapshot_restore_commands(repository, record, database)
    if isinstance(repository, PgBackRestRepository):
        return pgbackrest_restore_commands(repository, record, database)
    if isinstance(repository, ResticRepository):
        return [
            "set -euo pipefail",
            f"export RESTIC_REPOSITORY={shlex.quote(repository.location)} RESTIC_PASSWORD=...  # its password",
            f"restic snapshots --tag bp-id={shlex.quote(record.backup_id)}",
            f"mkdir -- {shlex.quote(database)}  # a new folder (any name, even one starting with a dash)",
            f"restic restore {shlex.quote(record.object_name)} {shlex.quote('--target=' + database)} --verify",
            "# restic 0.14 skips sockets and writes symlink targets that are not UTF-8 with U+FFFD: "
            "`backup-pipelines restore` puts those back from the walk "
            f"(restic dump latest --tag bp-walk={shlex.quote(record.backup_id)} /walk.jsonl)",
        ]
    objects = [("backup.obj", record.object_path, record.sha256, f"backup.{_plain_extension(record.object_name)}")]
    if "globals.sql" in record.companions:
        globals_sha256 = record.companions["globals.sql"]["sha256"]
        objects.append(("globals.obj", record.companion_path("globals.sql"), globals_sha256, "globals.sql"))
    commands = ["set -euo pipefail", 'cd "$(mktemp -d)"  # a new, empty folder ($OLDPWD: where you started)']
    for local, path, _, _ in objects:
        uri = repository.uri(path)
        verb = "aws s3 cp --quiet" if uri.startswith("s3://") else "cp"
        commands.append(f"{verb} {shlex.quote(uri)} {local}")
    commands += [f"echo '{sha256}  {local}' | sha256sum -c -" for local, _, sha256, _ in objects]
    for local, _, _, plain in objects:
        if record.encrypted:
            commands.append(f'age -d -i "$AGE_IDENTITY_FILE" {local} | zstd -d -q -o {shlex.quote(plain)}')
        else:
            commands.append(f"zstd -d -q {local} -o {shlex.quote(plain)}")
    return [*commands, *LAST_STEPS[record.kind](record, objects[0][3], database)]


def pgbackrest_restore_commands(store: PgBackRestRepository, record: BackupRecord, target: str) -> list[str]:
    """Return the pgBackRest commands that restore a cluster's base backup into the new data directory
    `target`, recovering to the end of the archive, or to a moment (docs/restore.md, "PostgreSQL clusters")."""
    settings = store.settings(record.dataset)
    base = (
        f"pgbackrest --config={shlex.quote(str(settings.config_file))} --stanza={shlex.quote(settings.stanza)} "
        f"--repo={settings.repo_index(store.name)}"
    )
    return [
        "set -euo pipefail",
        f"{base} info --set={record.object_name}",
        f"{base} restore --set={record.object_name} --pg1-path={shlex.quote(target)} --archive-mode=off",
        f"# or to a moment: add --type=time --target='YYYY-MM-DD HH:MM:SS+00' --target-action=promote (after "
        f"{record.source_stats.get('stopped_at', 'the backup ended')})",
        f"pg_ctl -D {shlex.quote(target)} -o '-p 5433' start  # recovery replays the archived WAL, then promotes",
    ]


def _plain_extension(object_name: str) -> str:
    """Return the extension of what a stored object holds once decoded: `dump` for `<id>.dump.zst.age`."""
    return object_name.split(".", 1)[-1].removesuffix(".age").removesuffix(".zst")


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


MYSQL_CONNECTION = '--host="$DB_HOST" --port="$DB_PORT" --user="$DB_USER"'
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def mysql_identifier(name: str) -> str:
    """Return `name` quoted as a MySQL identifier: in backticks, each backtick doubled."""
    return "`" + name.replace("`", "``") + "`"


def _postgres_steps(record: BackupRecord, plain: str, database: str) -> list[str]:
    dbname = shlex.quote(f"--dbname={database}")
    target = shlex.quote(f"target={database}")
    if "globals.sql" not in record.companions:
        return [
            f"pg_restore --list {plain} > /dev/null",
            "# no globals.sql companion (an older backup): createdb + pg_restore; the roles must exist already",
            f"createdb --template=template0 {shlex.quote(database)}",
            f"pg_restore --exit-on-error {dbname} {plain}",
        ]
    return [
        f"pg_restore --list {plain} > /dev/null",
        f"psql -X -v ON_ERROR_STOP=1 -v {target} -f globals.sql postgres  # roles, then CREATE DATABASE",
        f"pg_restore --exit-on-error {dbname} {plain}  # with owners and privileges",
        f"psql -X -v ON_ERROR_STOP=1 -v {target} -v restored=1 -f globals.sql postgres  # database properties",
    ]


def _mysql_steps(record: BackupRecord, plain: str, database: str) -> list[str]:
    character_set = str(record.source_stats.get("database_character_set") or "utf8mb4")
    collation = str(record.source_stats.get("database_collation") or "")
    if not PLAIN_NAME.match(character_set) or (collation and not PLAIN_NAME.match(collation)):
        raise ValueError(f"backup {record.backup_id} records an unexpected character set {character_set!r}")
    create = f"CREATE DATABASE {mysql_identifier(database)} CHARACTER SET {character_set}"
    create += f" COLLATE {collation}" if collation else ""
    return [
        f"tail -n 1 {plain} | grep -q '^-- Dump completed'  # a complete dump",
        "DB_HOST=... DB_PORT=3306 DB_USER=...  # the server to restore onto; export MYSQL_PWD=<its password> first",
        f"mysql {MYSQL_CONNECTION} -e {shlex.quote(create)}",
        f"mysql {MYSQL_CONNECTION} --default-character-set=utf8mb4 {shlex.quote(database)} < {plain}",
    ]


def _mariabackup_steps(record: BackupRecord, plain: str, database: str) -> list[str]:
    target = _beside_caller(database)
    return [
        f"test ! -e {target}  # a new datadir: never overwrite",
        f"mkdir {target} && mbstream -x -C {target} < {plain}",
        f"mariabackup --prepare --target-dir={target}  # applies the redo log copied during the backup",
        f"chown -R mysql: {target}  # as root: the server's user owns its files",
        f"# start: mariadbd --defaults-file={target}/backup-my.cnf --datadir={target} --port=3307 --user=mysql",
    ]


def _sqlite_steps(record: BackupRecord, plain: str, database: str) -> list[str]:
    target = _beside_caller(f"{database}.sqlite")
    return [
        f"test \"$(sqlite3 {plain} 'pragma integrity_check')\" = ok",
        f"test ! -e {target}  # never overwrite",
        f"cp {plain} {target}",
    ]


def _command_steps(record: BackupRecord, plain: str, database: str) -> list[str]:
    target = _beside_caller(f"{database}.{plain.removeprefix('backup.')}")
    return [
        f"test ! -e {target}  # never overwrite",
        f"cp {plain} {target}  # exactly what the dataset's command wrote: give it to the tool's own restore command",
    ]


def _beside_caller(path: str) -> str:
    """Return `path` for the shell: absolute as it is, else in the folder the commands were started from."""
    return shlex.quote(path) if path.startswith("/") else f'"$OLDPWD"/{shlex.quote(path)}'


LAST_STEPS: dict[str, Callable[[BackupRecord, str, str], list[str]]] = {
    "postgres": _postgres_steps,
    "mysql": _mysql_steps,
    "mariadb_physical": _mariabackup_steps,
    "sqlite": _sqlite_steps,
    "command": _command_steps,
}


def measured_from_repositories(manifest: Manifest) -> dict[str, Measured]:
    """Return each active dataset's newest committed backup that is not quarantined, read from its repositories
    (first that has one, passing over backups whose object is gone), with the quarantined backups newer than
    it, and the problems found in every repository of the dataset: one that cannot be read (tried once per
    call, then noted for each of its datasets) or a damaged sidecar. A problem never stops the others."""
    from dataclasses import replace

    from backup_pipelines.errors import BackupError
    from backup_pipelines.repository import open_repository

    measured: dict[str, Measured] = {}
    unreachable: dict[str, str] = {}
    for name, dataset in manifest.active_datasets().items():
        problems: list[str] = []
        for repository_name in dataset.repositories:
            try:
                repository = open_repository(manifest, repository_name)
                listing = repository.scan(name) if repository_name not in unreachable else None
            except BackupError as error:
                unreachable[repository_name], listing = str(error), None
            if listing is None:
                problems.append(f"repository {repository_name} is unreachable: {unreachable[repository_name]}")
                continue
            problems += [f"repository {repository_name}: {damaged.describe()}" for damaged in listing.damaged]
            records = listing.usable
            good = [record for record in records if not record.quarantined]
            if good and name not in measured:  # the other repositories are still read, for their problems
                newest = good[-1]
                newer = tuple(record for record in records if record.quarantined and record.created > newest.created)
                measured[name] = Measured(newest, repository.uri(newest.object_path), repository, quarantined=newer)
        if problems:
            measured[name] = replace(measured.get(name, Measured()), problems=tuple(problems))
    return measured


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC") if epoch else "never"


def _span(seconds: float | None) -> str:
    return "not measured" if seconds is None else describe_duration(seconds)


def restic_placement(manifest: Manifest, repository_name: str) -> tuple[str, str] | None:
    """Return the location and the password variable of restic repository `repository_name` of `manifest`
    (None if it is not a restic repository)."""
    config = manifest.repositories.get(repository_name)
    if config is None or getattr(config, "type", None) != "restic":
        return None
    return str(config.repository), str(config.password_env)  # type: ignore[union-attr]


def setup_lines(manifest: Manifest, record: BackupRecord, repository: BackupStore) -> list[str]:
    """Return the shell lines that prepare a restore of `record` from `repository`, by kind: AWS credentials for
    snapshots; for restic, which repository and where its password is; otherwise the age identity (when the
    backup is encrypted) and the target server's variables of the kind's tool (PostgreSQL, MySQL)."""
    if record.kind in SNAPSHOT_KINDS:
        return [SNAPSHOT_SETUP]
    if isinstance(repository, PgBackRestRepository):
        user = f"run as the cluster's system user ({manifest.dataset(record.dataset).source.os_user})"  # type: ignore[union-attr]
        secrets = cluster_secrets(manifest, record.dataset)  # pgBackRest wants those of every repository
        if not secrets:
            return [f"# the repositories are not encrypted and in folders: nothing to export; {user}"]
        values = ", ".join(f"${source}" for _, source, _ in secrets)
        noun = "values" if len(secrets) > 1 else "value"
        return [f"export {' '.join(f'{variable}=...' for variable, _, _ in secrets)}  # the {noun} of {values}; {user}"]
    if isinstance(repository, ResticRepository):
        placement = restic_placement(manifest, repository.name)
        variable = f"${placement[1]}" if placement else "its password variable"
        return [f"# restic repository {repository.location}: set RESTIC_PASSWORD below to the value of {variable}"]
    needs = ([AGE_SETUP] if record.encrypted else []) + (
        [SERVER_SETUP[record.kind]] if record.kind in SERVER_SETUP else []
    )
    return [f"export {' '.join(needs)}"] if needs else ["# not encrypted and restored to a file: nothing to set up"]


def _keys_line(manifest: Manifest, dataset_repositories: list[str], record: BackupRecord | None) -> str:
    """The runbook's line saying what protects a dataset's backups: restic's repository password, KMS, or the
    age recipients."""
    restic = [placement for name in dataset_repositories if (placement := restic_placement(manifest, name))]
    if restic:
        return "- Encrypted by restic: " + "; ".join(
            f"repository `{location}`, password in `${variable}`" for location, variable in restic
        )
    configs = [manifest.repositories[name] for name in dataset_repositories]
    ciphers = [c.cipher_pass_env for c in configs if isinstance(c, PgBackRestRepositoryConfig) and c.cipher_pass_env]
    if ciphers:
        return "- Encrypted by pgBackRest (aes-256-cbc): passphrase in " + ", ".join(f"`${c}`" for c in ciphers)
    if record is None:
        return "- Encrypted to: unknown (no backup yet)"
    if record.kind in SNAPSHOT_KINDS:
        kms = record.source_stats.get("kms_key_id") or "no key recorded"
        return f"- Encrypted to: KMS ({kms})" if record.encrypted else "- Encrypted to: not encrypted"
    if record.encrypted:
        return "- Encrypted to (age recipients): " + ", ".join(
            fingerprint(recipient) for recipient in record.recipients
        )
    return "- Encrypted to: not encrypted"


def render_runbook(manifest: Manifest, measured: dict[str, Measured], now: float) -> str:
    """Return the DR runbook (Markdown) for every active dataset of `manifest`, saying first when it was
    generated so a copy that stopped being refreshed shows its age."""
    lines = [
        "# Disaster-recovery runbook",
        "",
        f"> **Generated {_when(now)}** from `{manifest.path.name if manifest.path else 'the manifest'}` and the "
        "latest measurements. The reports job refreshes it every 30 minutes: if this time is more than an hour "
        "old, that job is failing and the ages and measurements below are out of date (the status dashboard "
        "shows the runbook's age). Restores need only standard tools: see docs/restore.md.",
        "",
        "Encrypted backups need the age identity (private key) matching their recipients, kept apart from the "
        "backups; restic repositories need their password.",
        "",
    ]
    for name, dataset in manifest.active_datasets().items():
        item = measured.get(name, Measured())
        record = item.newest_backup
        age = None if record is None else now - record.created.timestamp()
        rpo, rto = dataset.rpo.total_seconds(), dataset.rto.total_seconds()
        stale = " (**STALE**)" if age is None or age > rpo else ""
        slow = " (**over target**)" if item.measured_rto_seconds and item.measured_rto_seconds > rto else ""
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
            _keys_line(manifest, list(dataset.repositories), record),
            "",
        ]
        lines += [f"**Problem:** {problem}" for problem in item.problems] + ([""] if item.problems else [])
        if record is None or item.repository is None:
            lines += ["No committed backup found: there is nothing to restore. Check the backup runs.", ""]
            continue
        lines += [
            f"Newest backup: `{record.backup_id}` (partition {record.partition_key}, "
            f"{human_bytes(record.bytes_stored)} stored, taken {record.created_at[:19]} UTC) at "
            f"`{item.newest_backup_uri}`.",
            "",
            "```bash",
            *setup_lines(manifest, record, item.repository),
            *restore_commands(item.repository, record, f"{name}_restored"),
            "```",
            "",
        ]
        lines += [f"Quarantined, not offered above: `{q.backup_id}` ({q.quarantine_reason})." for q in item.quarantined]
        lines += [""] if item.quarantined else []
        tables = record.source_stats.get("tables", {})
        if tables:
            lines += ["Row counts at backup time (the restored copy must match):", ""]
            lines += [f"- `{table}`: {rows:,}" for table, rows in sorted(tables.items())] + [""]
    return "\n".join(lines)
