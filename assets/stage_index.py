"""The stage index: what each step of a dataset's chain last did, kept small in the instance's key-value store.

Each step (backup, copy, verify, restore test) records, per asset, two entries:
- `attempt`: the run that last started the step, written when the step starts;
- `done`: the newest run that completed it, when, for which partition, and the few metadata values the RPO
  sensor, the status page and the runbook read (INDEXED, by stage), written just before the step reports its
  materialization.

Readers take every dataset's entries in a few batched key-value queries instead of deserializing each asset's
newest materialization event: at 10,000 datasets those events are 220 MB (a backup's is 11.8 kB at 20 tables,
more with more tables), 7 s for the RPO sensor's newest backups and 10 s for the status page. An asset without a
`done` entry (history from before the index) is read from the event log as before, its newest run from the
asset's record.

The index follows the steps, not the event log: a materialization reported by hand or an asset wiped in Dagster
does not change it, and a step's `done` is written just before Dagster stores its materialization (a process
killed between the two leaves the step shown as completed; its backup is committed all the same). A step whose
run failed after the step started shows as failed until a later run completes it; a run that failed before the
step started (a pod that never ran, a worker killed first, a refused partition) is indexed as the step's attempt
by the failure sensor (assets/failure_alerts.py) when it sees the run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

INDEX_PREFIX = "backup_pipelines/index/"
# keys per key-value read: SQLite caps a statement's parameters (32,766 in 3.32 and later); even, so an asset's
# two entries stay in one read
KV_BATCH = 5000
# the metadata values indexed when a step completes, by stage (those present in its materialization)
BACKUP_VALUES = ("backup_id", "created_at", "bytes_stored", "bytes_raw", "copies", "three_two_one", "location")
INDEXED = {
    "backup": (*BACKUP_VALUES, "size_check", "size_check_finding", "quarantined"),
    "copy": ("backup_id", "copies", "three_two_one"),
    "verify": ("backup_id",),
    "restore_test": ("backup_id", "measured_rto_seconds"),
}
PLAIN = (str, int, float, bool)
STORAGE_ERRORS = (OSError, SQLAlchemyError, dg.DagsterError)  # what an instance's storage raises


@dataclass(frozen=True)
class StageRecord:
    """A completed step as readers see it: its run, when, its partition and its metadata values."""

    run_id: str | None
    at: float
    partition: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    """The run that last started a step, and when (None: the asset record's newest planned run, time unknown)."""

    run_id: str
    at: float | None


def failed_attempt(attempt: Attempt | None, done: StageRecord | None) -> str | None:
    """Return the run id of `attempt` if it is newer than the completion `done`: a run that started the step after
    it last completed (or the newest run that planned it when the time is unknown), else None."""
    if attempt is None or (done is not None and attempt.run_id == done.run_id):
        return None
    if done is not None and attempt.at is not None and attempt.at <= done.at:
        return None
    return attempt.run_id


def done_key(key: dg.AssetKey) -> str:
    return f"{INDEX_PREFIX}done/{key.to_user_string()}"


def attempt_key(key: dg.AssetKey) -> str:
    return f"{INDEX_PREFIX}attempt/{key.to_user_string()}"


def kv_values(instance: dg.DagsterInstance, keys: Iterable[str]) -> dict[str, str]:
    """Return the instance key-value entries of `keys` that exist and are not empty, in batched queries."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), KV_BATCH):
        batch = instance.run_storage.get_cursor_values(set(wanted[start : start + KV_BATCH]))
        found.update((key, value) for key, value in batch.items() if value)
    return found


def _taken_at(metadata: Mapping[str, Any]) -> float | None:
    created = metadata.get("created_at")
    return datetime.fromisoformat(created).timestamp() if isinstance(created, str) else None


def record_attempt(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str, at: float | None = None) -> None:
    """Index `run_id` as the run that last started the step of `key`, at `at` (now by default). With `at` given
    (a failed run found afterwards), only if neither the indexed attempt nor the completion is newer."""
    if at is not None:
        done, attempts, _ = read_index(instance, [key])
        times = [done[key].at] if key in done else []
        times += [attempts[key].at or 0.0] if key in attempts else []
        if times and max(times) >= at:
            return
    entry = {"run_id": run_id, "at": time.time() if at is None else at}
    instance.run_storage.set_cursor_values({attempt_key(key): json.dumps(entry)})


def record_done(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    run_id: str,
    partition: str | None,
    metadata: Mapping[str, Any],
    recent_sizes: list[tuple[float, int]] | None = None,
) -> None:
    """Index a completed step of `key` with the INDEXED values of its stage from its materialization `metadata`
    (metadata values or plain values). A backup never replaces one indexed with a later backup time (a late
    partition caught up is not the newest backup)."""
    wanted = INDEXED[key.path[-1]]
    values = {name: getattr(value, "value", value) for name, value in metadata.items() if name in wanted}
    if not all(isinstance(value, PLAIN) for value in values.values()):
        raise TypeError(f"{key.to_user_string()}: indexed values must be text or numbers: {sorted(values)}")
    if recent_sizes is not None:
        values["recent_sizes"] = [[at, size] for at, size in recent_sizes]
    entry = {"run_id": run_id, "at": time.time(), "partition": partition, "metadata": values}
    taken = _taken_at(values)
    if taken is not None:
        held = kv_values(instance, [done_key(key)]).get(done_key(key))
        kept = json.loads(held) if held else None
        held_taken = _taken_at(kept["metadata"]) if kept else None
        if kept is not None and held_taken is not None and held_taken > taken:
            # this run completed the step (so it is not a failed attempt), the backup taken later stays the newest
            entry = {**kept, "run_id": run_id, "at": entry["at"]}
    instance.run_storage.set_cursor_values({done_key(key): json.dumps(entry)})


def read_index(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey], extra: Iterable[str] = ()
) -> tuple[dict[dg.AssetKey, StageRecord], dict[dg.AssetKey, Attempt], dict[str, str]]:
    """Return, in batched key-value queries, the `done` records and `attempt` runs indexed for `keys`, and the
    values of the `extra` key-value keys read along. An asset's two entries are read in the same query, so a
    step completing between two queries cannot be seen as attempted and not completed."""
    pairs = [entry_key for key in keys for entry_key in (done_key(key), attempt_key(key))]
    values = kv_values(instance, [*pairs, *extra])
    done = {}
    for key in keys:
        if raw := values.get(done_key(key)):
            entry = json.loads(raw)
            done[key] = StageRecord(entry["run_id"], float(entry["at"]), entry["partition"], entry["metadata"])
    attempts = {}
    for key in keys:
        if raw := values.get(attempt_key(key)):
            entry = json.loads(raw)
            attempts[key] = Attempt(entry["run_id"], float(entry["at"]))
    return done, attempts, values


def record_from_event(event: Any) -> StageRecord | None:
    """Return a materialization event log entry as a StageRecord (None for another event or none)."""
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    return StageRecord(event.run_id or None, event.timestamp, materialization.partition, metadata)


def stage_states(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey], extra: Iterable[str] = ()
) -> tuple[dict[dg.AssetKey, StageRecord], dict[dg.AssetKey, Attempt], dict[str, str]]:
    """`read_index`, completed from the event log for the keys the index has no `done` record of: their newest
    materialization and the newest run that planned them (one batched read of their asset records)."""
    done, attempts, values = read_index(instance, keys, extra)
    missing = [key for key in keys if key not in done]
    for record in instance.get_asset_records(missing) if missing else []:
        entry = record.asset_entry
        found = record_from_event(entry.last_materialization)
        if found is not None:
            done[entry.asset_key] = found
        if entry.last_run_id:
            attempts.setdefault(entry.asset_key, Attempt(entry.last_run_id, None))
    return done, attempts, values


def index_step(context: dg.AssetExecutionContext, key: dg.AssetKey, **done: Any) -> None:
    """In a step of `key`: index its start (no `done` arguments) or its completion (`record_done`'s). The step's
    work stands when the instance's storage refuses the write: it is logged at WARNING and, for a completion,
    the asset's `done` entry is emptied so the readers take the event log instead of an entry now out of date.
    Any other error (a value that cannot be indexed) fails the step: it is a fault of this code."""
    try:
        if done:
            record_done(context.instance, key, context.run.run_id, **done)
        else:
            record_attempt(context.instance, key, context.run.run_id)
    except STORAGE_ERRORS as error:
        what = "its completion" if done else "its start"
        context.log.warning(f"{key.to_user_string()}: {what} could not be indexed for the status views: {error}")
        if done:
            with contextlib.suppress(*STORAGE_ERRORS):
                context.instance.run_storage.set_cursor_values({done_key(key): ""})
