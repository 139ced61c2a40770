"""The one assembly point of the Dagster code location: assets, checks, jobs, schedules and resources.

Loading reads the manifest ($BACKUP_MANIFEST or ./backup_manifest.yaml) and nothing else: no database,
no network, no tool is touched until a run starts.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.datasets import build_dataset_assets
from assets.jobs import build_jobs
from backup_pipelines.manifest import load_manifest
from resources import AgeIdentityResource, ManifestResource


def build_definitions(manifest_path: str | Path | None = None) -> dg.Definitions:
    """Return the Definitions for the manifest at `manifest_path` (default: the configured manifest)."""
    manifest = load_manifest(manifest_path)
    assets = [asset for name in manifest.active_datasets() for asset in build_dataset_assets(manifest, name)]
    jobs, schedules = build_jobs(manifest)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        resources={
            "manifest": ManifestResource(path=str(manifest.path)),
            "age_identity": AgeIdentityResource(),
        },
    )


defs = build_definitions()
