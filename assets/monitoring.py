"""Watching the backups: the RPO check, the RPO alert sensor and the failed-run alert sensor."""

import json
import time
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from assets.history import LatestBackup, latest_backups
from assets.keys import DatasetKeys
from assets.pools import STAGES, PoolWait, dataset_of_step, pool_waits
from assets.run_doctor import acts_here, diagnose, repair
from backup_pipelines.freshness import Freshness, plan_alerts
from backup_pipelines.manifest import Manifest
from backup_pipelines.notify import Alert
from resources import ManifestResource, NotifierResource

RPO_CHECK = "rpo_fresh"
CHECK_REPORTS_PER_TICK = 100
# A step waiting longer than this for a slot of its `db-<server>` pool is logged at WARNING and alerted once.
POOL_WAIT_WARNING = timedelta(minutes=5)
# The rpo_alerts cursor maps dataset names to their alert state; this entry (not a dataset name) holds the pool
# waits already alerted.
POOL_WAITS_CURSOR_KEY = "~pool_waits"


def current_freshness(manifest: Manifest, latest: dict[str, LatestBackup | None], now: float) -> list[Freshness]:
    """Return every active dataset's freshness from its newest recorded backup that is not quarantined."""
    items = []
    for name, dataset in manifest.active_datasets().items():
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


def build_rpo_check(manifest: Manifest) -> dg.AssetChecksDefinition:
    """One check per dataset: the newest committed backup is younger than the RPO (by its backup time)."""
    names = list(manifest.active_datasets())
    specs = [
        dg.AssetCheckSpec(
            RPO_CHECK,
            asset=DatasetKeys(name).backup,
            description="The newest backup, by the time its snapshot was taken, is within the RPO.",
        )
        for name in names
    ]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="rpo_checks")
    def rpo_checks(context: dg.AssetCheckExecutionContext, manifest: ManifestResource) -> Any:
        loaded = manifest.load()
        selected = {key.asset_key.path[-1] for key in context.selected_asset_check_keys}
        latest = latest_backups(context.instance, sorted(selected))
        for item in current_freshness(loaded, latest, time.time()):
            if item.dataset in selected:
                yield dg.AssetCheckResult(**rpo_check_fields(item))

    return rpo_checks


