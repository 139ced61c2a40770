"""The pgBackRest configuration of a postgres_cluster dataset, written by the project from the manifest.

One file per dataset (`source.config_file`): `[global]` holds the dataset's repositories as repo1..repoN in
manifest order (so the WAL archive reaches every copy), `[<stanza>]` the cluster. Secrets (cipher
passphrases, S3 keys, the login's password) are never written: every pgBackRest command the project runs gets
them as PGBACKREST_REPO<n>_CIPHER_PASS, PGBACKREST_REPO<n>_S3_KEY(_SECRET) and PGPASSWORD, and
`backup-pipelines pitr-setup` says which of them the server's `archive_command` needs.

Retention is the project's (`prune`, `expire --set`), so pgBackRest's own full-backup retention is set to its
maximum and never removes a backup by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backup_pipelines.manifest import (
    Manifest,
    PgBackRestRepositoryConfig,
    PostgresClusterDataset,
    PostgresServerConfig,
    read_secret,
)
from backup_pipelines.system_user import give_to

RETENTION_NEVER = 9999999  # pgBackRest's largest repo-retention-full: it never expires a backup on its own
DEFAULT_CONFIG_FOLDER = ".local/pgbackrest"


@dataclass(frozen=True)
class ClusterSettings:
    """Everything needed to run pgBackRest for one postgres_cluster dataset."""

    dataset: str
    stanza: str
    config_file: Path
    os_user: str
    repositories: tuple[str, ...]  # manifest names, repo1 first
    text: str  # the configuration file's content
    local_paths: tuple[Path, ...] = ()  # the repositories kept in folders here (made and handed to os_user)

    def repo_index(self, repository: str) -> int:
        """The pgBackRest repo number (1-based) of manifest repository `repository`."""
        return self.repositories.index(repository) + 1


def cluster_dataset(manifest: Manifest, name: str) -> PostgresClusterDataset:
    dataset = manifest.dataset(name)
    assert isinstance(dataset, PostgresClusterDataset), f"{name} is a {dataset.kind} dataset, not postgres_cluster"
    return dataset


def cluster_server(manifest: Manifest, dataset: PostgresClusterDataset) -> PostgresServerConfig:
    server = manifest.servers[dataset.source.server]
    assert isinstance(server, PostgresServerConfig), f"server {dataset.source.server} is not a postgres server"
    return server


def config_path(manifest: Manifest, name: str) -> Path:
    """Where dataset `name`'s pgBackRest configuration lives."""
    dataset = cluster_dataset(manifest, name)
    return manifest.resolve_path(dataset.source.config_file or f"{DEFAULT_CONFIG_FOLDER}/{name}.conf")


def repository_lines(manifest: Manifest, index: int, config: PgBackRestRepositoryConfig) -> list[str]:
    """The `[global]` lines of one repository, as repo`index`."""
    repo = f"repo{index}"
    lines = [f"{repo}-retention-full={RETENTION_NEVER}", f"{repo}-retention-full-type=count"]
    if config.s3 is None:
        lines += [f"{repo}-type=posix", f"{repo}-path={manifest.resolve_path(config.path)}"]
    else:
        s3 = config.s3
        path = config.path if config.path.startswith("/") else f"/{config.path}"
        lines += [
            f"{repo}-type=s3",
            f"{repo}-path={path}",
            f"{repo}-s3-bucket={s3.bucket}",
            f"{repo}-s3-endpoint={s3.endpoint}",
            f"{repo}-s3-region={s3.region}",
            f"{repo}-s3-uri-style={s3.uri_style}",
            f"{repo}-storage-verify-tls={'y' if s3.verify_tls else 'n'}",
            f"{repo}-bundle=y",  # small files in bundles: a cluster's ~1,000 files are not as many requests
        ]
        if s3.ca_file:
            lines.append(f"{repo}-storage-ca-file={manifest.resolve_path(s3.ca_file)}")
    if config.cipher_pass_env:
        lines.append(f"{repo}-cipher-type=aes-256-cbc")
    return lines


