"""Watching the backups: the RPO check and the RPO alert sensor (failed runs: assets/failure_alerts.py)."""

import json
import os
import time
from datetime import timedelta
from typing import Any

import dagster as dg

from assets.failure_alerts import CodeLocationRuns, retry_pending
from assets.history import LatestBackup, latest_backups
from assets.keys import DatasetKeys, dataset_of_step
from assets.metadata import rpo_check_metadata
from assets.pools import PoolWait, pool_waits
from assets.run_doctor import acts_here, diagnose, repair
from backup_pipelines.errors import BackupError
from backup_pipelines.freshness import Freshness, already_delivered, plan_alerts, settle
from backup_pipelines.manifest import Manifest
from backup_pipelines.notify import Alert, Notifier
from resources import ManifestResource, NotifierResource

RPO_CHECK = "rpo_fresh"
RPO_SENSOR_SECONDS_ENV = "BACKUP_RPO_SENSOR_SECONDS"  # how often rpo_alerts ticks (default 60; tests use less)
CHECK_REPORTS_PER_TICK = 100
# A step waiting longer than this for a slot of its `db-<server>` pool is logged at WARNING and alerted once.
POOL_WAIT_WARNING = timedelta(minutes=5)
# The rpo_alerts cursor maps dataset names to their alert state; this entry (not a dataset name) holds the pool
# waits already alerted.
POOL_WAITS_CURSOR_KEY = "~pool_waits"


def current_freshness(manifest: Manifest, latest: dict[str, LatestBackup | None], now: float) -> list[Freshness]:
    """Return every active dataset's freshness from its newest recorded backup that is not quarantined; a
    cluster archiving its WAL (postgres_cluster) by its newest archived segment instead (`wal_freshness`)."""
    items = []
    for name, dataset in manifest.active_datasets().items():
        if dataset.kind == "postgres_cluster":
            items.append(wal_freshness(manifest, name, now))
            continue
        backup = latest.get(name)
        items.append(
            Freshness(
                name,
                dataset.rpo.total_seconds(),
                backup.created_at if backup else None,
                backup.partition if backup else None,
                now,
                backup.quarantined_newer if backup else None,
            )
        )
    return items


def wal_freshness(manifest: Manifest, name: str, now: float) -> Freshness:
    """A cluster's freshness: the age of the newest WAL segment in its archive (its recovery point), stale at
    once when the server reports archive_command failures newer than its last success, or when the archive
    cannot be read."""
    from backup_pipelines.engines.pgbackrest_wal import wal_status

    rpo = manifest.dataset(name).rpo.total_seconds()
    try:
        status = wal_status(manifest, name)
    except BackupError as error:
        return Freshness(name, rpo, None, None, now, archive_failing=f"the archive cannot be read: {error}")
    newest = status.newest
    at = newest.archived_at.timestamp() if newest else None
    segment = newest.name if newest else None
    return Freshness(name, rpo, at, segment, now, wal_segment=segment, archive_failing=status.failing)


def build_rpo_check(manifest: Manifest) -> dg.AssetChecksDefinition:
    """One check per dataset: the newest committed backup is younger than the RPO (by its backup time).

    It judges the dataset, not a partition, so it sits on the dataset's unpartitioned `<dataset>/retention` asset
    (the backups the dataset holds): on the partitioned backup asset, every partitioned run selecting the asset's
    checks (the UI's Materialize) would leave a "Skipped" row for the partition next to the unpartitioned result."""
    names = list(manifest.active_datasets())
    specs = [
        dg.AssetCheckSpec(
            RPO_CHECK,
            asset=DatasetKeys(name).retention,
            description="The newest backup, by the time its snapshot was taken, is within the RPO.",
        )
        for name in names
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="rpo_checks")
    def rpo_checks(context: dg.AssetCheckExecutionContext, manifest: ManifestResource) -> Any:
        loaded = manifest.load()
        selected = {key.asset_key.path[0] for key in context.selected_asset_check_keys}  # <dataset>/retention
        latest = latest_backups(context.instance, sorted(selected))
        for item in current_freshness(loaded, latest, time.time()):
            if item.dataset in selected:
                yield dg.AssetCheckResult(**rpo_check_fields(item))

    return rpo_checks


