"""Physical MariaDB backups: the whole server's files copied by mariabackup while it runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import Name, StrictInt, StrictModel


class MariadbPhysicalSource(StrictModel):
    """A MariaDB server on this machine, copied file by file with `mariabackup --backup --stream=mbstream`."""

    server: Name = Field(description="Name of an entry under `servers` (kind mysql): the login mariabackup uses.")
    data_directory: str = Field(min_length=1, description="The server's datadir (mariabackup reads its files).")
    os_user: str = Field("mysql", min_length=1, description="The system user a restored copy's server runs as.")
    databases: list[str] = Field(
        default_factory=list,
        description="Databases whose tables are counted and checked in restore tests; default: every one except "
        "the system schemas.",
    )
    parallel: StrictInt = Field(1, ge=1, le=64, description="mariabackup --parallel: files copied at once.")


class MariadbPhysicalDataset(DatasetBase):
    """A whole MariaDB server backed up physically with mariabackup: streamed (mbstream) through zstd and age
    into object repositories like a dump. Restore tests extract it, run `mariabackup --prepare`, start a
    temporary server on the copy, and compare its tables and row counts with the source's (counted in a
    consistent snapshot before and after the copy; a table written meanwhile must land between the two),
    run CHECK TABLE on every table, and the dataset's validation queries (which cannot be same_as_source)."""

    kind: Literal["mariadb_physical"] = Field(description="Dataset kind.")
    source: MariadbPhysicalSource = Field(description="The server to protect.")

    @property
    def server_name(self) -> str | None:
        return self.source.server

    def source_summary(self) -> str:
        return f"mariadb server {self.source.server} ({self.source.data_directory}), physical (mariabackup)"
