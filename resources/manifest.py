"""The manifest as a Dagster resource: runs read datasets, servers and repositories through it."""

from __future__ import annotations

import functools

import dagster as dg

from backup_pipelines.manifest import Manifest, load_manifest


@functools.lru_cache(maxsize=8)
def _load(path: str, modified: float) -> Manifest:
    return load_manifest(path)


class ManifestResource(dg.ConfigurableResource):
    """The backup manifest at `path`. Secrets it names are read from the environment at run time."""

    path: str

    def load(self) -> Manifest:
        """Return the validated manifest (re-read when the file changes)."""
        from pathlib import Path

        return _load(self.path, Path(self.path).stat().st_mtime)