def rpo_check_fields(item: Freshness) -> dict[str, Any]:
    """The RPO check's result for one dataset, shared by the check and by the sensor's runless reports."""
    return {
        "asset_key": DatasetKeys(item.dataset).retention,
        "check_name": RPO_CHECK,
        "passed": not item.stale,
        "severity": dg.AssetCheckSeverity.ERROR,
        "description": item.describe(),
        "metadata": rpo_check_metadata(item.age_seconds, item.rpo_seconds, item.partition),
    }


def report_check_changes(
    instance: dg.DagsterInstance, current: list[Freshness], state: dict[str, Any], limit: int
) -> int:
    """Record the RPO check of every dataset whose result changed since the sensor last recorded it (at most
    `limit` per tick, so a first tick over 1,000 datasets stays short); return how many were recorded.

    The recorded result is in the state entry "check" (True = passed) of each dataset."""
    reported = 0
    for item in current:
        entry = state.setdefault(item.dataset, {})
        if entry.get("check") == (not item.stale) or reported >= limit:
            continue
        fields = rpo_check_fields(item)
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=fields["asset_key"],
                check_name=RPO_CHECK,
                passed=fields["passed"],
                metadata=fields["metadata"],
                severity=fields["severity"],
                description=fields["description"],
            )
        )
        entry["check"] = not item.stale
        reported += 1
    return reported


