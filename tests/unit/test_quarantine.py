"""Quarantine without servers: retention's plan around quarantined backups, the sidecar mark, the tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

from backup_pipelines.freshness import Freshness
from backup_pipelines.quarantine import describe, good
from backup_pipelines.repository import BackupRecord
from backup_pipelines.repository.local import LocalRepository
from backup_pipelines.repository.restic import TAG_QUARANTINE as RESTIC_TAG
from backup_pipelines.repository.restic import _record
from backup_pipelines.repository.restic import quarantine_tags as restic_tags
from backup_pipelines.repository.snapshot_tags import TAG_QUARANTINE, quarantine_tags
from backup_pipelines.retention import Candidate, Policy, plan_retention
from tests.conftest import backup_record

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
REASON = "size_anomaly failed: bytes_raw 90% below the median (1,234,567); rows of orders -90%"


def candidates(quarantined_index: int | None = 0, count: int = 5) -> list[Candidate]:
    """`count` hourly backups b0 (newest) .. b<count-1>, the one at `quarantined_index` quarantined."""
    return [
        Candidate(f"b{index}", NOW - timedelta(hours=index + 1), quarantined=index == quarantined_index)
        for index in range(count)
    ]


def kept(decisions: list) -> dict[str, tuple[str, ...]]:
    return {d.backup: d.reasons for d in decisions if d.keep}


def test_retention_with_a_quarantined_newest_backup_keeps_the_last_good_ones_and_expires_it() -> None:
    decisions = plan_retention(candidates(), Policy(keep_last=2), NOW)
    assert [d.backup for d in decisions] == ["b0", "b1", "b2", "b3", "b4"]  # still newest first
    assert kept(decisions) == {"b1": ("last", "safety: newest backup"), "b2": ("last",)}


def test_a_quarantined_backup_is_kept_while_younger_than_the_minimum_age() -> None:
    decisions = plan_retention(candidates(), Policy(keep_last=2), NOW, min_age=timedelta(hours=1, minutes=30))
    assert kept(decisions)["b0"] == ("safety: younger than the minimum age",)
    assert set(kept(decisions)) == {"b0", "b1", "b2"}


def test_a_quarantined_backup_is_never_the_newest_verified_one() -> None:
    items = [
        Candidate("b0", NOW - timedelta(hours=1), verified=True, quarantined=True),
        Candidate("b1", NOW - timedelta(hours=2)),
        Candidate("b2", NOW - timedelta(hours=3), verified=True),
        Candidate("b3", NOW - timedelta(hours=4)),
    ]
    assert kept(plan_retention(items, Policy(keep_last=1), NOW)) == {
        "b1": ("last", "safety: newest backup"),
        "b2": ("safety: newest verified backup",),
    }


def test_keep_within_is_measured_from_the_newest_good_backup() -> None:
    decisions = plan_retention(candidates(), Policy(keep_within=timedelta(hours=1, minutes=30)), NOW)
    assert set(kept(decisions)) == {"b1", "b2"}  # b2 is 1 h older than b1, the newest good one


def test_an_empty_policy_keeps_quarantined_backups_too() -> None:
    assert len(kept(plan_retention(candidates(), Policy(), NOW))) == 5


def test_a_dataset_whose_every_backup_is_quarantined_keeps_the_newest() -> None:
    items = [Candidate(f"b{i}", NOW - timedelta(hours=i + 1), quarantined=True) for i in range(3)]
    assert kept(plan_retention(items, Policy(keep_last=3), NOW)) == {"b0": ("safety: newest backup",)}


def record(backup_id: str = "20261201T100000Z-aaaaaa", **extra: object) -> BackupRecord:
    values = {"partition_key": "2026-12-01-10:00", "created_at": "2026-12-01T10:00:00+00:00", "bytes_stored": 5}
    return backup_record(backup_id, **{**values, **extra})


def test_a_sidecar_without_the_quarantine_fields_reads_as_a_normal_backup() -> None:
    old = b'{"dataset": "orders", "partition_key": "p", "backup_id": "x", "kind": "postgres", "format": "f",'
    old += b'"object_name": "x.zst", "created_at": "2026-12-01T10:00:00+00:00", "bytes_raw": 1, "bytes_stored": 1,'
    old += b'"sha256": "", "compression": "zstd", "encrypted": false}'
    assert not BackupRecord.from_json(old).quarantined


def test_quarantine_and_release_rewrite_the_sidecar_of_a_local_repository(tmp_path: Path) -> None:
    repository = LocalRepository("local", tmp_path)
    original = record()
    repository.put_bytes(original.object_path, b"data")
    repository.commit_record(original)
    repository.set_quarantine(original, REASON, "2026-12-01T10:05:00+00:00")
    [marked] = repository.list_backups("orders")
    assert marked.quarantine_reason == REASON and marked.quarantined_at == "2026-12-01T10:05:00+00:00"
    assert describe(marked) == (
        f"backup {original.backup_id} of orders is QUARANTINED since 2026-12-01T10:05:00 UTC: {REASON}"
    )
    assert good([marked]) == []
    repository.set_quarantine(marked, None)
    [released] = repository.list_backups("orders")
    assert released == original


def test_restic_tags_carry_a_reason_with_commas_and_percent_signs_intact() -> None:
    tags = restic_tags(REASON, "2026-12-01T10:05:00+00:00")
    assert all("," not in tag for tag in tags)
    assert unquote(tags[0].removeprefix(RESTIC_TAG)) == REASON
    snapshot = {
        "id": "abc",
        "time": "2026-12-01T10:00:00.123456789Z",
        "tags": ["bp-dataset=home", "bp-id=20261201T100000Z-aaaaaa", *tags],
    }
    parsed = _record(snapshot)
    assert parsed is not None and parsed.quarantine_reason == REASON
    assert parsed.quarantined_at == "2026-12-01T10:05:00+00:00"


def test_aws_quarantine_tags_use_only_the_characters_rds_allows() -> None:
    tags = quarantine_tags(REASON, "2026-12-01T10:05:00+00:00")
    assert tags[TAG_QUARANTINE] == "size_anomaly failed: bytes_raw 90 below the median 1 234 567 rows of orders -90"
    assert len(quarantine_tags("x" * 400, None)[TAG_QUARANTINE]) == 256


def test_freshness_names_the_quarantined_newer_backups() -> None:
    item = Freshness("orders", 3600, NOW.timestamp() - 7200, "2026-12-01-09:00", NOW.timestamp(), REASON)
    assert item.stale
    assert item.describe().startswith("newest good backup of orders (partition 2026-12-01-09:00) is 2h old, older than")
    assert item.describe().endswith(f"newer backups are quarantined ({REASON})")
