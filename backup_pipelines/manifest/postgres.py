"""PostgreSQL datasets: one database of a named server, dumped with pg_dump."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import Name, StrictModel


class PostgresSource(StrictModel):
    """One PostgreSQL database on a named server."""

    server: Name = Field(description="Name of an entry under `servers`.")
    database: str = Field(min_length=1, description="Database to dump.")
    schemas: list[str] = Field(default_factory=list, description="Only these schemas (pg_dump --schema).")
    exclude_schemas: list[str] = Field(default_factory=list, description="pg_dump --exclude-schema.")
    exclude_tables: list[str] = Field(default_factory=list, description="pg_dump --exclude-table.")
    large_objects: bool | None = Field(
        None, description="Include large objects; default: yes unless `schemas` limits the dump (as pg_dump does)."
    )
    globals: bool = Field(
        True,
        description="Keep what the database needs from its cluster beside the dump (the roles it references, its "
        "CREATE DATABASE, comment, settings and grants), so it restores onto an empty server.",
    )
    role_passwords: bool = Field(
        False, description="Keep the roles' password hashes too (reading them needs a superuser login)."
    )

    @property
    def includes_large_objects(self) -> bool:
        return self.large_objects if self.large_objects is not None else not self.schemas


class PostgresDataset(DatasetBase):
    """A PostgreSQL database dumped with pg_dump's custom format."""

    kind: Literal["postgres"] = Field(description="Dataset kind.")
    source: PostgresSource = Field(description="The database to protect.")

    @property
    def server_name(self) -> str | None:
        return self.source.server

    def source_summary(self) -> str:
        return f"postgres server {self.source.server}, database {self.source.database}"
