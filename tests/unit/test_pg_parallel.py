"""When a PostgreSQL restore goes parallel: a large archive of several tables, with room in the scratch folder."""

from __future__ import annotations

from pathlib import Path

from backup_pipelines.engines import pg_parallel
from backup_pipelines.engines.pg_parallel import PARALLEL_THRESHOLD, restore_jobs, splittable_size

LARGE = PARALLEL_THRESHOLD * 2


def test_an_archive_of_one_table_streams_since_pg_restore_cannot_split_it() -> None:
    assert splittable_size(LARGE, 1) is None
    assert splittable_size(LARGE, 0) is None
    assert splittable_size(LARGE, 2) == LARGE
    assert splittable_size(LARGE, None) == LARGE  # an old record without a table count: by size alone


def test_only_a_large_archive_with_room_goes_parallel(tmp_path: Path) -> None:
    assert restore_jobs(None, str(tmp_path)) == 1
    assert restore_jobs(PARALLEL_THRESHOLD, str(tmp_path)) == 1
    assert restore_jobs(PARALLEL_THRESHOLD + 1, str(tmp_path)) == pg_parallel.parallel_jobs() >= 2
    assert restore_jobs(1 << 60, str(tmp_path)) == 1  # no folder has an exbibyte free: stream
