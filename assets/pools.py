"""Who waits on a `db-<server>` pool, since when, and who holds its slots.

Dagster logs "Step blocked by limit for pool" at DEBUG only, once, from the run's own process, and offers no
hook on it. The waits are in the instance's concurrency tables, though: a step that asked for a slot and has
none is a pending step without an assigned time, and a queued run whose pools are full waits in the run queue.
Both are read here; the holders are the claimed slots with their run ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.dagster_run import RunsFilter

from assets import keys as keys_module
from assets.run_doctor import held_slots

STAGES = {"backup": "backup", "copy": "copy", "verify": "verify", "restore_test": "restore test"}


def dataset_of_step(step_key: str) -> tuple[str, str] | None:
    """Return (stage, dataset) of a dataset's step key (`orders_db__backup` -> backup, orders_db), else None."""
    return keys_module.dataset_of_step(step_key)


@dataclass(frozen=True)
class PoolWait:
    """A step (or a queued run: `step_key` None) waiting for a slot of `pool` since `since`."""

    pool: str
    run_id: str
    step_key: str | None
    since: float
    holders: list[tuple[str, str, str]]  # (run id, step key, run status)

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.step_key or '*'}:{self.pool}"

    def datasets(self, run: dg.DagsterRun | None) -> list[str]:
        """The datasets this wait delays: the step's, else those of the run's selected assets."""
        if self.step_key:
            found = dataset_of_step(self.step_key)
            return [found[1]] if found else []
        stages = [keys_module.dataset_stage(key) for key in (run.asset_selection or set())] if run else []
        return sorted({stage[0] for stage in stages if stage and stage[1] in STAGES})

    def describe(self, now: float) -> str:
        waiter = f"step {self.step_key} of run {self.run_id}" if self.step_key else f"queued run {self.run_id}"
        holders = ", ".join(f"run {run_id} (step {step}, {status})" for run_id, step, status in self.holders)
        return (
            f"{waiter} has waited {_duration(now - self.since)} for a slot of pool {self.pool}; "
            f"held by {holders or 'no run (the limit is 0?)'}"
        )


def pool_waits(instance: dg.DagsterInstance) -> list[PoolWait]:
    """Return every step of an in-progress run waiting for a pool slot, and every queued run whose pools are
    all taken, each with the runs holding that pool's slots."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys()))
    holder_ids = {run_id for run_id in held_slots(instance)}
    waiting_ids = {step.run_id for info in infos.values() for step in info.pending_steps if not step.assigned_timestamp}
    queued = instance.get_run_records(RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    run_ids = [*holder_ids, *waiting_ids]
    runs = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=run_ids))} if run_ids else {}
    waits = []
    for pool, info in infos.items():
        holders = [(c.run_id, c.step_key, _status(runs.get(c.run_id))) for c in info.claimed_slots]
        for step in info.pending_steps:
            record = runs.get(step.run_id)
            if step.assigned_timestamp is None and record and not record.dagster_run.is_finished:
                waits.append(PoolWait(pool, step.run_id, step.step_key, step.enqueued_timestamp.timestamp(), holders))
        if info.limit is not None and len(info.claimed_slots) >= info.limit:
            for record in queued:
                concurrency = record.dagster_run.run_op_concurrency
                pools = (concurrency.all_pools or set(concurrency.root_key_counts)) if concurrency else set()
                if pool in pools:
                    since = record.create_timestamp.timestamp()
                    waits.append(PoolWait(pool, record.dagster_run.run_id, None, since, holders))
    return waits


def _status(record: dg.RunRecord | None) -> str:
    return record.dagster_run.status.value if record else "no such run"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
