"""The retention policy decides exactly as the installed `restic forget` does, on the same snapshot times."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest

from backup_pipelines.retention import Policy, apply_policy

# 2020 has 53 ISO weeks and 2021-01-01 is in 2020-W53; restic measures keep-within from the newest past snapshot.
TIMES = [
    "2020-12-20 09:00:00",
    "2020-12-27 09:00:00",
    "2020-12-30 12:00:00",
    "2020-12-31 08:00:00",
    "2020-12-31 23:00:00",
    "2021-01-02 10:00:00",
    "2021-01-04 07:00:00",
    "2021-01-04 19:30:00",
    "2021-01-11 06:00:00",
    "2021-02-01 00:00:00",
    "2021-02-01 00:30:00",
]
POLICIES = [
    (["--keep-daily", "3", "--keep-weekly", "2"], Policy(keep_daily=3, keep_weekly=2)),
    (
        ["--keep-last", "2", "--keep-monthly", "3", "--keep-yearly", "2"],
        Policy(keep_last=2, keep_monthly=3, keep_yearly=2),
    ),
    (["--keep-hourly", "4", "--keep-within", "3d"], Policy(keep_hourly=4, keep_within=timedelta(days=3))),
    (["--keep-weekly", "3", "--keep-within", "8d"], Policy(keep_weekly=3, keep_within=timedelta(days=8))),
]


@pytest.fixture(scope="module")
def restic_repository(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("restic")
    (root / "data").mkdir()
    (root / "data" / "file.txt").write_text("retention")
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": str(root / "repo"),
        "RESTIC_PASSWORD": "test",
        "TZ": "UTC",
        "RESTIC_CACHE_DIR": str(root / "cache"),
    }
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    for moment in TIMES:
        subprocess.run(
            ["restic", "backup", "--time", moment, "--host", "h", str(root / "data")],
            env=env,
            check=True,
            capture_output=True,
        )
    return env


@pytest.mark.parametrize(("arguments", "policy"), POLICIES)
def test_policy_matches_restic_forget(restic_repository: dict[str, str], arguments: list[str], policy: Policy) -> None:
    output = subprocess.run(
        ["restic", "forget", "--dry-run", "--json", *arguments],
        env=restic_repository,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    [group] = json.loads(output)
    restic_kept = {
        datetime.fromisoformat(s["time"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") for s in group["keep"]
    }
    backups = [(moment, datetime.fromisoformat(moment).replace(tzinfo=UTC)) for moment in TIMES]
    ours = {d.backup for d in apply_policy(backups, policy, datetime.now(UTC)) if d.keep}
    assert ours == restic_kept
