"""`backup-pipelines pitr-setup <dataset>`: make a postgres_cluster ready for point-in-time recovery.

Writes the dataset's pgBackRest configuration, runs `stanza-create` and `check` (which proves the WAL
archive works: it switches a segment and waits for it to arrive), and returns the exact postgresql.conf lines
and environment the server needs. A cluster whose archiving does not work fails here with pgBackRest's reason.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository.pgbackrest_config import (
    cluster_dataset,
    cluster_secrets,
    render_config,
    write_config,
)
from backup_pipelines.system_user import as_user


def archive_settings(config_file: Path | str, stanza: str, archive_timeout: timedelta) -> dict[str, str]:
    """The postgresql.conf settings that archive a cluster's WAL to pgBackRest."""
    return {
        "archive_mode": "on",
        "archive_command": f"pgbackrest --config={config_file} --stanza={stanza} archive-push %p",
        "archive_timeout": f"{int(archive_timeout.total_seconds())}s",
        "wal_level": "replica",
        "full_page_writes": "on",
        "max_wal_senders": "3",
    }


@dataclass(frozen=True)
class SetupReport:
    """What pitr-setup wrote and what the operator still has to do."""

    config_file: Path
    settings: dict[str, str]
    server_environment: list[str]  # variables the server's archive_command needs
    checked: bool

    def render(self) -> str:
        lines = [f"pgBackRest configuration written to {self.config_file}", "", "postgresql.conf:"]
        lines += [f"  {key} = '{value}'" for key, value in self.settings.items()]
        lines += ["", "archive_mode and wal_level take effect after a restart; the others after a reload."]
        if self.server_environment:
            lines += [
                "",
                "The server's environment must hold (its archive_command encrypts and uploads with them):",
                *[f"  {variable}" for variable in self.server_environment],
                "e.g. in a systemd drop-in (Environment=...) or the cluster's environment file, readable only by "
                "the postgres user.",
            ]
        lines += ["", "pgbackrest check: " + ("archiving works" if self.checked else "not run (--no-check)")]
        return "\n".join(lines)


def pitr_setup(manifest: Manifest, name: str, check: bool = True) -> SetupReport:
    """Write dataset `name`'s pgBackRest configuration, create the stanza and check archiving (unless
    `check` is False); return the report. Raise StorageError with pgBackRest's reason when it fails."""
    from backup_pipelines.repository import open_repository
    from backup_pipelines.repository.pgbackrest import PgBackRestRepository

    dataset = cluster_dataset(manifest, name)
    settings = render_config(manifest, name)
    write_config(settings)
    _refuse_unreadable_ca_files(manifest, name, settings.os_user)
    variables = [f"{variable} (the value of {source})" for variable, source, _ in cluster_secrets(manifest, name)]
    if check:
        store = open_repository(manifest, dataset.repositories[0])
        assert isinstance(store, PgBackRestRepository)
        store.run(name, "stanza-create", repo=False, timeout=300)
        store.run(name, "check", repo=False, timeout=300)
    report = SetupReport(
        settings.config_file,
        archive_settings(settings.config_file, settings.stanza, dataset.source.archive_timeout),
        variables,
        check,
    )
    return report


__all__ = ["SetupReport", "archive_settings", "pitr_setup"]


def _refuse_unreadable_ca_files(manifest: Manifest, name: str, user: str) -> None:
    """Raise StorageError naming the file, the field and the user when the cluster's system user cannot read a
    repository's s3.ca_file: pgBackRest reads it as that user (its backups and the server's archive_command),
    and would only say "unable to set user-defined CA certificate location"."""
    for repository in cluster_dataset(manifest, name).repositories:
        s3 = getattr(manifest.repositories[repository], "s3", None)
        if s3 is None or not s3.ca_file:
            continue
        path = manifest.resolve_path(s3.ca_file)
        if subprocess.run(as_user(user, "test", "-r", str(path)), check=False).returncode != 0:
            raise StorageError(
                f"system user {user} cannot read the CA file {path} (repositories.{repository}.s3.ca_file); "
                "pgBackRest reads it as that user"
            )
