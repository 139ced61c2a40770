"""Watching the backups: the RPO check, the RPO alert sensor and the failed-run alert sensor."""

import json
import time
from typing import Any

import dagster as dg

from assets.history import LatestBackup, latest_backups
from assets.keys import DatasetKeys
from backup_pipelines.freshness import Freshness, plan_alerts
from backup_pipelines.manifest import Manifest
from backup_pipelines.notify import Alert
from resources import ManifestResource, NotifierResource

RPO_CHECK = "rpo_fresh"
CHECK_REPORTS_PER_TICK = 100
STAGES = {"backup": "backup", "copy": "copy", "verify": "verify", "restore_test": "restore test"}


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


def build_rpo_sensor(manifest: Manifest) -> dg.SensorDefinition:
    """A sensor that alerts once when a dataset goes stale, once when it recovers, and on the reminder."""
    names = list(manifest.active_datasets())
    reminder = manifest.alerts.reminder

    @dg.sensor(
        name="rpo_alerts",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts when a dataset's newest backup is older than its RPO, and when it recovers.",
    )
    def rpo_alerts(context: dg.SensorEvaluationContext, manifest: ManifestResource, notifier: NotifierResource) -> Any:
        state = json.loads(context.cursor) if context.cursor else {}
        current = current_freshness(manifest.load(), latest_backups(context.instance, names), time.time())
        alerts, new_state = plan_alerts(state, current, reminder)
        for name, entry in new_state.items():
            if "check" in state.get(name, {}):
                entry["check"] = state[name]["check"]
        sender = notifier.notifier(context.log)
        for alert in alerts:
            sender.send(alert)
        recorded = report_check_changes(context.instance, current, new_state, CHECK_REPORTS_PER_TICK)
        context.update_cursor(json.dumps(new_state))
        stale = sum(1 for entry in new_state.values() if entry["stale"])
        return dg.SkipReason(
            f"{stale} of {len(current)} datasets stale; {len(alerts)} alerts sent; {recorded} RPO checks recorded"
        )

    return rpo_alerts


def failure_alerts(run: Any, failures: list[tuple[str, str]], dagster_url: str) -> list[Alert]:
    """Given a failed run and its failed steps (step key, error), return one alert per failed dataset."""
    partition = run.tags.get("dagster/partition")
    by_dataset: dict[str, list[str]] = {}
    for step_key, error in failures:
        stage, _, dataset = step_key.partition("__")
        if stage not in STAGES or not dataset:
            stage, dataset = "run", "all"
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
        if not failures:
            failures = [("run", context.failure_event.message or "run failed")]
        sender = notifier.notifier(context.log)
        dagster_url = notifier.manifest.load().alerts.dagster_url
        for alert in failure_alerts(context.dagster_run, failures, dagster_url):
            sender.send(alert)

    return backup_failure_alerts


def _error_text(event: Any) -> str:
    """Return the user's error of a failed step (the cause Dagster wraps), as one line."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None:
        return event.message or "step failed"
    if error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    text = " ".join(error.message.split())
    return text.split(".", 2)[-1] if text.startswith("backup_pipelines.errors.") else text
