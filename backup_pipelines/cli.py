"""backup-pipelines: the operator CLI.

    backup-pipelines validate [--manifest PATH]        check a manifest; exit 1 listing every problem
    backup-pipelines schema                            print the manifest's JSON Schema
    backup-pipelines list [DATASET]                    list committed backups, read from the repositories
    backup-pipelines restore-commands DATASET          print the standard-tool commands to restore a backup
    backup-pipelines prune [DATASET] [--dry-run]       apply retention, remove leftovers (dry run: plan only)
    backup-pipelines runbook [--output FILE]           the DR runbook from the manifest and the latest measurements
    backup-pipelines restore DATASET (--output FILE | --database NAME) [--backup-id ID | --partition KEY]
    backup-pipelines quarantine DATASET BACKUP_ID (--reason TEXT | --release)
    backup-pipelines doctor [--dry-run]                fail runs whose processes died, free the pool slots they hold
    backup-pipelines pitr-setup DATASET                prepare a postgres_cluster for point-in-time recovery
    backup-pipelines pitr-restore DATASET --data-directory NEW [--time MOMENT]   restore a cluster to a moment

`list`, `restore`, `restore-commands` and `quarantine` need no Dagster instance: they read the repositories
directly. A quarantined backup (a blocking check failed on it) is listed with its reason but never chosen as
the newest: restoring it takes its --backup-id.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from backup_pipelines.cli_pitr import add_commands as add_pitr_commands
from backup_pipelines.crypto import IDENTITY_FILE_ENV
from backup_pipelines.errors import BackupError, ManifestError
from backup_pipelines.manifest import Manifest, load_manifest, manifest_json_schema
from backup_pipelines.operations import find_backup, holder_of, restore_backup
from backup_pipelines.prune import DEFAULT_LEFTOVER_AGE, PruneReport, prune_dataset
from backup_pipelines.quarantine import describe, quarantine_backup, release_backup
from backup_pipelines.repository import BackupRecord, BackupStore, open_repository
from backup_pipelines.runbook import measured_from_repositories, render_runbook, restore_commands

FOLDER_KINDS = ("files", "mariadb_physical")  # `restore --output` makes a folder of these, not an archive file


def _validate(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    active, buckets = manifest.active_datasets(), manifest.watched_buckets()
    watched = f", {len(buckets)} bucket{'s' if len(buckets) != 1 else ''} checked" if buckets else ""
    print(
        f"{manifest.path}: valid: {len(manifest.datasets)} datasets ({len(active)} backed up{watched}), "
        f"{len(manifest.repositories)} repositories, {len(manifest.servers)} servers"
    )
    return 0


def _schema(arguments: argparse.Namespace) -> int:
    print(json.dumps(manifest_json_schema(), indent=2))
    return 0


def _list(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    names = [arguments.dataset] if arguments.dataset else list(manifest.active_datasets())
    print(f"{'dataset':<20} {'partition':<17} {'backup id':<24} {'created (UTC)':<20} {'stored':>12}  location")
    unreachable: dict[str, str] = {}
    problems = 0
    for name in names:
        for repository_name in manifest.dataset(name).repositories:
            problems += _list_one(manifest, name, repository_name, unreachable)
    if problems:
        print(f"error: {problems} problem(s): see the UNREACHABLE, DAMAGED and MISSING lines above", file=sys.stderr)
        return 1
    return 0


def _list_one(manifest: Manifest, name: str, repository_name: str, unreachable: dict[str, str]) -> int:
    """Print dataset `name`'s backups in one repository, marking the quarantined ones and those whose object is
    gone (MISSING), then its damaged sidecars; or one UNREACHABLE line. Return the number of problems."""
    listing = None
    if repository_name not in unreachable:
        try:
            repository = open_repository(manifest, repository_name)
            listing = repository.scan(name)
        except BackupError as error:
            unreachable[repository_name] = str(error)
    if listing is None:
        print(f"{name:<20} UNREACHABLE repository {repository_name}: {unreachable[repository_name]}")
        return 1
    for record in listing.records:
        mark = f"  QUARANTINED: {record.quarantine_reason}" if record.quarantined else ""
        if listing.is_missing(record):
            mark += f"  MISSING: {', '.join(repository.uri(path) for path in listing.missing[record.backup_id])}"
        print(
            f"{name:<20} {record.partition_key:<17} {record.backup_id:<24} "
            f"{record.created_at[:19]:<20} {record.bytes_stored:>12,}  {repository.uri(record.object_path)}"
            f"{mark}"
        )
    for damaged in listing.damaged:
        print(f"{name:<20} {damaged.describe()}")
    return len(listing.damaged) + len(listing.missing)


def _warn_if_quarantined(record: BackupRecord) -> None:
    if record.quarantined:
        print(f"warning: {describe(record)}", file=sys.stderr)


def _quarantine(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    if arguments.release:
        where = release_backup(manifest, arguments.dataset, arguments.backup_id)
        print(f"released {arguments.backup_id} of {arguments.dataset} from quarantine in: {', '.join(where)}")
    else:
        where = quarantine_backup(manifest, arguments.dataset, arguments.backup_id, arguments.reason)
        print(f"quarantined {arguments.backup_id} of {arguments.dataset} in: {', '.join(where)} ({arguments.reason})")
    if os.environ.get("DAGSTER_HOME") and not arguments.repositories_only:
        import dagster as dg

        from assets.history import record_quarantine

        reason = None if arguments.release else arguments.reason
        record_quarantine(dg.DagsterInstance.get(), arguments.dataset, arguments.backup_id, reason)
        print("recorded in the Dagster instance ($DAGSTER_HOME): the RPO check and dashboard follow it")
    return 0


def _select(arguments: argparse.Namespace, manifest: Manifest) -> tuple[BackupStore, BackupRecord]:
    record = find_backup(manifest, arguments.dataset, arguments.partition, arguments.backup_id)
    return holder_of(manifest, arguments.dataset, record.backup_id), record


def _restore_commands(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    repository, record = _select(arguments, manifest)
    _warn_if_quarantined(record)
    print(
        f"# {arguments.dataset} backup {record.backup_id} (partition {record.partition_key}, "
        f"{record.bytes_stored:,} bytes, sha256 {record.sha256})"
    )
    for command in restore_commands(repository, record, arguments.target_database):
        print(command)
    return 0


def _restore(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    record = find_backup(manifest, arguments.dataset, arguments.partition, arguments.backup_id)
    _warn_if_quarantined(record)
    target = arguments.output or arguments.database
    if arguments.skip_privileges:
        print(
            "warning: --skip-privileges: the restored database has no owners and no privileges of the source "
            "(every GRANT and REVOKE is dropped, so objects revoked from PUBLIC become usable by everyone)",
            file=sys.stderr,
        )
    where = restore_backup(
        manifest,
        arguments.dataset,
        record,
        target,
        arguments.server,
        arguments.identity_file,
        raw_file=bool(arguments.output) and record.kind not in FOLDER_KINDS,
        keep_privileges=not arguments.skip_privileges,
    )
    print(f"restored {record.backup_id} (partition {record.partition_key}) to {where}")
    return 0


def _prune(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    names = [arguments.dataset] if arguments.dataset else list(manifest.active_datasets())
    age = timedelta(hours=arguments.leftover_age_hours)
    problems = 0
    for name in names:
        try:
            report = prune_dataset(manifest, name, dry_run=arguments.dry_run, leftover_age=age)
        except BackupError as error:  # one dataset's repository down: prune the others, then fail
            print(f"{name}: error: {error}")
            problems += 1
            continue
        _print_prune(report)
        problems += len(report.damaged) + len(report.leftovers_failed)
    if problems:
        print(f"error: {problems} problem(s): see the error and DAMAGED lines above", file=sys.stderr)
        return 1
    return 0


def _print_prune(report: PruneReport) -> None:
    verb = "would expire" if report.dry_run else "expired"
    leftovers = f", {len(report.leftovers)} leftover(s)" if report.leftovers else ""
    print(
        f"{report.dataset}: keep {len(report.kept)}, {verb} {len(report.expired)}{leftovers}, "
        f"{'would free' if report.dry_run else 'freed'} {report.bytes_freed:,} bytes"
    )
    for record, reasons in report.kept:
        print(f"  keep    {record.backup_id}  {record.partition_key:<17} {', '.join(reasons)}")
    for record in report.expired:
        mark = "  (quarantined)" if record.quarantined else ""
        print(f"  {'expire' if report.dry_run else 'deleted':<7} {record.backup_id}  {record.partition_key}{mark}")
    for _, leftover in report.leftovers:
        print(f"  {'remove' if report.dry_run else 'removed':<7} {leftover.describe()}")
    for _, leftover, reason in report.leftovers_failed:
        print(f"  error   could not remove {leftover.uri}: {reason}")
    for _, record in report.missing:
        print(f"  MISSING objects of {record.backup_id}  {record.partition_key}: restore it from another copy")
    for _, damaged in report.damaged:
        print(f"  {damaged.describe()} (kept with its objects: repair or remove it by hand)")


def _runbook(arguments: argparse.Namespace) -> int:
    manifest = load_manifest(arguments.manifest)
    measured = measured_from_repositories(manifest)
    if os.environ.get("DAGSTER_HOME") and not arguments.repositories_only:
        from assets.reports import add_restore_measurements

        measured = add_restore_measurements(manifest, measured)
    text = render_runbook(manifest, measured, time.time())
    if arguments.output:
        Path(arguments.output).write_text(text)
        print(f"runbook written to {arguments.output}")
    else:
        print(text)
    problems = [problem for item in measured.values() for problem in item.problems]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _doctor(arguments: argparse.Namespace) -> int:
    """List the in-progress runs of the Dagster instance with their processes, fail the dead ones and free
    their pool slots and those of ended runs (not with --dry-run), and list the steps waiting on a pool."""
    if not os.environ.get("DAGSTER_HOME"):
        raise BackupError("doctor reads the Dagster instance: set DAGSTER_HOME")
    import dagster as dg

    from assets.pools import pool_waits
    from assets.run_doctor import acts_here, diagnose, repair

    instance = dg.DagsterInstance.get()
    report = diagnose(instance)
    local = acts_here(instance) or arguments.assume_local
    for diagnosis in report.runs:
        print(diagnosis.describe())
    for ended in report.ended:
        print(ended.describe())
    if not report.runs and not report.ended:
        print("no run in progress, no slot held by an ended run")
    to_fix = bool(report.dead or [ended for ended in report.ended if not ended.running])
    if to_fix and not local:
        print(
            "error: this instance's runs may run on other hosts, where their pids mean nothing here: run doctor "
            "on the host that ran them with --assume-local",
            file=sys.stderr,
        )
    elif to_fix and not arguments.dry_run:
        repair(instance, report)
        for run_id in report.failed:
            print(f"marked run {run_id} FAILURE")
        for run_id in report.freed:
            print(f"freed the pool slots of run {run_id}")
    now = time.time()
    for wait in pool_waits(instance):
        print(f"waiting: {wait.describe(now)}")
    left = to_fix and (arguments.dry_run or not local)
    return 1 if left else 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the CLI."""
    parser = argparse.ArgumentParser(
        prog="backup-pipelines", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="manifest file (default: $BACKUP_MANIFEST or ./backup_manifest.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("validate", help="check the manifest").set_defaults(run=_validate)
    commands.add_parser("schema", help="print the manifest's JSON Schema").set_defaults(run=_schema)
    runbook = commands.add_parser("runbook", help="print the DR runbook (manifest + latest measurements)")
    runbook.add_argument("--output", help="write it to this file instead of stdout")
    runbook.add_argument(
        "--repositories-only",
        action="store_true",
        help="do not read restore-test measurements from the Dagster instance ($DAGSTER_HOME)",
    )
    runbook.set_defaults(run=_runbook)
    prune = commands.add_parser("prune", help="apply retention to the repositories (see --dry-run)")
    prune.add_argument("dataset", nargs="?")
    prune.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")
    prune.add_argument(
        "--leftover-age-hours",
        type=float,
        default=DEFAULT_LEFTOVER_AGE.total_seconds() / 3600,
        help="remove leftovers of interrupted work (temporary files, objects without a sidecar, empty folders, "
        "unfinished uploads) not changed for this long (default: %(default)s; longer than any backup runs)",
    )
    prune.set_defaults(run=_prune)
    quarantine = commands.add_parser("quarantine", help="quarantine a backup, or release it (--release)")
    quarantine.add_argument("dataset")
    quarantine.add_argument("backup_id")
    judgement = quarantine.add_mutually_exclusive_group(required=True)
    judgement.add_argument("--reason", help="why the backup must not be taken as the newest good one")
    judgement.add_argument("--release", action="store_true", help="make it a normal backup again")
    quarantine.add_argument(
        "--repositories-only", action="store_true", help="do not record it in the Dagster instance ($DAGSTER_HOME)"
    )
    quarantine.set_defaults(run=_quarantine)
    doctor = commands.add_parser(
        "doctor", help="fail runs whose processes died and free the pool slots they or ended runs hold ($DAGSTER_HOME)"
    )
    doctor.add_argument("--dry-run", action="store_true", help="only list; exit 1 when something needs repair")
    doctor.add_argument(
        "--assume-local",
        action="store_true",
        help="judge the runs' pids on this host although the instance is not a local SQLite one (only on the host "
        "that ran them)",
    )
    doctor.set_defaults(run=_doctor)
    add_pitr_commands(commands)
    listing = commands.add_parser("list", help="list committed backups (quarantined ones with their reason)")
    listing.add_argument("dataset", nargs="?")
    listing.set_defaults(run=_list)
    for name, function, helptext in (
        ("restore-commands", _restore_commands, "print standard-tool restore commands"),
        ("restore", _restore, "restore a backup to a file or a new database"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("dataset")
        which = sub.add_mutually_exclusive_group()
        which.add_argument("--backup-id")
        which.add_argument("--partition")
        sub.set_defaults(run=function)
        if name == "restore-commands":
            sub.add_argument("--target-database", default="restored")
        else:
            target = sub.add_mutually_exclusive_group(required=True)
            target.add_argument(
                "--output",
                help="the plain archive as this new file (file trees: this new folder; mariadb_physical: a new, "
                "prepared datadir)",
            )
            target.add_argument("--database", help="restore into this new database")
            sub.add_argument("--server", help="server to restore on (default: the dataset's restore server)")
            sub.add_argument(
                "--skip-privileges",
                action="store_true",
                help="restore without owners and privileges (everything owned by the restoring login, no GRANT, no "
                "REVOKE): only for a target that cannot have the source's roles",
            )
            sub.add_argument("--identity-file", help=f"age identity file (default: ${IDENTITY_FILE_ENV})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (1 on any error, with the message on stderr)."""
    arguments = build_parser().parse_args(argv)
    try:
        status: int = arguments.run(arguments)
        return status
    except ManifestError as error:
        print(f"manifest has {len(error.problems)} problem(s):\n{error}", file=sys.stderr)
        return 1
    except (BackupError, KeyError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