def rpo_check_fields(item: Freshness) -> dict[str, Any]:
    """The RPO check's result for one dataset, shared by the check and by the sensor's runless reports."""
    return {
        "asset_key": DatasetKeys(item.dataset).backup,
        "check_name": RPO_CHECK,
        "passed": not item.stale,
        "severity": dg.AssetCheckSeverity.ERROR,
        "description": item.describe(),
        "metadata": {
            "age_seconds": item.age_seconds if item.age_seconds is not None else -1.0,
            "rpo_seconds": item.rpo_seconds,
            "newest_partition": item.partition or "",
        },
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


def build_rpo_sensor(manifest: Manifest, pool_wait_warning: timedelta = POOL_WAIT_WARNING) -> dg.SensorDefinition:
    """A sensor that alerts once when a dataset goes stale, once when it recovers, and on the reminder.

    Each tick also looks after the pools: a step (or queued run) waiting longer than `pool_wait_warning` for a
    `db-<server>` slot is logged at WARNING with the runs holding the slots, and alerted once; on an instance
    whose runs all run on this host (SQLite), a run whose processes are all gone is marked failed and its slots
    freed, as `backup-pipelines doctor` does."""
    names = list(manifest.active_datasets())
    reminder = manifest.alerts.reminder

    @dg.sensor(
        name="rpo_alerts",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts when a dataset's newest backup is older than its RPO, and when it recovers; warns of "
        "backups blocked on a pool and fails runs whose processes died (local instance).",
    )
    def rpo_alerts(context: dg.SensorEvaluationContext, manifest: ManifestResource, notifier: NotifierResource) -> Any:
        state = json.loads(context.cursor) if context.cursor else {}
        alerted_waits = state.pop(POOL_WAITS_CURSOR_KEY, [])
        current = current_freshness(manifest.load(), latest_backups(context.instance, names), time.time())
        alerts, new_state = plan_alerts(state, current, reminder)
        for name, entry in new_state.items():
            if "check" in state.get(name, {}):
                entry["check"] = state[name]["check"]
        sender = notifier.notifier(context.log)
        for alert in alerts:
            sender.send(alert)
        recorded = report_check_changes(context.instance, current, new_state, CHECK_REPORTS_PER_TICK)
        stale = sum(1 for entry in new_state.values() if entry["stale"])
        repaired = _repair_dead_runs(context)
        waits, wait_alerts = watch_pools(context, alerted_waits, pool_wait_warning, manifest.load().alerts.dagster_url)
        for alert in wait_alerts:
            sender.send(alert)
        new_state[POOL_WAITS_CURSOR_KEY] = waits
        context.update_cursor(json.dumps(new_state))
        return dg.SkipReason(
            f"{stale} of {len(current)} datasets stale; {len(alerts)} alerts sent; {recorded} RPO checks recorded; "
            f"{len(waits)} blocked on a pool; {repaired} dead runs failed"
        )

    return rpo_alerts


def watch_pools(
    context: dg.SensorEvaluationContext, alerted: list[str], threshold: timedelta, dagster_url: str
) -> tuple[list[str], list[Alert]]:
    """Log at WARNING every pool wait longer than `threshold`, naming the holders; return the keys of those
    waits (to remember) and an alert for each not in `alerted` yet."""
    now = time.time()
    long_waits = [wait for wait in pool_waits(context.instance) if now - wait.since >= threshold.total_seconds()]
    alerts = []
    for wait in long_waits:
        context.log.warning(f"blocked on a pool: {wait.describe(now)}")
        if wait.key not in alerted:
            alerts += pool_wait_alerts(context.instance, wait, now, dagster_url)
    return [wait.key for wait in long_waits], alerts


def pool_wait_alerts(instance: dg.DagsterInstance, wait: PoolWait, now: float, dagster_url: str) -> list[Alert]:
    """One alert per dataset delayed by `wait` (one for the run when no dataset is known)."""
    run = instance.get_run_by_id(wait.run_id)
    what = f"{wait.step_key.split('__')[0]} " if wait.step_key else ""
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


def failure_alerts(run: Any, failures: list[tuple[str, str]], dagster_url: str) -> list[Alert]:
    """Given a failed run and its failed steps (step key, error), return one alert per failed dataset."""
    partition = run.tags.get("dagster/partition")
    by_dataset: dict[str, list[str]] = {}
    for step_key, error in failures:
        stage, dataset = dataset_of_step(step_key) or ("run", "all")
        by_dataset.setdefault(dataset, []).append(f"{STAGES.get(stage, stage)} failed: {error}")
    run_url = f"{dagster_url.rstrip('/')}/runs/{run.run_id}"
    return [
        Alert(
            kind="failure",
            dataset=dataset,
            title=f"{dataset}: {run.job_name} failed",
            message="; ".join(messages),
            partition=partition,
            run_url=run_url,
            details={"run_id": run.run_id, "job": run.job_name},
        )
        for dataset, messages in by_dataset.items()
    ]


def build_failure_sensor(manifest: Manifest, jobs: list[Any]) -> dg.SensorDefinition:
    """A run-failure sensor over the backup, drill and protect jobs: one alert per failed dataset and run."""

    @dg.run_failure_sensor(
        name="backup_failure_alerts",
        monitored_jobs=jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts on every failed backup, verify or restore-test run.",
    )
    def backup_failure_alerts(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
        failures = [(event.step_key or "run", _error_text(event)) for event in context.get_step_failure_events()]
        if not failures:  # the run died or was failed from outside: blame the steps it did not finish
            message = context.failure_event.message or "run failed"
            steps = unfinished_steps(context.instance, context.dagster_run) or ["run"]
            failures = [(step_key, message) for step_key in steps]
        sender = notifier.notifier(context.log)
        dagster_url = notifier.manifest.load().alerts.dagster_url
        for alert in failure_alerts(context.dagster_run, failures, dagster_url):
            sender.send(alert)

    return backup_failure_alerts


def unfinished_steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """Return the dataset steps of `run` that did not finish: those started and never ended (a killed worker
    leaves them so), else those of its plan that never ended (a run failed before its steps ran)."""
    started: dict[str, None] = {}
    ended = set()
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = None
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            started.pop(event.step_key, None)
            ended.add(event.step_key)
    steps = list(started)
    if not steps:
        plan = (
            instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            if run.execution_plan_snapshot_id
            else None
        )
        planned = run.step_keys_to_execute or ([step.key for step in plan.steps] if plan else [])
        steps = [key for key in planned if key not in ended]
    return [key for key in steps if dataset_of_step(key)]


def _error_text(event: Any) -> str:
    """Return the user's error of a failed step (the cause Dagster wraps), as one line."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None:
        return event.message or "step failed"
    if error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    text = " ".join(error.message.split())
    return text.split(".", 2)[-1] if text.startswith("backup_pipelines.errors.") else text
