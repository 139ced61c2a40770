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
does not change it. A step whose run failed after it started shows as failed until a later run completes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dagster as dg

INDEX_PREFIX = "backup_pipelines/index/"
KV_BATCH = 5000  # keys per key-value read: SQLite caps a statement's parameters (32,766 in 3.32 and later)
# the metadata values indexed when a step completes, by stage (those present in its materialization)
BACKUP_VALUES = ("backup_id", "created_at", "bytes_stored", "bytes_raw", "copies", "three_two_one", "location")
INDEXED = {
    "backup": (*BACKUP_VALUES, "size_check", "size_check_finding", "quarantined"),
    "copy": ("backup_id", "copies", "three_two_one"),
    "verify": ("backup_id",),
    "restore_test": ("backup_id", "measured_rto_seconds"),
}
PLAIN = (str, int, float, bool)


@dataclass(frozen=True)
class StageRecord:
    """A completed step as readers see it: its run, when, its partition and its metadata values."""

    run_id: str | None
    at: float
    partition: str | None
    metadata: dict[str, Any]


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


def record_attempt(instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> None:
    """Index `run_id` as the run that last started the step of `key`."""
    instance.run_storage.set_cursor_values({attempt_key(key): run_id})


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
    taken = _taken_at(values)
    if taken is not None:
        held = kv_values(instance, [done_key(key)]).get(done_key(key))
        held_taken = _taken_at(json.loads(held)["metadata"]) if held else None
        if held_taken is not None and held_taken > taken:
            return
    entry = {"run_id": run_id, "at": time.time(), "partition": partition}
    instance.run_storage.set_cursor_values({done_key(key): json.dumps({**entry, "metadata": values})})


def read_index(
    instance: dg.DagsterInstance, keys: list[dg.AssetKey], extra: Iterable[str] = ()
) -> tuple[dict[dg.AssetKey, StageRecord], dict[dg.AssetKey, str], dict[str, str]]:
    """Return, in batched key-value queries, the `done` records and `attempt` runs indexed for `keys`, and the
    values of the `extra` key-value keys read along."""
    values = kv_values(instance, [*(done_key(key) for key in keys), *(attempt_key(key) for key in keys), *extra])
    done = {}
    for key in keys:
        if raw := values.get(done_key(key)):
            entry = json.loads(raw)
            done[key] = StageRecord(entry["run_id"], float(entry["at"]), entry["partition"], entry["metadata"])
    attempts = {key: values[attempt_key(key)] for key in keys if attempt_key(key) in values}
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
) -> tuple[dict[dg.AssetKey, StageRecord], dict[dg.AssetKey, str], dict[str, str]]:
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
            attempts.setdefault(entry.asset_key, entry.last_run_id)
    return done, attempts, values


def index_step(context: dg.AssetExecutionContext, key: dg.AssetKey, **done: Any) -> None:
    """In a step of `key`: index its start (no `done` arguments) or its completion (`record_done`'s). The step's
    work stands whatever happens here: a refused write is logged at WARNING, and the readers go on with the entry
    indexed before (a newest backup that looks older, never newer)."""
    try:
        if done:
            record_done(context.instance, key, context.run.run_id, **done)
        else:
            record_attempt(context.instance, key, context.run.run_id)
    except Exception as error:  # the instance's storage, whatever it is (SQLite, PostgreSQL, another)
        what = "its completion" if done else "its start"
        context.log.warning(f"{key.to_user_string()}: {what} could not be indexed for the status views: {error}")
