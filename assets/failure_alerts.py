"""Failed-run alerts: one run-failure sensor over every run of this code location, whatever launched it.

Dagster 1.13 gives a run-failure sensor the runs of its own code location that were launched through the
instance (UI, schedules, sensors, backfills). Runs started by `dagster job execute` / `dagster asset materialize`
carry no remote job origin, so a sensor filtered by job, or one left to its default (its own code location),
never sees them. With `monitor_all_code_locations=True` the sensor sees every failed run of the instance, CLI
runs included; `CodeLocationRuns.owns` then keeps the runs of this code location's jobs and assets.

Each failed run is alerted once per failed dataset (one alert for a run not tied to a dataset). The run is
tagged `backup-pipelines/alert=delivered` once every channel took its alerts; while a channel refuses, the tag
says `pending` and the channels that have each alert are recorded on the run, and the `rpo_alerts` sensor
retries the pending runs on each tick (`retry_pending`), skipping the channels already served.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventType

from assets.keys import DatasetKeys
from assets.retention import retention_key
from assets.stage_index import INDEXED, record_attempt
from backup_pipelines.manifest import Manifest
from backup_pipelines.notify import Alert, Notifier
from resources import NotifierResource

ALERT_TAG = "backup-pipelines/alert"  # "pending" until every channel took the run's alerts, then "delivered"
DELIVERED_TAG = "backup-pipelines/alert-delivered"  # JSON: dataset -> the channels that have its alert
IMPLICIT_ASSET_JOB = "__ASSET_JOB"  # the job of an asset-page Materialize, a backfill, `dagster asset materialize`
PENDING_RETRIES_PER_TICK = 20
STAGE_LABELS = {
    "backup": "backup",
    "copy": "copy",
    "verify": "verify",
    "restore_test": "restore test",
    "retention": "retention",
}


@dataclass(frozen=True)
class CodeLocationRuns:
    """What identifies a run of this code location, and which dataset and stage each of its steps belongs to."""

    job_names: frozenset[str]
    asset_keys: frozenset[dg.AssetKey]
    stages: dict[str, tuple[str, str]]  # step key -> (stage, dataset)

    def owns(self, instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
        """True when `run` is of one of this code location's jobs, or an asset run of its assets."""
        if run.job_name in self.job_names:
            return True
        if not run.job_name.startswith(IMPLICIT_ASSET_JOB):
            return False
        selected = set(run.asset_selection or ()) | {key.asset_key for key in run.asset_check_selection or ()}
        if selected:
            return bool(selected & self.asset_keys)
        step_keys = {"__".join(key.path) for key in self.asset_keys}
        return bool(step_keys & set(planned_steps(instance, run)))

    def dataset_of(self, step_key: str) -> tuple[str, str] | None:
        """Return (stage, dataset) of a dataset's step, else None."""
        return self.stages.get(step_key)


def code_location_runs(manifest: Manifest, jobs: Iterable[Any], assets: Iterable[Any]) -> CodeLocationRuns:
    """Given the manifest, the code location's jobs and its assets (definitions or specs), return what
    identifies its runs."""
    stages: dict[str, tuple[str, str]] = {}
    for name in manifest.active_datasets():
        keys = DatasetKeys(name)
        by_stage = {"backup": keys.backup, "copy": keys.copy, "verify": keys.verify}
        by_stage |= {"restore_test": keys.restore_test, "retention": retention_key(name)}
        for stage, key in by_stage.items():
            stages["__".join(key.path)] = (stage, name)
    asset_keys = {key for asset in assets for key in (asset.keys if hasattr(asset, "keys") else [asset.key])}
    return CodeLocationRuns(frozenset(job.name for job in jobs), frozenset(asset_keys), stages)


