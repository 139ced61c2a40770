"""Asset keys of a dataset, from one small frozen record instead of f-strings scattered around."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg


@dataclass(frozen=True)
class DatasetKeys:
    """The asset keys of dataset `name`: backup/<name> -> [copy/<name>] -> verify/<name> -> restore_test/<name>."""

    name: str

    @property
    def backup(self) -> dg.AssetKey:
        return dg.AssetKey(["backup", self.name])

    @property
    def copy(self) -> dg.AssetKey:
        return dg.AssetKey(["copy", self.name])

    @property
    def verify(self) -> dg.AssetKey:
        return dg.AssetKey(["verify", self.name])

    @property
    def restore_test(self) -> dg.AssetKey:
        return dg.AssetKey(["restore_test", self.name])

    @property
    def all(self) -> list[dg.AssetKey]:
        return [self.backup, self.verify, self.restore_test]
