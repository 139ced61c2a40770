"""The pgBackRest configuration written from the manifest: every repository as repo1..N (the WAL archive reaches
each copy), S3 settings for a bucket, encryption on when a passphrase variable is named, and never a secret.

Both kinds of repository also run for real in tests/integration/test_pgbackrest.py (the S3 one on moto's S3 over
HTTPS, the only protocol pgBackRest speaks to S3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_pipelines.errors import ManifestError, MissingSecretError
from backup_pipelines.repository import open_repository
from backup_pipelines.repository.pgbackrest_config import render_config, secret_environment
from backup_pipelines.runbook import restore_commands, setup_lines
from tests.conftest import backup_record, write_manifest


def manifest_data(tmp_path: Path) -> dict[str, object]:
    return {
        "repositories": {
            "near": {"type": "pgbackrest", "path": "pitr-repo", "cipher_pass_env": "NEAR_CIPHER"},
            "far": {
                "type": "pgbackrest",
                "path": "clusters",
                "cipher_pass_env": "FAR_CIPHER",
                "offsite": True,
                "s3": {
                    "bucket": "pitr-offsite",
                    "endpoint": "s3.eu-west-1.amazonaws.com",
                    "region": "eu-west-1",
                    "access_key_id_env": "FAR_KEY",
                    "secret_access_key_env": "FAR_SECRET",
                },
            },
        },
        "servers": {"pg": {"kind": "postgres", "port": 5433, "user": "backup", "password_env": "PG_PASS"}},
        "datasets": {
            "main": {
                "kind": "postgres_cluster",
                "schedule": "hourly",
                "rpo": "5m",
                "rto": "1h",
                "retention": {"keep_daily": 7},
                "repositories": ["near", "far"],
                "source": {"server": "pg", "data_directory": "/var/lib/postgresql/15/main", "stanza": "prod"},
            }
        },
    }


def test_every_repository_is_configured_and_no_secret_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_data(tmp_path))
    settings = render_config(manifest, "main")
    lines = settings.text.splitlines()
    assert settings.config_file == tmp_path / ".local" / "pgbackrest" / "main.conf"
    assert settings.stanza == "prod" and "[prod]" in lines and "pg1-port=5433" in lines
    assert f"repo1-path={tmp_path / 'pitr-repo'}" in lines and "repo1-type=posix" in lines
    assert {
        "repo2-type=s3",
        "repo2-path=/clusters",
        "repo2-s3-bucket=pitr-offsite",
        "repo2-s3-region=eu-west-1",
        "repo2-bundle=y",
    } <= set(lines)
    assert not any(line.startswith("repo1-bundle") for line in lines)
    assert "repo1-cipher-type=aes-256-cbc" in lines and "repo2-cipher-type=aes-256-cbc" in lines
    assert "compress-type=zst" in lines and "repo2-retention-full=9999999" in lines
    secrets = {"NEAR_CIPHER": "near-pass", "FAR_CIPHER": "far-pass", "FAR_KEY": "AKIA1", "FAR_SECRET": "s3cr3t"}
    for name, value in {**secrets, "PG_PASS": "pw"}.items():
        monkeypatch.setenv(name, value)
    environment = secret_environment(manifest, "main")
    assert environment["PGBACKREST_REPO2_S3_KEY_SECRET"] == "s3cr3t" and environment["PGPASSWORD"] == "pw"
    assert environment["PGBACKREST_REPO1_CIPHER_PASS"] == "near-pass"
    assert not any(value in settings.text for value in secrets.values())


def test_a_missing_cipher_passphrase_names_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", manifest_data(tmp_path))
    for name in ("NEAR_CIPHER", "FAR_CIPHER", "FAR_KEY", "FAR_SECRET", "PG_PASS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingSecretError, match="NEAR_CIPHER"):
        secret_environment(manifest, "main")


def test_a_private_certificate_authority_is_configured_and_checked_at_load(tmp_path: Path) -> None:
    data = manifest_data(tmp_path)
    s3 = data["repositories"]["far"]["s3"]  # type: ignore[index]
    s3["ca_file"] = "certs/ca.pem"
    (tmp_path / "certs").mkdir()
    with pytest.raises(ManifestError, match=r"repositories\.far\.s3\.ca_file.*cannot read the CA file"):
        write_manifest(tmp_path / "m.yaml", data)
    (tmp_path / "certs" / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ManifestError, match=r"repositories\.far\.s3\.ca_file.*holds no PEM certificate"):
        write_manifest(tmp_path / "m.yaml", data)
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    lines = render_config(write_manifest(tmp_path / "m.yaml", data), "main").text.splitlines()
    assert f"repo2-storage-ca-file={tmp_path / 'certs' / 'ca.pem'}" in lines and "repo2-storage-verify-tls=y" in lines
    assert not any(line.startswith("repo1-storage-ca-file") for line in lines)
    s3["verify_tls"] = False
    with pytest.raises(ManifestError, match="ca_file is given but verify_tls is false"):
        write_manifest(tmp_path / "m.yaml", data)
    s3["verify_tls"], s3["ca_file"] = True, ""
    with pytest.raises(ManifestError, match=r"repositories\.far\.s3\.ca_file"):
        write_manifest(tmp_path / "m.yaml", data)


def test_a_repository_listed_twice_is_refused(tmp_path: Path) -> None:
    """pgBackRest numbers the repositories of a configuration repo1..N: a name listed twice would get two
    numbers and its secrets one. Any kind of dataset: one repository is one copy."""
    data = manifest_data(tmp_path)
    data["datasets"]["main"]["repositories"] = ["near", "far", "near"]  # type: ignore[index]
    with pytest.raises(ManifestError, match=r"datasets\.main\.repositories\.2.*'near' is listed twice"):
        write_manifest(tmp_path / "m.yaml", data)


def test_the_runbook_restores_each_copy_from_its_own_repository(tmp_path: Path) -> None:
    """The DR runbook's commands for a backup in the second repository (the primary lost) name repo2, and its
    set-up exports the secrets of both repositories: pgBackRest asks for every configured repository's."""
    manifest = write_manifest(tmp_path / "m.yaml", manifest_data(tmp_path))
    record = backup_record(
        "20261201T050000Z-abcdef",
        dataset="main",
        partition_key="2026-12-01-05:00",
        kind="postgres_cluster",
        format="pgbackrest-full",
        object_name="20261201-050000F",
        created_at="2026-12-01T05:00:00+00:00",
        bytes_raw=1,
        bytes_stored=1,
        sha256="",
        encrypted=True,
        duration_seconds=1.0,
    )
    secrets = (
        "PGBACKREST_REPO1_CIPHER_PASS=... PGBACKREST_REPO2_CIPHER_PASS=... PGBACKREST_REPO2_S3_KEY=... "
        "PGBACKREST_REPO2_S3_KEY_SECRET=...  # the values of $NEAR_CIPHER, $FAR_CIPHER, $FAR_KEY, $FAR_SECRET;"
    )
    assert open_repository(manifest, "far").uri("x") == "pgbackrest:s3://pitr-offsite/clusters#x"  # path: clusters
    for name, index in (("near", 1), ("far", 2)):
        store = open_repository(manifest, name)
        assert setup_lines(manifest, record, store) == [f"export {secrets} run as the cluster's system user (postgres)"]
        pgbackrest = [line for line in restore_commands(store, record, "/srv/new") if line.startswith("pgbackrest ")]
        assert len(pgbackrest) == 2 and all(f"--repo={index} " in line for line in pgbackrest)