def planned_steps(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """Return the step keys `run` was to execute (its plan's, when it names none)."""
    if run.step_keys_to_execute:
        return list(run.step_keys_to_execute)
    if not run.execution_plan_snapshot_id:
        return []
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return [step.key for step in plan.steps] if plan else []


def blamed_steps(instance: dg.DagsterInstance, run: dg.DagsterRun, runs: CodeLocationRuns) -> list[tuple[str, str]]:
    """Return the steps the failure of `run` is put on, each with its error: its failed steps, else (the run died
    or was failed from outside) the steps it did not finish with the run's failure message, else "run"."""
    failures = [
        (entry.dagster_event.step_key or "run", error_text(entry.dagster_event))
        for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        if entry.dagster_event is not None
    ]
    if not failures:
        message = run_failure_message(instance, run)
        failures = [(step_key, message) for step_key in unfinished_steps(instance, run, runs) or ["run"]]
    return failures


def run_failure_alerts(
    instance: dg.DagsterInstance, run: dg.DagsterRun, runs: CodeLocationRuns, dagster_url: str
) -> list[Alert]:
    """Return one alert per failed dataset of the failed `run` (one for the run when no dataset is known),
    with each failed step's error and the findings of the checks that failed in it."""
    failures = blamed_steps(instance, run, runs)
    by_dataset: dict[str, list[str]] = {}
    for step_key, error in failures:
        stage, dataset = runs.dataset_of(step_key) or ("", "all")
        label = STAGE_LABELS[stage] if stage else ("run" if step_key == "run" else f"step {step_key}")
        by_dataset.setdefault(dataset, []).append(f"{label} failed: {error}")
    findings = failed_checks(instance, run, runs)
    for dataset, checks in findings.items():
        by_dataset.setdefault(dataset, []).extend(check["text"] for check in checks)
    run_url = f"{dagster_url.rstrip('/')}/runs/{run.run_id}"
    return [
        Alert(
            kind="failure",
            dataset=dataset,
            title=f"{dataset}: {run.job_name} failed",
            message="; ".join(messages),
            partition=run.tags.get("dagster/partition"),
            run_url=run_url,
            details={
                "run_id": run.run_id,
                "job": run.job_name,
                "failed_checks": [{k: v for k, v in c.items() if k != "text"} for c in findings.get(dataset, [])],
            },
        )
        for dataset, messages in by_dataset.items()
    ]


def failed_checks(
    instance: dg.DagsterInstance, run: dg.DagsterRun, runs: CodeLocationRuns
) -> dict[str, list[dict[str, Any]]]:
    """Return the checks that failed in `run` by dataset: name, severity, description, metadata and a one-line
    text of all of them (what the alert says)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation: Any = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if evaluation is None or evaluation.passed:
            continue
        _, dataset = runs.dataset_of("__".join(evaluation.asset_key.path)) or ("", "all")
        metadata = {key: _plain(value) for key, value in evaluation.metadata.items()}
        severity = evaluation.severity.value
        numbers = ", ".join(f"{key}={value}" for key, value in metadata.items())
        text = f"check {evaluation.check_name} failed ({severity})"
        text += f": {' '.join((evaluation.description or '').split())}" if evaluation.description else ""
        text += f" [{numbers[:600]}]" if numbers else ""
        found.setdefault(dataset, []).append(
            {
                "check": evaluation.check_name,
                "asset": evaluation.asset_key.to_user_string(),
                "severity": severity,
                "description": evaluation.description or "",
                "metadata": metadata,
                "text": text,
            }
        )
    return found


def _plain(value: Any) -> Any:
    """A metadata value as JSON-able data."""
    raw = getattr(value, "value", value)
    return raw if isinstance(raw, str | int | float | bool | type(None)) else str(raw)


def run_failure_message(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """Return the message of the run's failure event ("run failed" when it has none)."""
    events = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    return (events[-1].dagster_event.message if events and events[-1].dagster_event else None) or "run failed"


def unfinished_steps(instance: dg.DagsterInstance, run: dg.DagsterRun, runs: CodeLocationRuns) -> list[str]:
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
    steps = list(started) or [key for key in planned_steps(instance, run) if key not in ended]
    return [key for key in steps if runs.dataset_of(key)]


def error_text(event: Any) -> str:
    """Return the user's error of a failed step (the cause Dagster wraps), as one line."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None:
        return event.message or "step failed"
    if error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    text = " ".join(error.message.split())
    return text.split(".", 2)[-1] if text.startswith("backup_pipelines.errors.") else text


def deliver_run_alerts(
    instance: dg.DagsterInstance, run: dg.DagsterRun, alerts: Sequence[Alert], sender: Notifier
) -> tuple[int, int]:
    """Send `alerts` of the failed `run` to the channels that do not have them yet; record on the run which
    channels have each and whether any is still owed (tags). Return (alerts delivered, alerts pending)."""
    have: dict[str, list[str]] = json.loads(run.tags.get(DELIVERED_TAG) or "{}")
    delivered = pending = 0
    for alert in alerts:
        done = have.get(alert.dataset, [])
        delivery = sender.send(alert, skip=done)
        have[alert.dataset] = sorted({*done, *delivery.delivered})
        delivered, pending = (delivered + 1, pending) if delivery.complete else (delivered, pending + 1)
    state = "pending" if pending else "delivered"
    instance.add_run_tags(run.run_id, {ALERT_TAG: state, DELIVERED_TAG: json.dumps(have, sort_keys=True)})
    return delivered, pending


def index_failed_steps(instance: dg.DagsterInstance, run: dg.DagsterRun, runs: CodeLocationRuns) -> int:
    """Index the failed `run` as the newest attempt of the chain steps it is blamed on (`blamed_steps`,
    assets/stage_index.py): its failed steps, else the first step of each dataset it did not finish (a step
    whose pod never started, a worker killed before the step began), unless a newer run started or completed
    that step since `run` was created. The steps index their own start; this covers failures before it. Return
    how many were indexed."""
    record = instance.get_run_record_by_id(run.run_id)
    if record is None:
        return 0
    chosen: dict[str, str] = {}
    for step_key, _ in blamed_steps(instance, run, runs):
        stage, name = runs.dataset_of(step_key) or ("", "")
        if stage in INDEXED:
            chosen.setdefault(name, stage)
    for name, stage in chosen.items():
        record_attempt(instance, dg.AssetKey([name, stage]), run.run_id, record.create_timestamp.timestamp())
    return len(chosen)


def alert_failed_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, runs: CodeLocationRuns, sender: Notifier, dagster_url: str
) -> tuple[int, int]:
    """Alert the failed `run` unless it is not this code location's or was alerted already; return
    (alerts delivered, alerts pending)."""
    run = instance.get_run_by_id(run.run_id) or run  # its alert tags as stored now
    if run.tags.get(ALERT_TAG) == "delivered" or not runs.owns(instance, run):
        return 0, 0
    return deliver_run_alerts(instance, run, run_failure_alerts(instance, run, runs, dagster_url), sender)


def retry_pending(
    instance: dg.DagsterInstance, runs: CodeLocationRuns, sender: Notifier, dagster_url: str
) -> tuple[int, int]:
    """Send again the failure alerts some channel refused (runs tagged pending, the oldest first, at most
    PENDING_RETRIES_PER_TICK); return (alerts delivered, alerts still pending)."""
    records = instance.get_runs(
        filters=dg.RunsFilter(tags={ALERT_TAG: "pending"}, statuses=[dg.DagsterRunStatus.FAILURE]),
        limit=PENDING_RETRIES_PER_TICK,
    )
    delivered = pending = 0
    for run in reversed(list(records)):
        sent, owed = alert_failed_run(instance, run, runs, sender, dagster_url)
        delivered, pending = delivered + sent, pending + owed
    return delivered, pending


def build_failure_sensor(runs: CodeLocationRuns) -> dg.SensorDefinition:
    """The one run-failure sensor: every failed run of this code location, whatever launched it."""

    @dg.run_failure_sensor(
        name="backup_failure_alerts",
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts on every failed run of this code location (jobs, asset materializations, backfills, "
        "schedules, and runs started by `dagster job execute` / `dagster asset materialize`), with the findings "
        "of the checks that failed; undelivered alerts are retried by rpo_alerts.",
    )
    def backup_failure_alerts(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
        # Returning nothing lets Dagster go on to the next failed run in the same tick.
        run = context.dagster_run
        dagster_url = notifier.manifest.load().alerts.dagster_url
        delivered, pending = alert_failed_run(context.instance, run, runs, notifier.notifier(context.log), dagster_url)
        if runs.owns(context.instance, run):
            index_failed_steps(context.instance, run, runs)
        if delivered or pending:
            context.log.info(f"run {run.run_id} ({run.job_name}): {delivered} alerts delivered, {pending} pending")

    return backup_failure_alerts
