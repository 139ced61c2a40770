"""A team's own Dagster project (the `dg` layout: a pyproject with [tool.dg], `load_from_defs_folder`, an asset
of its own) adds backups with one defs.yaml naming the `backup_pipelines.BackupPipelines` component: the
same assets, checks, jobs, schedules and sensors as this repository's code location, beside the project's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.conftest import ROOT, run

DEFINITIONS = """
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""
OWN_ASSET = """
import dagster as dg


@dg.asset
def daily_revenue() -> int:
    return 42
"""
COMPONENT = """
type: backup_pipelines.BackupPipelines
attributes:
  manifest: backup_manifest.yaml
"""
LIST = """
import json
from teamproj.definitions import defs
d = defs()
graph = d.resolve_asset_graph()
print(json.dumps({
    "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
    "checks": sorted(key.name for key in graph.asset_check_keys),
    "jobs": sorted(job.name for job in d.jobs or []),
    "schedules": sorted(s.name for s in d.schedules or []),
    "sensors": sorted(s.name for s in d.sensors or []),
    "executor": d.executor is not None,
}))
"""


def make_project(folder: Path) -> Path:
    package = folder / "src" / "teamproj"
    (package / "defs" / "backups").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "teamproj"\nversion = "0.1.0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "teamproj"\ncode_location_name = "teamproj.definitions"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    (package / "defs" / "analytics.py").write_text(OWN_ASSET)
    backups = package / "defs" / "backups"
    (backups / "defs.yaml").write_text(COMPONENT)
    shutil.copy(ROOT / "backup_manifest.yaml", backups / "backup_manifest.yaml")
    (backups / ".local" / "keys").mkdir(parents=True)
    shutil.copy(ROOT / ".local" / "keys" / "age-recipients.txt", backups / ".local" / "keys")
    return folder


def test_component_adds_the_backups_beside_the_projects_own_assets(tmp_path: Path) -> None:
    project = make_project(tmp_path / "teamproj")
    env = {"PYTHONPATH": str(project / "src"), "DAGSTER_HOME": str(tmp_path)}
    validated = run(["dagster", "definitions", "validate", "-m", "teamproj.definitions"], env, cwd=project)
    assert validated.returncode == 0, validated.stderr[-3000:]
    listed = run(["python", "-c", LIST], env, cwd=project)
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout.strip().splitlines()[-1])
    assert "daily_revenue" in found["assets"]
    assert {"postgres_main/backup", "postgres_main/verify", "postgres_main/restore_test", "cluster_main/backup"} <= set(
        found["assets"]
    )
    assert {"rpo_fresh", "size_anomaly", "restore_within_rto", "three_two_one"} <= set(found["checks"])
    assert {"protect_hourly", "retention", "watch", "reports"} <= set(found["jobs"])
    assert {"rpo_alerts", "pitr_markers"} <= set(found["sensors"]) and found["schedules"]
    assert found["executor"] is False  # the project keeps its own executor
