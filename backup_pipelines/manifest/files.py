"""File-tree datasets, kept by restic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import StrictModel


class FilesSource(StrictModel):
    """Directory trees (configuration, certificates, uploads, infrastructure code) backed up with restic."""

    paths: list[str] = Field(min_length=1, description="Folders or files; relative to the manifest's folder.")
    exclude: list[str] = Field(default_factory=list, description="restic --exclude patterns.")
    sample_files: int = Field(200, ge=0, description="How many files restore tests compare by hash (0: all of them).")


class FilesDataset(DatasetBase):
    """A file tree backed up with restic: one partition is one snapshot, tagged with dataset and partition."""

    kind: Literal["files"] = Field(description="Dataset kind.")
    source: FilesSource = Field(description="What to back up.")

    def source_summary(self) -> str:
        return "files " + ", ".join(self.source.paths)

    @model_validator(mode="after")
    def _no_queries(self) -> FilesDataset:
        if self.verification.queries:
            raise ValueError("verification.queries need a database kind; file trees are compared by count, size, hash")
        return self
