"""MySQL and MariaDB datasets: one database of a named server, dumped with mysqldump."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import Name, StrictModel


class MysqlSource(StrictModel):
    """One MySQL/MariaDB database (InnoDB tables: the dump is a consistent snapshot)."""

    server: Name = Field(description="Name of an entry under `servers`.")
    database: str = Field(min_length=1, description="Database to dump.")
    exclude_tables: list[str] = Field(default_factory=list, description="Tables left out (mysqldump --ignore-table).")
    preserve_supplementary_enum_members: bool = Field(
        False,
        description="MariaDB writes ENUM/SET members holding characters outside the Basic Multilingual Plane "
        "(emoji, ...) as '?' in SHOW CREATE TABLE and so in the dump, and their rows would not restore: such a "
        "backup fails, naming table and column. When true, the real members are read through a temporary table "
        "on the source (the account needs CREATE TEMPORARY TABLES) and those column definitions are rewritten "
        "in the stored dump.",
    )


class MysqlDataset(DatasetBase):
    """A MySQL or MariaDB database dumped with mysqldump --single-transaction."""

    kind: Literal["mysql"] = Field(description="Dataset kind.")
    source: MysqlSource = Field(description="The database to protect.")

    @property
    def server_name(self) -> str | None:
        return self.source.server

    def source_summary(self) -> str:
        return f"mysql server {self.source.server}, database {self.source.database}"
