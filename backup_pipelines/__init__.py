"""backup-pipelines: backups that are restored for real, as a Dagster code location.

The core modules import no Dagster; `backup_pipelines.BackupPipelines` (the Dagster component, see
`component.py`) is loaded only when asked for.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "BackupPipelines":
        from backup_pipelines.component import BackupPipelines

        return BackupPipelines
    raise AttributeError(f"module 'backup_pipelines' has no attribute {name!r}")
