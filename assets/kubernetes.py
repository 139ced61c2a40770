"""What a step pod needs on Kubernetes, from the manifest: `dagster-k8s/config` op tags read by dagster-k8s's
`k8s_job_executor` (one pod per step; the other executors ignore them).

- Resources from the dataset's tags: `k8s/cpu` (request) and `k8s/memory` (request and limit), e.g.
  `tags: {k8s/cpu: "2", k8s/memory: 4Gi}` for a large database's dump and restore test.
- The age identity (Secret `backup-age-identity`, holding BACKUP_AGE_IDENTITY) reaches only the pods of verify
  and restore-test steps: a backup pod holds public recipients only, so a compromised backup runner cannot
  read old backups. The run launcher's own `env_secrets` must therefore not list it (deploy/dagster.yaml).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

K8S_CONFIG_TAG = "dagster-k8s/config"
IDENTITY_SECRET = "backup-age-identity"
CPU_TAG, MEMORY_TAG = "k8s/cpu", "k8s/memory"
EXECUTOR_ENV = "BACKUP_EXECUTOR"  # "k8s": one pod per step (k8s_job_executor) instead of assets/executor.py


def step_k8s_tags(tags: dict[str, str], needs_identity: bool) -> dict[str, Any]:
    """The op tags of one step of a dataset with manifest `tags`; `needs_identity` for verify and restore."""
    requests = {name: tags[tag] for name, tag in (("cpu", CPU_TAG), ("memory", MEMORY_TAG)) if tags.get(tag)}
    container: dict[str, Any] = {}
    if requests:
        limits = {"memory": requests["memory"]} if "memory" in requests else {}
        container["resources"] = {"requests": requests, **({"limits": limits} if limits else {})}
    if needs_identity:
        container["env_from"] = [{"secret_ref": {"name": IDENTITY_SECRET}}]
    return {K8S_CONFIG_TAG: {"container_config": container}} if container else {}


def chosen_executor(default: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """`k8s_job_executor` when $BACKUP_EXECUTOR is "k8s" (the production profile's per-step pods, which inherit
    the run launcher's image and secrets), else `default`."""
    if os.environ.get(EXECUTOR_ENV) != "k8s":
        return default
    from dagster_k8s import k8s_job_executor

    executor: dg.ExecutorDefinition = k8s_job_executor.configured({"max_concurrent": 8}, name="k8s_step_pods")
    return executor
