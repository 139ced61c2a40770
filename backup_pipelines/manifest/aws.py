"""AWS datasets: RDS instances, Aurora clusters and EBS volumes kept as snapshots, and S3 buckets watched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from backup_pipelines.manifest.policies import DatasetAlerts, DatasetBase
from backup_pipelines.manifest.storage import AwsAccess
from backup_pipelines.manifest.types import Owner, Schedule, StrictInt, StrictModel


class SnapshotDatasetBase(DatasetBase):
    """A resource AWS snapshots for us: encrypted by KMS (not age), judged by AWS's own metadata."""

    @model_validator(mode="after")
    def _no_age_or_queries(self) -> SnapshotDatasetBase:
        if self.encryption is not None:
            raise ValueError(
                "AWS snapshots are encrypted with KMS by AWS, not with age: remove `encryption` and use "
                "source.require_encryption"
            )
        login = getattr(getattr(self, "source", None), "restore_login", None)
        if self.verification.queries and login is None:
            raise ValueError(
                "verification.queries run on the restored instance only with source.restore_login (an EBS volume "
                "cannot be queried)"
            )
        if any(query.expect.same_as_source for query in self.verification.queries):
            raise ValueError("same_as_source needs the source queried inside the snapshot, which AWS cannot do")
        return self


class RestoreLogin(StrictModel):
    """How a restore test logs in to the temporary RDS instance to run the validation queries (it keeps the
    source's users and passwords). The runner needs network access to it (restore_subnet_group and
    restore_security_group_ids)."""

    database: str = Field(min_length=1, description="Database to query on the restored instance.")
    user: str = Field(min_length=1, description="A user of the source instance (e.g. its master user).")
    password_env: str = Field(description="Env var holding that user's password; never inline.")
    query_timeout_seconds: StrictInt = Field(
        600, ge=1, le=86400, description="A validation query running longer fails (the instance is deleted anyway)."
    )


class RdsRestoreSettings(StrictModel):
    """What RDS instances and Aurora clusters share: the region, encryption, and how restore tests run."""

    region: str = Field(min_length=1, description="Region of the source (= region of the first repository).")
    require_encryption: bool = Field(True, description="Verify fails for a snapshot that is not KMS-encrypted.")
    restore_instance_class: str = Field("db.t3.micro", description="Instance class of restore-test instances.")
    restore_subnet_group: str | None = Field(None, description="DB subnet group for restore-test instances.")
    restore_security_group_ids: list[str] = Field(
        default_factory=list, description="VPC security groups of restore-test instances."
    )
    restore_login: RestoreLogin | None = Field(
        None, description="Log in to the restored instance and run verification.queries (PostgreSQL, MySQL, MariaDB)."
    )


class RdsSource(RdsRestoreSettings):
    """One RDS DB instance; snapshots are taken in its region."""

    db_instance_identifier: str = Field(min_length=1, max_length=63, description="The DB instance to snapshot.")


class RdsDataset(SnapshotDatasetBase):
    """An RDS DB instance: one partition is one manual DB snapshot, tagged with dataset and partition, copied
    to the other repositories' regions; restore tests restore it to a temporary instance and delete it."""

    kind: Literal["rds"] = Field(description="Dataset kind.")
    source: RdsSource = Field(description="The DB instance to protect.")

    def source_summary(self) -> str:
        return f"RDS instance {self.source.db_instance_identifier} in {self.source.region}"


class AuroraSource(RdsRestoreSettings):
    """One Aurora DB cluster; cluster snapshots are taken in its region."""

    db_cluster_identifier: str = Field(min_length=1, max_length=63, description="The DB cluster to snapshot.")
    restore_instance_class: str = Field(
        "db.r6g.large", description="Instance class of the one instance a restore-test cluster gets."
    )


class AuroraDataset(SnapshotDatasetBase):
    """An Aurora DB cluster: one partition is one manual cluster snapshot, tagged and copied like RDS snapshots;
    restore tests restore a temporary cluster with one instance and delete both."""

    kind: Literal["aurora"] = Field(description="Dataset kind.")
    source: AuroraSource = Field(description="The DB cluster to protect.")

    def source_summary(self) -> str:
        return f"Aurora cluster {self.source.db_cluster_identifier} in {self.source.region}"


class EbsSource(StrictModel):
    """One EBS volume; snapshots are taken in its region (crash-consistent, like pulling the plug)."""

    volume_id: str = Field(pattern=r"^vol-[0-9a-f]+$", description="The volume to snapshot.")
    region: str = Field(min_length=1, description="Region of the volume (= region of the first repository).")
    require_encryption: bool = Field(True, description="Verify fails for a snapshot that is not KMS-encrypted.")
    restore_availability_zone: str | None = Field(
        None, description="Availability zone of restore-test volumes; default: the source volume's."
    )
    restore_volume_type: str = Field("gp3", description="Volume type of restore-test volumes.")


class EbsDataset(SnapshotDatasetBase):
    """An EBS volume: one partition is one snapshot, tagged, copied like RDS snapshots; restore tests create
    a volume from it, check it and delete it."""

    kind: Literal["ebs"] = Field(description="Dataset kind.")
    source: EbsSource = Field(description="The volume to protect.")

    def source_summary(self) -> str:
        return f"EBS volume {self.source.volume_id} in {self.source.region}"


class S3BucketSource(AwsAccess):
    """A bucket whose protection settings are checked."""

    bucket: str = Field(min_length=3, max_length=63, description="Bucket name.")
    require_replication: bool = Field(False, description="A finding unless an enabled replication rule exists.")
    require_object_lock: bool = Field(False, description="A finding unless Object Lock is enabled on the bucket.")


class S3BucketDataset(StrictModel):
    """A bucket checked for versioning (and, if asked, replication and Object Lock). Versioning is not a
    backup, but a protected bucket without it loses every overwritten or deleted object for good."""

    kind: Literal["s3"] = Field(description="Dataset kind.")
    description: str = Field("", description="One line of business meaning, shown in the Dagster UI.")
    enabled: bool = Field(True, description="Disabled datasets are validated but get no checks.")
    schedule: Schedule = Field("daily", description="How often the bucket is checked.")
    source: S3BucketSource = Field(description="The bucket to check.")
    alerts: DatasetAlerts = Field(default_factory=DatasetAlerts, description="Where findings are alerted.")
    owners: list[Owner] = Field(default_factory=list, description='"team:name" or an e-mail address.')
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form tags copied to the asset.")

    def source_summary(self) -> str:
        return f"S3 bucket {self.source.bucket} in {self.source.region}"
