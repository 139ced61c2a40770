"""The `pitr_markers` sensor: stamps a marker row into every postgres_cluster dataset's cluster every
`source.marker_every`, so each restore test to a random moment can prove which rows are on which side of it
(see `backup_pipelines.engines.pitr_server`). It only writes one small row per cluster and launches no run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg

from backup_pipelines.errors import BackupError
from backup_pipelines.manifest import Manifest, PostgresClusterDataset
from resources import ManifestResource


def clusters(manifest: Manifest) -> dict[str, PostgresClusterDataset]:
    return {name: ds for name, ds in manifest.active_datasets().items() if isinstance(ds, PostgresClusterDataset)}


def stamp_due_markers(manifest: Manifest, last: dict[str, float], now: float) -> tuple[list[str], list[str]]:
    """Stamp a marker into each cluster whose last one (by `last`, updated in place) is `marker_every` old;
    return the datasets stamped and the failures (dataset: reason)."""
    from backup_pipelines.engines.pitr_server import write_marker
    from backup_pipelines.engines.postgres import _password
    from backup_pipelines.repository.pgbackrest_config import cluster_server

    stamped, failed = [], []
    for name, dataset in clusters(manifest).items():
        if now - last.get(name, 0.0) < dataset.source.marker_every.total_seconds():
            continue
        server = cluster_server(manifest, dataset)
        try:
            write_marker(server, dataset.source.marker_database, _password(dataset.source.server, server))
        except BackupError as error:
            failed.append(f"{name}: {error}")
            continue
        last[name] = now
        stamped.append(name)
    return stamped, failed


def build_marker_sensor(manifest: Manifest) -> dg.SensorDefinition:
    """The sensor, ticking as often as the most frequent cluster's marker interval (at least every 30 s)."""
    interval = min(int(ds.source.marker_every.total_seconds()) for ds in clusters(manifest).values())

    @dg.sensor(
        name="pitr_markers",
        minimum_interval_seconds=max(30, interval),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Stamps a marker row into each archived PostgreSQL cluster every source.marker_every, so a "
        "restore to any moment can be checked row by row.",
    )
    def pitr_markers(context: dg.SensorEvaluationContext, manifest: ManifestResource) -> Any:
        last = json.loads(context.cursor) if context.cursor else {}
        stamped, failed = stamp_due_markers(manifest.load(), last, time.time())
        context.update_cursor(json.dumps(last))
        for failure in failed:
            context.log.warning(f"could not stamp a PITR marker into {failure}")
        return dg.SkipReason(f"markers stamped: {', '.join(stamped) or 'none due'}; failed: {len(failed)}")

    return pitr_markers
