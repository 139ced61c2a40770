"""SQLite datasets: one database file, copied online."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import StrictModel


class SqliteSource(StrictModel):
    """One SQLite database file."""

    path: str = Field(min_length=1, description="The database file; relative to the manifest's folder.")


class SqliteDataset(DatasetBase):
    """A SQLite database, copied online with SQLite's backup API (consistent while the application writes)."""

    kind: Literal["sqlite"] = Field(description="Dataset kind.")
    source: SqliteSource = Field(description="The database file to protect.")

    def source_summary(self) -> str:
        return f"sqlite file {self.source.path}"
