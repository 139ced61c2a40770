"""`backup_pipelines.BackupPipelines`: the whole product as a Dagster component, for a team that already has a
Dagster project (the `dg` layout) and wants backups in it without adopting this repository's layout.

    # <project>/src/<package>/defs/backups/defs.yaml
    type: backup_pipelines.BackupPipelines
    attributes:
      manifest: backup_manifest.yaml      # relative to this defs.yaml's folder

It produces exactly what this repository's code location does (the assets, checks, jobs, schedules, sensors
and resources of every dataset in the manifest), but leaves the executor to the project. The resource keys
`manifest`, `age_identity`, `notifier` and `retention` are this component's.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg


class BackupPipelines(dg.Component, dg.Model, dg.Resolvable):
    """Back up, copy, verify and restore-test every dataset of a backup-pipelines manifest."""

    manifest: str = "backup_manifest.yaml"

    def manifest_path(self, context: dg.ComponentLoadContext) -> Path:
        path = Path(os.path.expanduser(self.manifest))
        return path if path.is_absolute() else (context.path / path).resolve()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from backup_pipelines.assemble import build_definitions

        return build_definitions(self.manifest_path(context), own_executor=False)
