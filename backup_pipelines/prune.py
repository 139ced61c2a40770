"""Enforce retention on the backups that really exist in a dataset's repositories.

Lists every repository (not only what Dagster remembers), merges the backups by id, plans with
`retention.plan_retention` (policy plus safety rules), and deletes each expired backup from every repository
holding it. Deleting is tombstone, data, marker, sidecar (see `BackupStore.delete_backup`), so an interrupted
prune leaves every remaining backup intact and the next run finishes the job. `dry_run` only plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from backup_pipelines.manifest import Manifest
from backup_pipelines.repository import BackupRecord, BackupStore, open_repository
from backup_pipelines.retention import Candidate, Decision, Policy, plan_retention


@dataclass
class PruneReport:
    """What a prune of one dataset decided and did."""

    dataset: str
    dry_run: bool
    kept: list[tuple[BackupRecord, tuple[str, ...]]] = field(default_factory=list)
    expired: list[BackupRecord] = field(default_factory=list)
    deleted: dict[str, list[str]] = field(default_factory=dict)
    bytes_freed: int = 0
    finished_interrupted: list[str] = field(default_factory=list)

    def expired_partitions(self, remaining: set[str]) -> list[str]:
        """Partitions that lost their last backup in this prune."""
        return sorted({record.partition_key for record in self.expired} - remaining)


def policy_of(manifest: Manifest, name: str) -> Policy:
    """Return the retention policy of dataset `name`."""
    retention = manifest.dataset(name).retention
    return Policy(
        keep_last=retention.keep_last,
        keep_hourly=retention.keep_hourly,
        keep_daily=retention.keep_daily,
        keep_weekly=retention.keep_weekly,
        keep_monthly=retention.keep_monthly,
        keep_yearly=retention.keep_yearly,
        keep_within=retention.keep_within,
    )


def prune_dataset(manifest: Manifest, name: str, now: datetime | None = None, dry_run: bool = False) -> PruneReport:
    """Apply dataset `name`'s retention to its repositories; return what was kept (and why) and expired.

    Raise StorageError if a repository cannot be listed or a deletion fails (what was deleted before stays
    deleted and consistent; a rerun finishes the rest).
    """
    now = now or datetime.now(UTC)
    dataset = manifest.dataset(name)
    repositories = [open_repository(manifest, repository) for repository in dataset.repositories]
    holdings: dict[str, list[tuple[BackupStore, BackupRecord]]] = {}
    tested: set[str] = set()
    report = PruneReport(name, dry_run)
    for repository in repositories:
        for record in repository.list_backups(name, include_expiring=True):
            if record.expired_at is not None:  # an interrupted prune: finish it
                report.finished_interrupted.append(record.backup_id)
                if not dry_run:
                    repository.delete_backup(record)
                continue
            holdings.setdefault(record.backup_id, []).append((repository, record))
        tested |= repository.restore_tested(name)
    records = {backup_id: copies[0][1] for backup_id, copies in holdings.items()}
    decisions = _plan(records, holdings, tested, manifest, name, now)
    stores_changed: dict[str, BackupStore] = {}
    for decision in decisions:
        record = records[decision.backup]
        if decision.keep:
            report.kept.append((record, decision.reasons))
            continue
        report.expired.append(record)
        for repository, copy in holdings[decision.backup]:
            if not dry_run:
                repository.delete_backup(copy)
                stores_changed[repository.name] = repository
            report.deleted.setdefault(repository.name, []).append(copy.backup_id)
            report.bytes_freed += copy.bytes_stored
    for store in stores_changed.values():
        store.finish_deletes()
    return report


def _plan(
    records: dict[str, BackupRecord],
    holdings: dict[str, list[tuple[BackupStore, BackupRecord]]],
    tested: set[str],
    manifest: Manifest,
    name: str,
    now: datetime,
) -> list[Decision]:
    retention = manifest.dataset(name).retention
    policy = policy_of(manifest, name)
    quarantined = {backup_id for backup_id, copies in holdings.items() if any(c.quarantined for _, c in copies)}
    candidates = [
        Candidate(backup_id, record.created, backup_id in tested, quarantined=backup_id in quarantined)
        for backup_id, record in records.items()
    ]
    first = plan_retention(candidates, policy, now, retention.min_age)
    expiring = {decision.backup for decision in first if not decision.keep}
    if not expiring:
        return first
    locks = {}
    for backup_id in expiring:  # only backups the policy would delete need the storage's lock status
        dates = [repository.locked_until(copy) for repository, copy in holdings[backup_id]]
        active = [date for date in dates if date is not None]
        locks[backup_id] = max(active) if active else None
    candidates = [replace(c, locked_until=locks.get(c.backup)) for c in candidates]
    return plan_retention(candidates, policy, now, retention.min_age)
