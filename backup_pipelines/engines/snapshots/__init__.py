"""AWS snapshot engines (see `snapshots.base` for the flow they share): RDS, Aurora, EBS."""

from backup_pipelines.engines.snapshots.aurora import AuroraEngine
from backup_pipelines.engines.snapshots.base import SnapshotEngine, scratch_name
from backup_pipelines.engines.snapshots.ebs import EbsEngine
from backup_pipelines.engines.snapshots.rds import RdsEngine

__all__ = ["AuroraEngine", "EbsEngine", "RdsEngine", "SnapshotEngine", "scratch_name"]
