"""Command datasets: whatever a command writes to stdout."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import StrictInt, StrictModel


class CommandSource(StrictModel):
    """Any tool that writes the dataset to stdout (a secrets-store snapshot, a DNS zone, dashboards)."""

    command: list[str] = Field(min_length=1, description="argv of the command that writes the dataset to stdout.")
    validate_command: list[str] | None = Field(
        None, description="argv of a command that reads a restored copy on stdin and exits 0 if it is usable."
    )
    extension: str = Field("bin", pattern=r"^[a-z0-9]+$", description="File extension of the raw dump.")
    working_directory: str | None = Field(None, description="Folder to run in; relative to the manifest's folder.")
    timeout_seconds: StrictInt | None = Field(
        None, ge=1, le=7 * 86400, description="Kill the command after this long (at most a week)."
    )


class CommandDataset(DatasetBase):
    """Whatever a command writes to stdout, streamed, encrypted and stored like a dump."""

    kind: Literal["command"] = Field(description="Dataset kind.")
    source: CommandSource = Field(description="The command to run.")

    def source_summary(self) -> str:
        return "command " + " ".join(self.source.command)

    @model_validator(mode="after")
    def _no_queries(self) -> CommandDataset:
        if self.verification.queries:
            raise ValueError(
                "verification.queries need a database kind; a command dataset uses source.validate_command"
            )
        return self
