"""Where backups live (repositories) and where sources are (servers)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from backup_pipelines.manifest.types import StrictInt, StrictModel


class Placement(StrictModel):
    """Where a repository physically is, for the 3-2-1 rule."""

    medium: str = Field("", description='Kind of medium ("disk", "object-storage", "tape"); default from the type.')
    offsite: bool = Field(False, description="In another site or region than the sources.")

    @property
    def immutable(self) -> bool:
        return False

    def medium_name(self) -> str:
        return self.medium or "disk"


class LocalRepositoryConfig(Placement):
    """A directory on a locally mounted disk."""

    type: Literal["local"] = Field(description="Repository type.")
    path: str = Field(description="Directory holding the backups; relative to the manifest's folder.")


class ObjectLock(StrictModel):
    """S3 Object Lock: every object is written with a retention date; nobody can delete it earlier."""

    mode: Literal["governance", "compliance"] = Field(description="S3 Object Lock mode.")
    days: StrictInt = Field(ge=1, le=36500, description="Days each object stays locked after it is written.")


class S3RepositoryConfig(Placement):
    """A bucket (and optional prefix) on AWS S3 or any S3-compatible endpoint."""

    type: Literal["s3"] = Field(description="Repository type.")
    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    prefix: str = Field("", description="Key prefix inside the bucket, without a trailing slash.")
    region: str = Field("us-east-1", description="Region of the bucket.")
    endpoint_url: str | None = Field(None, description="Custom endpoint (MinIO, Ceph, a local test server).")
    access_key_id_env: str | None = Field(None, description="Env var holding the access key id.")
    secret_access_key_env: str | None = Field(None, description="Env var holding the secret access key.")
    part_size_mb: StrictInt = Field(16, ge=5, le=5120, description="Multipart upload part size in MiB.")
    server_side_encryption: Literal["AES256", "aws:kms"] | None = Field(None, description="SSE mode.")
    kms_key_id: str | None = Field(None, description="KMS key id when server_side_encryption is aws:kms.")
    object_lock: ObjectLock | None = Field(None, description="Write every object locked (bucket needs Object Lock).")

    @property
    def immutable(self) -> bool:
        return self.object_lock is not None

    def medium_name(self) -> str:
        return self.medium or "object-storage"


class ResticRepositoryConfig(Placement):
    """A restic repository, for file-tree datasets: deduplicated, incremental, encrypted by restic."""

    type: Literal["restic"] = Field(description="Repository type.")
    repository: str = Field(
        description="A folder (relative to the manifest's folder) or a restic URL such as s3:http://host/bucket/path."
    )
    password_env: str = Field(description="Env var holding the restic repository password (kept apart from it).")
    aws_access_key_id_env: str | None = Field(None, description="Env var with the S3 access key, for s3: URLs.")
    aws_secret_access_key_env: str | None = Field(None, description="Env var with the S3 secret key.")
    read_data_subset: str = Field("5%", description="Share of pack data `restic check` reads back in verify.")


class AwsAccess(StrictModel):
    """How to reach one AWS region (or an AWS-compatible endpoint). Credentials default to boto3's chain
    (instance profile, AWS_PROFILE, ...) when no variables are named."""

    region: str = Field(min_length=1, description="AWS region, e.g. eu-west-1.")
    endpoint_url: str | None = Field(None, description="Custom endpoint (a local test server); default: AWS.")
    access_key_id_env: str | None = Field(None, description="Env var holding the access key id.")
    secret_access_key_env: str | None = Field(None, description="Env var holding the secret access key.")


class AwsSnapshotRepositoryConfig(AwsAccess, Placement):
    """Snapshots kept by AWS itself (RDS DB snapshots, EBS snapshots) in one region: the first such
    repository of a dataset is where snapshots are taken (the source's region), the others receive copies."""

    type: Literal["aws_snapshots"] = Field(description="Repository type.")
    kms_key_id: str | None = Field(
        None,
        description="KMS key (id or ARN) in this region for copies made into it; needed for encrypted copies "
        "from another region, since KMS keys are regional.",
    )
    wait_minutes: StrictInt = Field(120, ge=1, le=1440, description="How long to wait for a snapshot, copy or restore.")
    poll_seconds: StrictInt = Field(30, ge=1, le=600, description="How often to ask AWS while waiting.")

    def medium_name(self) -> str:
        return self.medium or "aws-snapshot"


class PgBackRestS3(StrictModel):
    """An S3 bucket holding a pgBackRest repository (pgBackRest speaks HTTPS only)."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    endpoint: str = Field("s3.amazonaws.com", description="Endpoint host[:port] (repo1-s3-endpoint).")
    region: str = Field("us-east-1", description="Region of the bucket.")
    uri_style: Literal["host", "path"] = Field("host", description="repo1-s3-uri-style: path for most S3 servers.")
    verify_tls: bool = Field(True, description="Verify the endpoint's TLS certificate.")
    ca_file: str | None = Field(
        None,
        min_length=1,
        description="PEM file of the certificate authorities to verify the endpoint with instead of the system's "
        "(repo-storage-ca-file), for an S3 server with a private CA; relative to the manifest's folder, and "
        "readable by the cluster's system user.",
    )
    access_key_id_env: str = Field(description="Env var holding the access key id.")
    secret_access_key_env: str = Field(description="Env var holding the secret access key.")

    @model_validator(mode="after")
    def _ca_file_verifies(self) -> PgBackRestS3:
        if self.ca_file and not self.verify_tls:
            raise ValueError("ca_file is given but verify_tls is false: the certificate would not be checked")
        return self


class PgBackRestRepositoryConfig(Placement):
    """A pgBackRest repository, for postgres_cluster datasets: base backups and archived WAL, compressed with
    zstd and encrypted (aes-256-cbc) by pgBackRest with a passphrase kept apart from it."""

    type: Literal["pgbackrest"] = Field(description="Repository type.")
    path: str = Field(
        description="repo1-path: a folder on this machine (relative to the manifest's folder), or the path "
        "inside the bucket when `s3` is given."
    )
    s3: PgBackRestS3 | None = Field(None, description="Keep the repository in an S3 bucket instead of a folder.")
    cipher_pass_env: str | None = Field(
        description="Env var holding the repository's encryption passphrase; null leaves it unencrypted, which "
        "must be written explicitly."
    )
    compress_level: StrictInt = Field(3, ge=1, le=19, description="zstd level pgBackRest compresses with.")

    def medium_name(self) -> str:
        return self.medium or ("object-storage" if self.s3 else "disk")


RepositoryConfig = Annotated[
    LocalRepositoryConfig
    | S3RepositoryConfig
    | ResticRepositoryConfig
    | AwsSnapshotRepositoryConfig
    | PgBackRestRepositoryConfig,
    Field(discriminator="type"),
]


class PostgresServerConfig(StrictModel):
    """A PostgreSQL server reached over TCP or a Unix socket directory."""

    kind: Literal["postgres"] = Field(description="Server kind.")
    host: str = Field("127.0.0.1", description="Host name, IP address, or a Unix socket directory.")
    port: StrictInt = Field(5432, ge=1, le=65535, description="TCP port.")
    user: str = Field(description="Role used for dumps (needs read access) and restore tests (CREATEDB).")
    password_env: str | None = Field(None, description="Env var holding the password; never inline.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        None, description="libpq sslmode."
    )
    maintenance_database: str = Field("postgres", description="Database used to create/drop scratch ones.")
    bin_dir: str | None = Field(None, description="Folder with pg_dump/pg_restore; default: the newest found.")


class MysqlServerConfig(StrictModel):
    """A MySQL or MariaDB server reached over TCP."""

    kind: Literal["mysql"] = Field(description="Server kind.")
    host: str = Field("127.0.0.1", description="Host name or IP address.")
    port: StrictInt = Field(3306, ge=1, le=65535, description="TCP port.")
    user: str = Field(description="Account for dumps (SELECT, SHOW VIEW, TRIGGER, EVENT, RELOAD) and restore tests.")
    password_env: str | None = Field(None, description="Env var holding the password; never inline.")
    dump_binary: str = Field("mysqldump", description="The dump tool (mysqldump or mariadb-dump).")
    client_binary: str = Field("mysql", description="The client that replays a dump (mysql or mariadb).")


ServerConfig = Annotated[PostgresServerConfig | MysqlServerConfig, Field(discriminator="kind")]
