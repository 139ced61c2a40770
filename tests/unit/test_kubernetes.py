"""The Kubernetes job of each step, built by dagster-k8s itself (`construct_dagster_k8s_job`, what the
k8s_job_executor does) from deploy/dagster.yaml's launcher settings and the op tags the manifest gives.

Kubernetes is not available here, so no job is applied to a cluster: the tests check the spec dagster-k8s
would submit (image, command, resources from the dataset's tags, Secrets injected by name, the age identity
only where verify and restore tests run, no secret value anywhere) and the chart values' wiring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
from dagster_k8s.job import get_user_defined_k8s_config
from kubernetes.client import ApiClient

from assets.kubernetes import EXECUTOR_ENV, IDENTITY_SECRET
from backup_pipelines.definitions import build_definitions
from backup_pipelines.errors import ManifestError
from backup_pipelines.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "registry.example.com/backup-pipelines:1.0.0"
SECRET_VALUES = {"PG_MAIN_PASSWORD": "pg-secret-value-8c1f", "BACKUP_AGE_IDENTITY": "AGE-SECRET-KEY-1SHOULDNEVERAPPEAR"}


@pytest.fixture
def defs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    text = (ROOT / "backup_manifest.yaml").read_text()
    text = text.replace(
        '    owners: ["team:platform"]\n    schedule: hourly\n    rpo: 2h',
        '    owners: ["team:platform"]\n    tags: {k8s/cpu: "2", k8s/memory: 3Gi}\n    schedule: hourly\n    rpo: 2h',
        1,
    )
    (tmp_path / "m.yaml").write_text(text)
    (tmp_path / ".local" / "keys").mkdir(parents=True)
    shutil.copy(ROOT / ".local" / "keys" / "age-recipients.txt", tmp_path / ".local" / "keys")
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)  # in the environment, as in a pod: it must still never reach a spec
    monkeypatch.setenv(EXECUTOR_ENV, "k8s")
    return build_definitions(tmp_path / "m.yaml")


def step_job(defs: dg.Definitions, key: str) -> dict[str, Any]:
    """The V1Job dagster-k8s builds for the step of asset `key`, as the API server would receive it."""
    launcher = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["run_launcher"]["config"]
    job_config = DagsterK8sJobConfig(
        job_image=IMAGE,
        dagster_home=launcher["dagster_home"],
        instance_config_map=launcher["instance_config_map"],
        postgres_password_secret=launcher["postgres_password_secret"],
        env_secrets=launcher["env_secrets"],
        service_account_name=launcher["service_account_name"],
    )
    op = defs.resolve_assets_def(dg.AssetKey.from_user_string(key)).op
    job = construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step", "{}"],
        job_name=f"dagster-step-{key.replace('/', '-').replace('_', '-')}",
        user_defined_k8s_config=get_user_defined_k8s_config(op.tags),
        labels={"dagster/run-tag-dataset": key.split("/")[0], **({"dagster/pool": op.pool} if op.pool else {})},
    )
    spec: dict[str, Any] = ApiClient().sanitize_for_serialization(job)
    return spec


def secrets_from(container: dict[str, Any]) -> set[str]:
    return {source["secretRef"]["name"] for source in container.get("envFrom", [])}


def test_step_pods_carry_image_command_resources_and_secrets_by_name(defs: dg.Definitions) -> None:
    jobs = {stage: step_job(defs, f"postgres_main/{stage}") for stage in ("backup", "verify", "restore_test")}
    for stage, job in jobs.items():
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == IMAGE and container["args"][:3] == ["dagster", "api", "execute_step"]
        assert container["resources"]["requests"] == {"cpu": "2", "memory": "3Gi"}, stage
        assert container["resources"]["limits"] == {"memory": "3Gi"}, stage
        assert {"backup-source-passwords", "backup-s3-credentials", "backup-pgbackrest"} <= secrets_from(container)
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["dagster/run-tag-dataset"] == "postgres_main"
        assert labels.get("dagster/pool") == (None if stage == "verify" else "db-pg_main"), stage  # the DB's pool
        text = json.dumps(job)
        assert not any(value in text for value in SECRET_VALUES.values()), f"a secret value in the {stage} spec"
    assert IDENTITY_SECRET not in secrets_from(jobs["backup"]["spec"]["template"]["spec"]["containers"][0])
    for stage in ("verify", "restore_test"):
        assert IDENTITY_SECRET in secrets_from(jobs[stage]["spec"]["template"]["spec"]["containers"][0])


def test_a_dataset_without_k8s_tags_gets_the_launchers_defaults_and_the_executor_is_per_step(
    defs: dg.Definitions,
) -> None:
    job = step_job(defs, "shop_mysql/backup")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert "resources" not in container or not container["resources"]
    assert isinstance(defs.executor, dg.ExecutorDefinition) and defs.executor.name == "k8s_step_pods"


def test_chart_values_and_instance_agree_on_secrets_and_never_give_the_identity_to_every_pod() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "backup_pipelines.definitions"]
    assert {"name": EXECUTOR_ENV, "value": "k8s"} in deployment["env"]
    chart_secrets = {item["name"] for item in deployment["envSecrets"]}
    launcher = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["run_launcher"]["config"]
    assert chart_secrets == set(launcher["env_secrets"]) and IDENTITY_SECRET not in chart_secrets
    documented = [doc for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "secrets.example.yaml").read_text())]
    assert {doc["metadata"]["name"] for doc in documented} == chart_secrets | {IDENTITY_SECRET}
    assert all(value.startswith("<") for doc in documented for value in doc["stringData"].values())


def test_a_malformed_k8s_tag_is_refused_naming_the_field(tmp_path: Path) -> None:
    text = (ROOT / "backup_manifest.yaml").read_text()
    bad = '    owners: ["team:platform"]\n    tags: {k8s/memory: 4GB}\n    schedule: hourly\n    rpo: 2h'
    (tmp_path / "m.yaml").write_text(
        text.replace('    owners: ["team:platform"]\n    schedule: hourly\n    rpo: 2h', bad, 1)
    )
    (tmp_path / ".local" / "keys").mkdir(parents=True)
    shutil.copy(ROOT / ".local" / "keys" / "age-recipients.txt", tmp_path / ".local" / "keys")
    with pytest.raises(ManifestError, match=r"datasets\.postgres_main\.tags.*k8s/memory: '4GB' is not a Kubernetes"):
        load_manifest(tmp_path / "m.yaml")
