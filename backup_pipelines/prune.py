"""Enforce retention on the backups that really exist in a dataset's repositories.

Lists every repository (not only what Dagster remembers), merges the backups by id, plans with
`retention.plan_retention` (policy plus safety rules), and deletes each expired backup from every repository
holding it. Deleting is tombstone, data, marker, sidecar (see `BackupStore.delete_backup`), so an interrupted
prune leaves every remaining backup intact and the next run finishes the job. `dry_run` only plans.

It also removes what interrupted work left in object repositories once older than `leftover_age` (so no
running backup can own it): temporary files, objects without a sidecar, empty folders, unfinished multipart
uploads (see `repository.inventory`). A damaged sidecar is reported, never acted on: its object may be the
only copy of something.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from backup_pipelines.errors import StorageError
from backup_pipelines.manifest import Manifest
from backup_pipelines.repository import BackupRecord, BackupStore, DamagedSidecar, Leftover, Repository, open_repository
from backup_pipelines.retention import Candidate, Decision, Policy, plan_retention

LOG = logging.getLogger("backup_pipelines")
# Leftovers younger than this are left alone: longer than any backup runs, so none of them is still being written.
DEFAULT_LEFTOVER_AGE = timedelta(hours=24)


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
    leftovers: list[tuple[str, Leftover]] = field(default_factory=list)  # (repository, leftover) removed/to remove
    leftovers_failed: list[tuple[str, Leftover, str]] = field(default_factory=list)  # (repository, leftover, why)
    damaged: list[tuple[str, DamagedSidecar]] = field(default_factory=list)  # (repository, sidecar): never touched
    missing: list[tuple[str, BackupRecord]] = field(default_factory=list)  # (repository, backup with objects gone)

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


def prune_dataset(
    manifest: Manifest,
    name: str,
    now: datetime | None = None,
    dry_run: bool = False,
    leftover_age: timedelta = DEFAULT_LEFTOVER_AGE,
) -> PruneReport:
    """Apply dataset `name`'s retention to its repositories; return what was kept (and why) and expired, and
    remove the leftovers not changed for `leftover_age` (a dry run lists them; both count their bytes).

    Raise StorageError if a repository cannot be listed or a backup's deletion fails (what was deleted before
    stays deleted and consistent; a rerun finishes the rest). A leftover that cannot be removed is noted in
    the report's `leftovers_failed`, not raised.
    """
    now = now or datetime.now(UTC)
    dataset = manifest.dataset(name)
    repositories = [open_repository(manifest, repository) for repository in dataset.repositories]
    holdings: dict[str, list[tuple[BackupStore, BackupRecord]]] = {}
    tested: set[str] = set()
    report = PruneReport(name, dry_run)
    for repository in repositories:
        listing = repository.scan(name, include_expiring=True)
        report.damaged += [(repository.name, damaged) for damaged in listing.damaged]
        report.missing += [(repository.name, record) for record in listing.records if listing.is_missing(record)]
        if isinstance(repository, Repository):
            report.leftovers += [(repository.name, item) for item in repository.leftovers(name, now - leftover_age)]
        for record in listing.records:
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
    _remove_leftovers(report, {repository.name: repository for repository in repositories})
    return report


def _remove_leftovers(report: PruneReport, repositories: dict[str, BackupStore]) -> None:
    """Remove the report's leftovers (unless a dry run) and count their bytes as freed; one that cannot be
    removed moves to `leftovers_failed` with a warning, one that stopped being a leftover is dropped."""
    kept: list[tuple[str, Leftover]] = []
    for repository_name, leftover in report.leftovers:
        repository = repositories[repository_name]
        assert isinstance(repository, Repository), "only object repositories report leftovers"
        try:
            if not report.dry_run and not repository.remove_leftover(leftover):
                continue
        except StorageError as error:
            LOG.warning(f"could not remove the leftover {leftover.uri}: {error}")
            report.leftovers_failed.append((repository_name, leftover, str(error)))
            continue
        kept.append((repository_name, leftover))
        report.bytes_freed += leftover.size
    report.leftovers = kept


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
    first = _keep_prerequisites(plan_retention(candidates, policy, now, retention.min_age), holdings)
    expiring = {decision.backup for decision in first if not decision.keep}
    if not expiring:
        return first
    locks = {}
    for backup_id in expiring:  # only backups the policy would delete need the storage's lock status
        dates = [repository.locked_until(copy) for repository, copy in holdings[backup_id]]
        active = [date for date in dates if date is not None]
        locks[backup_id] = max(active) if active else None
    candidates = [replace(c, locked_until=locks.get(c.backup)) for c in candidates]
    return _keep_prerequisites(plan_retention(candidates, policy, now, retention.min_age), holdings)


def _keep_prerequisites(
    decisions: list[Decision], holdings: dict[str, list[tuple[BackupStore, BackupRecord]]]
) -> list[Decision]:
    """Keep every backup a kept one cannot be restored without (an incremental's differential and full), with
    the reason naming it; newest first, so a chain is followed to its full."""
    needed: dict[str, str] = {}
    result = []
    for decision in decisions:  # newest first: a backup's prerequisites are older than it
        reasons = decision.reasons
        if decision.backup in needed:
            reasons = (*reasons, f"safety: needed by {needed[decision.backup]}")
        if reasons:
            for repository, copy in holdings.get(decision.backup, []):
                for prerequisite in repository.prerequisites(copy):
                    needed.setdefault(prerequisite, decision.backup)
        result.append(replace(decision, reasons=tuple(dict.fromkeys(reasons))))
    return result
