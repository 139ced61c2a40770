"""Asset keys of a dataset, from one small frozen record instead of f-strings scattered around.

The dataset comes first (`<dataset>/<stage>`), so the asset graph labels each node by its stage inside the
dataset's group and a selection such as `key:postgres_main/*` takes one dataset's whole chain. A step key is the
asset key joined with `__`: `postgres_main__backup`.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

CHAIN_STAGES = ("backup", "copy", "verify", "restore_test")
RETENTION_GROUP = "retention"


@dataclass(frozen=True)
class DatasetKeys:
    """The asset keys of dataset `name`: <name>/backup -> [<name>/copy] -> <name>/verify -> <name>/restore_test,
    plus <name>/retention (retention group) and, for a watched S3 bucket, <name>/bucket."""

    name: str

    def _key(self, stage: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, stage])

    @property
    def backup(self) -> dg.AssetKey:
        return self._key("backup")

    @property
    def copy(self) -> dg.AssetKey:
        return self._key("copy")

    @property
    def verify(self) -> dg.AssetKey:
        return self._key("verify")

    @property
    def restore_test(self) -> dg.AssetKey:
        return self._key("restore_test")

    @property
    def retention(self) -> dg.AssetKey:
        return self._key("retention")

    @property
    def bucket(self) -> dg.AssetKey:
        return self._key("bucket")

    @property
    def all(self) -> list[dg.AssetKey]:
        return [self.backup, self.verify, self.restore_test]


def dataset_stage(key: dg.AssetKey) -> tuple[str, str] | None:
    """Return (dataset, stage) of a dataset's asset key (`postgres_main/backup` -> postgres_main, backup), or
    None for any other key (the reports)."""
    if len(key.path) != 2 or key.path[1] not in (*CHAIN_STAGES, "retention", "bucket"):
        return None
    return key.path[0], key.path[1]


def dataset_of_step(step_key: str) -> tuple[str, str] | None:
    """Return (stage, dataset) of a dataset's step key (`postgres_main__restore_test` -> restore_test,
    postgres_main), else None. Only the four stages of the chain count."""
    dataset, _, stage = step_key.rpartition("__")
    return (stage, dataset) if stage in CHAIN_STAGES and dataset else None