def build_rpo_sensor(
    manifest: Manifest, pool_wait_warning: timedelta = POOL_WAIT_WARNING, runs: CodeLocationRuns | None = None
) -> dg.SensorDefinition:
    """A sensor that alerts once when a dataset goes stale, once when it recovers, and on the reminder.

    A dataset's new state is saved only once its alert reached every channel; an alert a channel refused is
    sent again on the next tick (to the channels still owed it) until it goes through. Each tick also retries
    the failed-run alerts still pending (of `runs`, the code location's runs) and looks after the pools: a
    step (or queued run) waiting longer than `pool_wait_warning` for a `db-<server>` slot is logged at WARNING
    with the runs holding the slots, and alerted once; on an instance whose runs all run on this host
    (SQLite), a run whose processes are all gone is marked failed and its slots freed, as
    `backup-pipelines doctor` does."""
    names = list(manifest.active_datasets())
    reminder = manifest.alerts.reminder

    @dg.sensor(
        name="rpo_alerts",
        minimum_interval_seconds=max(5, int(os.environ.get(RPO_SENSOR_SECONDS_ENV) or 60)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts when a dataset's newest backup is older than its RPO, and when it recovers; retries "
        "undelivered alerts; warns of backups blocked on a pool and fails runs whose processes died (local "
        "instance).",
    )
    def rpo_alerts(context: dg.SensorEvaluationContext, manifest: ManifestResource, notifier: NotifierResource) -> Any:
        state = json.loads(context.cursor) if context.cursor else {}
        alerted_waits = state.pop(POOL_WAITS_CURSOR_KEY, [])
        loaded = manifest.load()
        current = current_freshness(loaded, latest_backups(context.instance, names), time.time())
        sender = notifier.notifier(context.log)
        new_state, delivered, pending = send_rpo_alerts(sender, state, current, reminder)
        recorded = report_check_changes(context.instance, current, new_state, CHECK_REPORTS_PER_TICK)
        stale = sum(1 for entry in new_state.values() if entry["stale"])
        if runs is not None:
            sent, owed = retry_pending(context.instance, runs, sender, loaded.alerts.dagster_url)
            delivered, pending = delivered + sent, pending + owed
        repaired = _repair_dead_runs(context)
        waits, wait_alerts = watch_pools(context, alerted_waits, pool_wait_warning, loaded.alerts.dagster_url)
        refused = set()
        for wait_key, alert in wait_alerts:
            if sender.send(alert).complete:
                delivered += 1
            else:
                pending += 1
                refused.add(wait_key)
        new_state[POOL_WAITS_CURSOR_KEY] = [key for key in waits if key not in refused]
        context.update_cursor(json.dumps(new_state))
        return dg.SkipReason(
            f"{stale} of {len(current)} datasets stale; alerts: {delivered} delivered, {pending} pending (retried "
            f"next tick); {recorded} RPO checks recorded; {len(waits)} blocked on a pool; {repaired} dead runs failed"
        )

    return rpo_alerts


def send_rpo_alerts(
    sender: Notifier, state: dict[str, Any], current: list[Freshness], reminder: timedelta | None
) -> tuple[dict[str, Any], int, int]:
    """Plan the stale, reminder and recovered alerts from the saved `state`, send each to the channels that do
    not have it yet, and return the state to save (a change only where its alert went through), the number
    of alerts delivered and the number still pending."""
    alerts, new_state = plan_alerts(state, current, reminder)
    for name, entry in new_state.items():
        if "check" in state.get(name, {}):
            entry["check"] = state[name]["check"]
    delivered = pending = 0
    for alert in alerts:
        previous = state.get(alert.dataset, {})
        done = already_delivered(previous, alert.kind)
        delivery = sender.send(alert, skip=done)
        complete = delivery.complete
        new_state[alert.dataset] = settle(
            previous, new_state[alert.dataset], alert.kind, [*done, *delivery.delivered], complete
        )
        delivered, pending = (delivered + 1, pending) if complete else (delivered, pending + 1)
    return new_state, delivered, pending


def watch_pools(
    context: dg.SensorEvaluationContext, alerted: list[str], threshold: timedelta, dagster_url: str
) -> tuple[list[str], list[tuple[str, Alert]]]:
    """Log at WARNING every pool wait longer than `threshold`, naming the holders; return the keys of those
    waits (to remember) and the alerts (with their wait's key) of each not in `alerted` yet."""
    now = time.time()
    long_waits = [wait for wait in pool_waits(context.instance) if now - wait.since >= threshold.total_seconds()]
    alerts: list[tuple[str, Alert]] = []
    for wait in long_waits:
        context.log.warning(f"blocked on a pool: {wait.describe(now)}")
        if wait.key not in alerted:
            alerts += [(wait.key, alert) for alert in pool_wait_alerts(context.instance, wait, now, dagster_url)]
    return [wait.key for wait in long_waits], alerts


def pool_wait_alerts(instance: dg.DagsterInstance, wait: PoolWait, now: float, dagster_url: str) -> list[Alert]:
    """One alert per dataset delayed by `wait` (one for the run when no dataset is known)."""
    run = instance.get_run_by_id(wait.run_id)
    stage = dataset_of_step(wait.step_key) if wait.step_key else None
    what = f"{stage[0]} " if stage else ""
    return [
        Alert(
            kind="finding",
            dataset=dataset,
            title=f"{dataset}: {what}blocked on pool {wait.pool}",
            message=wait.describe(now),
            partition=run.tags.get("dagster/partition") if run else None,
            run_url=f"{dagster_url.rstrip('/')}/runs/{wait.run_id}",
            details={
                "run_id": wait.run_id,
                "pool": wait.pool,
                "waiting_seconds": round(now - wait.since),
                "holders": [run_id for run_id, _, _ in wait.holders],
            },
        )
        for dataset in wait.datasets(run) or ["all"]
    ]


def _repair_dead_runs(context: dg.SensorEvaluationContext) -> int:
    """On an instance whose runs all run on this host, fail the runs whose processes are gone and free their
    slots (and those of ended runs); return how many runs were failed."""
    if not acts_here(context.instance):
        return 0
    report = diagnose(context.instance)
    if not report.dead and not [ended for ended in report.ended if not ended.running]:
        return 0
    repair(context.instance, report)
    for diagnosis in report.dead:
        context.log.warning(f"{diagnosis.describe()}: marked failed, its slots freed")
    for ended in report.ended:
        if not ended.running:
            context.log.warning(f"{ended.describe()}: slots freed")
    return len(report.failed)
