"""The CLI's point-in-time recovery commands, for postgres_cluster datasets.

backup-pipelines pitr-setup DATASET [--no-check]      write the pgBackRest configuration, create the stanza,
                                                      check archiving, print the postgresql.conf lines
backup-pipelines pitr-restore DATASET --data-directory NEW [--time "YYYY-MM-DD HH:MM:SS+00"] [--backup-id ID]
                                                      restore the cluster into a new data directory, set to
                                                      recover to that moment (default: the end of the archive)
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import load_manifest


def _setup(arguments: argparse.Namespace) -> int:
    from backup_pipelines.pitr_setup import pitr_setup

    manifest = load_manifest(arguments.manifest)
    print(pitr_setup(manifest, arguments.dataset, check=not arguments.no_check).render())
    return 0


def _restore(arguments: argparse.Namespace) -> int:
    from backup_pipelines.engines.pgbackrest import PgBackRestEngine, backup_for_moment
    from backup_pipelines.repository import open_repository
    from backup_pipelines.repository.pgbackrest import PgBackRestRepository
    from backup_pipelines.repository.pgbackrest_config import cluster_dataset, cluster_secrets

    manifest = load_manifest(arguments.manifest)
    dataset = cluster_dataset(manifest, arguments.dataset)
    moment = arguments.time
    store = open_repository(manifest, dataset.repositories[0])
    assert isinstance(store, PgBackRestRepository)
    records = store.list_backups(arguments.dataset)
    if arguments.backup_id:
        chosen = next((record for record in records if record.backup_id == arguments.backup_id), None)
    else:
        chosen = backup_for_moment(records, moment)
    if chosen is None:
        wanted = f"backup {arguments.backup_id}" if arguments.backup_id else "a good backup before that moment"
        raise StorageError(f"{store.name} holds no {wanted} of {arguments.dataset}")
    path = PgBackRestEngine().restore_to_moment(store, arguments.dataset, chosen, arguments.data_directory, moment)
    goal = f"recover to {moment.isoformat()} and promote" if moment else "recover to the end of the archive"
    secrets = [variable for variable, _, _ in cluster_secrets(manifest, arguments.dataset)]
    needs = f"its environment needs the same {', '.join(secrets)}" if secrets else "it needs no secret"
    print(
        f"restored base backup {chosen.object_name} ({chosen.backup_id}) of {arguments.dataset} to {path}\n"
        f"start it as {dataset.source.os_user} (pg_ctl -D {path} -o '-p <free port>' start) to {goal}; its "
        f"restore_command reads the archive, so {needs}"
    )
    return 0


def parse_moment(text: str) -> datetime:
    """A moment from the command line: ISO 8601 (a space or T between date and time); UTC when no offset."""
    moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_commands(commands: Any) -> None:
    """Add the PITR commands to the CLI's subparsers."""
    setup = commands.add_parser("pitr-setup", help="prepare a postgres_cluster for point-in-time recovery")
    setup.add_argument("dataset")
    setup.add_argument("--no-check", action="store_true", help="only write the configuration and print the settings")
    setup.set_defaults(run=_setup)
    restore = commands.add_parser("pitr-restore", help="restore a postgres_cluster to a moment, into a new folder")
    restore.add_argument("dataset")
    restore.add_argument("--data-directory", required=True, help="the new data directory (must not exist)")
    restore.add_argument(
        "--time", type=parse_moment, help='the moment, e.g. "2026-12-01 03:55:00+00" (default: end of the archive)'
    )
    restore.add_argument("--backup-id", help="the base backup to start from (default: the newest good one before)")
    restore.set_defaults(run=_restore)
