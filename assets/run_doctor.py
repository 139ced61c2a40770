"""Runs whose processes are gone, and pool slots nobody will give back.

Dagster's own monitoring (the daemon's `run_monitoring`) asks the run launcher whether a run's worker is alive;
a run started by `dagster job execute` or `dagster asset materialize` was not launched by it, so if its process
is killed the run stays STARTED and keeps the `db-<server>` slots its steps claimed: the daemon frees the
slots of *ended* runs only (`free_slots_after_run_end_seconds`). Every event Dagster records carries the pid
of the process that wrote it, so the processes of a run are known: the one that started it (RUN_START) and
the worker of each step that started and has not ended. A run none of whose processes still runs is dead.

Pids only mean something on the host that ran them: `acts_here` says whether this instance's runs are on this
host (a SQLite or in-memory instance: its files are local, and every run using it runs here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import FINISHED_STATUSES, RunsFilter
from dagster._core.storage.runs.in_memory import InMemoryRunStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from backup_pipelines.processes import process_is_running

IN_PROGRESS = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
STEP_ENDS = {
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED,
    DagsterEventType.STEP_UP_FOR_RETRY,
}
STEP_STARTS = {DagsterEventType.STEP_WORKER_STARTED, DagsterEventType.STEP_START}
FAILED_MESSAGE = (
    "backup-pipelines doctor: every process of this run is gone ({processes}) but the run was still {status}; "
    "marked failed and its pool slots freed."
)


@dataclass(frozen=True)
class RunProcess:
    """A process that works for a run: `role` is "run" (the one that started it) or a step key."""

    pid: int
    role: str
    seen_at: float  # the time of its first event: it was running then

    def describe(self) -> str:
        return f"pid {self.pid} ({'the run' if self.role == 'run' else 'step ' + self.role})"


@dataclass
class RunDiagnosis:
    """An in-progress run, its processes, which of them still run and the pool slots it holds."""

    run_id: str
    job_name: str
    status: str
    processes: list[RunProcess]
    running: list[RunProcess]
    slots: list[tuple[str, str]] = field(default_factory=list)  # (pool, step key)

    @property
    def dead(self) -> bool:
        """True when processes were recorded and none of them runs any more."""
        return bool(self.processes) and not self.running

    def describe(self) -> str:
        held = f"; holds {len(self.slots)} slot(s) of {', '.join(sorted({p for p, _ in self.slots}))}"
        held = held if self.slots else ""
        if not self.processes:
            return f"run {self.run_id} ({self.job_name}, {self.status}): no process recorded yet{held}"
        if self.dead:
            gone = ", ".join(process.describe() for process in self.processes)
            return f"run {self.run_id} ({self.job_name}, {self.status}): DEAD, gone: {gone}{held}"
        alive = ", ".join(process.describe() for process in self.running)
        return f"run {self.run_id} ({self.job_name}, {self.status}): running: {alive}{held}"


@dataclass(frozen=True)
class EndedRunSlots:
    """Pool slots still held by a run that has ended (or no longer exists)."""

    run_id: str
    status: str
    slots: list[tuple[str, str]]
    running: list[RunProcess] = field(default_factory=list)  # an orphaned step still at work: leave it

    def describe(self) -> str:
        pools = ", ".join(f"{pool} (step {step})" for pool, step in self.slots)
        text = f"run {self.run_id} ({self.status}) ended but holds {len(self.slots)} slot(s): {pools}"
        if self.running:
            text += f"; still running: {', '.join(process.describe() for process in self.running)}"
        return text


@dataclass
class DoctorReport:
    """What `examine` found and, unless a dry run, did."""

    runs: list[RunDiagnosis]
    ended: list[EndedRunSlots]
    failed: list[str] = field(default_factory=list)  # run ids marked failed
    freed: list[str] = field(default_factory=list)  # run ids whose slots were freed

    @property
    def dead(self) -> list[RunDiagnosis]:
        return [run for run in self.runs if run.dead]


def acts_here(instance: dg.DagsterInstance) -> bool:
    """True when every run of `instance` runs on this host, so its recorded pids can be checked here."""
    return isinstance(instance.run_storage, (SqliteRunStorage, InMemoryRunStorage))


def run_processes(instance: dg.DagsterInstance, run_id: str) -> list[RunProcess]:
    """Return the processes that work for run `run_id`: the one that started it and each started step's
    worker whose step has not ended, from the pids of the run's events."""
    orchestrator: RunProcess | None = None
    steps: dict[str, RunProcess] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.pid is None:
            continue
        if event.event_type == DagsterEventType.RUN_START and orchestrator is None:
            orchestrator = RunProcess(event.pid, "run", entry.timestamp)
        elif event.event_type in STEP_STARTS and event.step_key and event.step_key not in steps:
            steps[event.step_key] = RunProcess(event.pid, event.step_key, entry.timestamp)
        elif event.event_type in STEP_ENDS and event.step_key:
            steps.pop(event.step_key, None)
    return ([orchestrator] if orchestrator else []) + list(steps.values())


def held_slots(instance: dg.DagsterInstance) -> dict[str, list[tuple[str, str]]]:
    """Return the claimed pool slots by run id: [(pool, step key)]."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    held: dict[str, list[tuple[str, str]]] = {}
    for pool, info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items():
        for claim in info.claimed_slots:
            held.setdefault(claim.run_id, []).append((pool, claim.step_key))
    return held


def diagnose(instance: dg.DagsterInstance) -> DoctorReport:
    """Return every in-progress run with its processes (checked on this host), and the slots held by runs that
    have ended or no longer exist. Changes nothing."""
    held = held_slots(instance)
    runs = []
    for record in instance.get_run_records(RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        processes = run_processes(instance, run.run_id)
        running = [process for process in processes if process_is_running(process.pid, process.seen_at)]
        runs.append(
            RunDiagnosis(run.run_id, run.job_name, run.status.value, processes, running, held.get(run.run_id, []))
        )
    ended = []
    others = [run_id for run_id in held if run_id not in {run.run_id for run in runs}]
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=others))} if others else {}
    for run_id in others:
        found = records.get(run_id)
        if found is None or found.dagster_run.status in FINISHED_STATUSES:
            status = found.dagster_run.status.value if found else "no such run"
            running = [p for p in run_processes(instance, run_id) if process_is_running(p.pid, p.seen_at)]
            ended.append(EndedRunSlots(run_id, status, held[run_id], running))
    return DoctorReport(runs, ended)


def repair(instance: dg.DagsterInstance, report: DoctorReport) -> DoctorReport:
    """Mark each dead run of `report` failed (if it is still in progress once its processes are known to be
    gone) and free its pool slots; free the slots of the ended runs none of whose processes still runs (a step
    orphaned by a killed parent keeps its slot until it ends). Return `report` with what was done."""
    for diagnosis in report.dead:
        run = instance.get_run_by_id(diagnosis.run_id)
        if run is not None and run.status in IN_PROGRESS:
            processes = ", ".join(process.describe() for process in diagnosis.processes)
            instance.report_run_failed(run, FAILED_MESSAGE.format(processes=processes, status=run.status.value))
            report.failed.append(diagnosis.run_id)
        instance.event_log_storage.free_concurrency_slots_for_run(diagnosis.run_id)
        report.freed.append(diagnosis.run_id)
    for ended in report.ended:
        if ended.running:
            continue
        instance.event_log_storage.free_concurrency_slots_for_run(ended.run_id)
        report.freed.append(ended.run_id)
    return report
