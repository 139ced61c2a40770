"""File-tree datasets, kept by restic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from backup_pipelines.file_names import invalid_pattern
from backup_pipelines.manifest.policies import DatasetBase
from backup_pipelines.manifest.types import StrictInt, StrictModel


class FilesSource(StrictModel):
    """Directory trees (configuration, certificates, uploads, infrastructure code) backed up with restic."""

    paths: list[str] = Field(min_length=1, description="Folders or files; relative to the manifest's folder.")
    exclude: list[str] = Field(
        default_factory=list,
        description="restic --exclude patterns (restic 0.14 rules: `*`, `?`, `[...]` within one path component, "
        "`**` across components, `\\` escapes a glob character, a leading `!` includes again).",
    )
    sample_files: StrictInt = Field(
        200,
        ge=0,
        le=10_000_000,
        description="Files in the snapshot's sample digest (tag bp-sample; 0: all of them): the only content a "
        "restore test compares when verification.fingerprint is false, and what it compares for backups made "
        "before walks were recorded. These files are hashed at backup as well as the budgeted ones.",
    )
    hash_budget_bytes: StrictInt | None = Field(
        1_000_000_000,
        ge=0,
        le=1 << 50,
        description="With verification.fingerprint, the sha256 of every regular file is compared while their "
        "bytes (hard links counted once) stay within this budget per restore test; above it a deterministic "
        "sample of files up to the budget is hashed (chosen by the sha1 of their path) and every other file is "
        "compared by metadata only. Unchanged files are not read again at backup. null: no limit.",
    )


class FilesDataset(DatasetBase):
    """A file tree backed up with restic: one partition is one snapshot, tagged with dataset and partition."""

    kind: Literal["files"] = Field(description="Dataset kind.")
    source: FilesSource = Field(description="What to back up.")

    @model_validator(mode="after")
    def _valid_patterns(self) -> FilesDataset:
        bad = [pattern for pattern in self.source.exclude if invalid_pattern(pattern)]
        if bad:
            raise ValueError(f"source.exclude: restic refuses the malformed pattern(s) {bad}")
        return self

    def source_summary(self) -> str:
        return "files " + ", ".join(self.source.paths)

    @model_validator(mode="after")
    def _no_queries(self) -> FilesDataset:
        if self.verification.queries:
            raise ValueError(
                "verification.queries need a database kind; file trees are compared by their walk and hashes"
            )
        return self
