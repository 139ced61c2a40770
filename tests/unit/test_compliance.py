from __future__ import annotations

import json

import yaml

from backup_pipelines.compliance import judge
from backup_pipelines.manifest import parse_manifest
from tests.unit.test_manifest import VALID


def manifest_with(repositories: dict, compliance: dict | None = None):  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(VALID))
    data["repositories"] = repositories
    data["datasets"]["orders"]["repositories"] = list(repositories)
    if compliance is not None:
        data["datasets"]["orders"]["compliance"] = compliance
    return parse_manifest(yaml.safe_dump(data))


LOCAL = {"type": "local", "path": "b"}
OFFSITE = {"type": "s3", "bucket": "offsite-backups", "offsite": True}
LOCKED = {"type": "s3", "bucket": "vault-backups", "offsite": True, "object_lock": {"mode": "compliance", "days": 30}}


def test_source_plus_local_disk_plus_offsite_object_storage_is_3_2_1() -> None:
    manifest = manifest_with({"local": LOCAL, "offsite": OFFSITE})
    result = judge(manifest, "orders", ["local", "offsite"])
    assert result.passed and result.copies == 3 and result.media == ["disk", "object-storage"]


def test_each_missing_rule_is_named() -> None:
    manifest = manifest_with({"local": LOCAL}, {"copies": 3, "media": 2, "offsite": 1, "immutable": 1})
    result = judge(manifest, "orders", ["local"])
    assert not result.passed
    assert [rule.split(":")[0] for rule in result.missing] == ["3 copies", "2 media", "1 off-site", "1 immutable"]


def test_a_copy_that_did_not_land_does_not_count() -> None:
    manifest = manifest_with({"local": LOCAL, "offsite": OFFSITE})
    assert judge(manifest, "orders", ["local"]).missing[0].startswith("3 copies: only 2")


def test_object_lock_counts_as_immutable() -> None:
    manifest = manifest_with({"local": LOCAL, "vault": LOCKED}, {"immutable": 1})
    assert judge(manifest, "orders", ["local", "vault"]).passed
