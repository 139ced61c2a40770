"""The backup manifest: one YAML file that lists what is protected, where it goes and how it is checked.

Given a path, `load_manifest` returns a validated, frozen `Manifest`. Every problem is reported at once in a
`ManifestError` that names the file, the line, the dataset and the field. Secrets never live in the manifest:
it names environment variables (`password_env`) that are read only when a run needs them.

One module per part: `types` (field types, base model), `storage` (repositories, servers), `policies` (what
every dataset shares), one module per dataset family, `model` (the whole manifest) and `loader` (YAML in,
problems out).
"""

from backup_pipelines.manifest.aws import (
    AuroraDataset,
    AuroraSource,
    EbsDataset,
    EbsSource,
    RdsDataset,
    RdsRestoreSettings,
    RdsSource,
    RestoreLogin,
    S3BucketDataset,
    S3BucketSource,
    SnapshotDatasetBase,
)
from backup_pipelines.manifest.command import (
    CommandDataset,
    CommandSource,
)
from backup_pipelines.manifest.files import (
    FilesDataset,
    FilesSource,
)
from backup_pipelines.manifest.loader import (
    default_manifest_path,
    load_manifest,
    manifest_json_schema,
    parse_manifest,
    read_secret,
)
from backup_pipelines.manifest.model import (
    ActiveDataset,
    Dataset,
    Manifest,
)
from backup_pipelines.manifest.mysql import (
    MysqlDataset,
    MysqlSource,
)
from backup_pipelines.manifest.policies import (
    AlertChannel,
    Alerts,
    AnomalyThresholds,
    Compliance,
    DatasetAlerts,
    DatasetBase,
    Encryption,
    Expectation,
    LogChannel,
    RestoreTestConfig,
    Retention,
    SlackChannel,
    ValidationQuery,
    Verification,
    WebhookChannel,
)
from backup_pipelines.manifest.postgres import (
    PostgresDataset,
    PostgresSource,
)
from backup_pipelines.manifest.sqlite import (
    SqliteDataset,
    SqliteSource,
)
from backup_pipelines.manifest.storage import (
    AwsAccess,
    AwsSnapshotRepositoryConfig,
    LocalRepositoryConfig,
    MysqlServerConfig,
    ObjectLock,
    Placement,
    PostgresServerConfig,
    RepositoryConfig,
    ResticRepositoryConfig,
    S3RepositoryConfig,
    ServerConfig,
)
from backup_pipelines.manifest.types import (
    DEFAULT_MANIFEST,
    IMPLEMENTED_KINDS,
    MANIFEST_ENV,
    NAME_PATTERN,
    RESTIC_KINDS,
    SAFE_LOADER,
    SERVER_KINDS,
    SNAPSHOT_KINDS,
    UNION_PARENTS,
    UNION_TAGS,
    WATCH_KINDS,
    Duration,
    Name,
    Owner,
    Schedule,
    StrictModel,
)

__all__ = [
    "DEFAULT_MANIFEST",
    "IMPLEMENTED_KINDS",
    "MANIFEST_ENV",
    "NAME_PATTERN",
    "RESTIC_KINDS",
    "SAFE_LOADER",
    "SERVER_KINDS",
    "SNAPSHOT_KINDS",
    "UNION_PARENTS",
    "UNION_TAGS",
    "WATCH_KINDS",
    "ActiveDataset",
    "AlertChannel",
    "Alerts",
    "AnomalyThresholds",
    "AuroraDataset",
    "AuroraSource",
    "AwsAccess",
    "AwsSnapshotRepositoryConfig",
    "CommandDataset",
    "CommandSource",
    "Compliance",
    "Dataset",
    "DatasetAlerts",
    "DatasetBase",
    "Duration",
    "EbsDataset",
    "EbsSource",
    "Encryption",
    "Expectation",
    "FilesDataset",
    "FilesSource",
    "LocalRepositoryConfig",
    "LogChannel",
    "Manifest",
    "MysqlDataset",
    "MysqlServerConfig",
    "MysqlSource",
    "Name",
    "ObjectLock",
    "Owner",
    "Placement",
    "PostgresDataset",
    "PostgresServerConfig",
    "PostgresSource",
    "RdsDataset",
    "RdsRestoreSettings",
    "RdsSource",
    "RepositoryConfig",
    "ResticRepositoryConfig",
    "RestoreLogin",
    "RestoreTestConfig",
    "Retention",
    "S3BucketDataset",
    "S3BucketSource",
    "S3RepositoryConfig",
    "Schedule",
    "ServerConfig",
    "SlackChannel",
    "SnapshotDatasetBase",
    "SqliteDataset",
    "SqliteSource",
    "StrictModel",
    "ValidationQuery",
    "Verification",
    "WebhookChannel",
    "default_manifest_path",
    "load_manifest",
    "manifest_json_schema",
    "parse_manifest",
    "read_secret",
]
