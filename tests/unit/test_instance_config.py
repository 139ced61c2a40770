"""Both instance configurations are valid for the pinned Dagster: the local default and production's.

The production run launcher is only schema-checked: constructing K8sRunLauncher needs a Kubernetes cluster,
which cannot run here.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher

ROOT = Path(__file__).resolve().parents[2]


def test_local_default_instance_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"]["pools"]["default_limit"] == 2
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 4
    assert "sqlite" in config["storage"]
    assert_runs_are_monitored(config)


def assert_runs_are_monitored(config: Mapping[str, object]) -> None:
    """A dead run is failed and the pool slots it held are freed within minutes."""
    monitoring = config["run_monitoring"]
    assert isinstance(monitoring, dict) and monitoring["enabled"] is True
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 300
    assert monitoring["start_timeout_seconds"] <= 300


def test_production_instance_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert "postgres" in config["storage"]
    assert_runs_are_monitored(config)
    raw = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert validate_config(K8sRunLauncher.config_type(), raw["run_launcher"]["config"]).success
    assert validate_config(S3ComputeLogManager.config_type(), raw["compute_logs"]["config"]).success