def render_config(manifest: Manifest, name: str) -> ClusterSettings:
    """Return dataset `name`'s pgBackRest settings and configuration text (no secrets in it)."""
    dataset = cluster_dataset(manifest, name)
    server = cluster_server(manifest, dataset)
    source = dataset.source
    stanza = dataset.stanza(name)
    path = config_path(manifest, name)
    lines = [
        f"# Written by backup-pipelines for dataset {name}"
        + (f" of {manifest.path}" if manifest.path else "")
        + ": rewritten before every run, do not edit.",
        "[global]",
    ]
    compress_level = 3
    local_paths = []
    for index, repository in enumerate(dataset.repositories, start=1):
        config = manifest.repositories[repository]
        assert isinstance(config, PgBackRestRepositoryConfig), f"{repository} is not a pgbackrest repository"
        lines += repository_lines(manifest, index, config)
        if config.s3 is None:
            local_paths.append(manifest.resolve_path(config.path))
        compress_level = config.compress_level if index == 1 else compress_level
    folder = path.parent
    lines += [
        "compress-type=zst",
        f"compress-level={compress_level}",
        f"process-max={source.process_max}",
        "start-fast=y",
        f"archive-timeout={int(source.archive_wait.total_seconds())}",
        "log-level-console=off",
        "log-level-stderr=warn",
        "log-level-file=info",
        f"log-path={folder / 'log'}",
        f"lock-path={folder / 'lock'}",
        "",
        f"[{stanza}]",
        f"pg1-path={source.data_directory}",
        f"pg1-port={server.port}",
        f"pg1-socket-path={source.socket_directory}",
        f"pg1-user={server.user}",
        f"pg1-database={server.maintenance_database}",
    ]
    text = "\n".join(lines) + "\n"
    return ClusterSettings(name, stanza, path, source.os_user, tuple(dataset.repositories), text, tuple(local_paths))


def cluster_secrets(manifest: Manifest, name: str) -> list[tuple[str, str, str]]:
    """The secrets pgBackRest needs for dataset `name`, each as (pgBackRest's environment variable for it, as
    repo<n> of the dataset's configuration; the variable the manifest names for its value; the manifest field
    naming that variable). Those of every repository: pgBackRest asks for the secrets of every repository its
    configuration lists, even for a command run on one (`--repo=2 info` without repo1's passphrase fails with
    "info command requires option: repo1-cipher-pass")."""
    secrets = []
    for index, repository in enumerate(cluster_dataset(manifest, name).repositories, start=1):
        config = manifest.repositories[repository]
        assert isinstance(config, PgBackRestRepositoryConfig), f"{repository} is not a pgbackrest repository"
        where, prefix = f"repositories.{repository}", f"PGBACKREST_REPO{index}"
        if config.cipher_pass_env:
            secrets.append((f"{prefix}_CIPHER_PASS", config.cipher_pass_env, f"{where}.cipher_pass_env"))
        if config.s3 is not None:
            secrets += [
                (f"{prefix}_S3_KEY", config.s3.access_key_id_env, f"{where}.s3.access_key_id_env"),
                (f"{prefix}_S3_KEY_SECRET", config.s3.secret_access_key_env, f"{where}.s3.secret_access_key_env"),
            ]
    return secrets


def secret_environment(manifest: Manifest, name: str) -> dict[str, str]:
    """The environment carrying dataset `name`'s secrets to pgBackRest: each repository's cipher passphrase and
    S3 keys, and the login's password. Raise MissingSecretError naming the variable when one is unset."""
    dataset = cluster_dataset(manifest, name)
    server = cluster_server(manifest, dataset)
    environment = {variable: read_secret(source, where) for variable, source, where in cluster_secrets(manifest, name)}
    if server.password_env:
        environment["PGPASSWORD"] = read_secret(server.password_env, f"servers.{dataset.source.server}.password_env")
    return environment


def write_config(settings: ClusterSettings) -> None:
    """Write the configuration file (atomically, readable by the cluster's system user) and its log and lock
    folders, and the folders of local repositories, unless it already holds this text."""
    for folder in settings.local_paths:
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o750)
            give_to(folder, settings.os_user)
    path = settings.config_file
    if path.is_file() and path.read_text() == settings.text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in (path.parent / "log", path.parent / "lock"):
        folder.mkdir(exist_ok=True)
        give_to(folder, settings.os_user)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(settings.text)
    temporary.chmod(0o640)
    give_to(temporary, settings.os_user)
    os.replace(temporary, path)
