"""The code location's executor: one process for a run that cannot run two steps at once, forked steps otherwise.

Dagster's default executor starts a fresh interpreter per step, which imports Dagster and this code location
again: about 3 s and 185 MB per step, paid by every one-dataset backup run, where the steps of the one dataset
(backup -> copy -> verify -> restore_test) wait for each other anyway. So in `auto` mode:

- a run whose steps all belong to one dataset (or that has a single step) runs them in the run's own process;
- a run over several datasets runs steps in parallel processes, forked from one warm `forkserver` process that
  has imported the code location once, so a step starts in a fraction of a second.

`in_process` and `multiprocess` force either mode (run config `execution: {config: {in_process: {}}}`). Pools
(`db-<server>`) and retries apply the same in every mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    MULTI_PROC_CONFIG,
    ExecutorRequirement,
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
    multiple_process_executor_requirements,
)
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.base import Executor

from assets.keys import dataset_of_step

if TYPE_CHECKING:
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._core.execution.step_dependency_config import StepDependencyConfig

FORKSERVER: dict[str, Any] = {"forkserver": {}}


def serial_plan(step_keys: list[str]) -> bool:
    """Return True when the steps cannot usefully run at the same time: one step, or every step one stage of
    the same dataset's chain (each waits for the one before it)."""
    if len(step_keys) <= 1:
        return True
    datasets = {
        stage_and_dataset[1] if stage_and_dataset else None for stage_and_dataset in map(dataset_of_step, step_keys)
    }
    return len(datasets) == 1 and None not in datasets


class AdaptiveExecutor(Executor):
    """Runs a serial plan in process and any other plan with the (forkserver) multiprocess executor."""

    def __init__(self, in_process: Executor, multiprocess: Executor) -> None:
        self.in_process = in_process
        self.multiprocess = multiprocess

    @property
    def retries(self) -> RetryMode:
        return self.multiprocess.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self.multiprocess.step_dependency_config

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[Any]:
        serial = serial_plan(list(execution_plan.step_keys_to_execute))
        chosen = self.in_process if serial else self.multiprocess
        yield from chosen.execute(plan_context, execution_plan)


def _with_forkserver(config: dict[str, Any]) -> dict[str, Any]:
    return config if config.get("start_method") else {**config, "start_method": FORKSERVER}


def _requirements(config: Mapping[str, object]) -> Sequence[ExecutorRequirement]:
    return [] if "in_process" in config else multiple_process_executor_requirements()


@dg.executor(
    name="backup_executor",
    config_schema=dg.Field(
        dg.Selector({"auto": MULTI_PROC_CONFIG, "multiprocess": MULTI_PROC_CONFIG, "in_process": IN_PROC_CONFIG}),
        default_value={"auto": {}},
    ),
    requirements=_requirements,
)
def backup_executor(init_context: dg.InitExecutorContext) -> Executor:
    """`auto` (default): a run over one dataset in one process, over several in forked step processes;
    `multiprocess` (forkserver unless `start_method` says otherwise) or `in_process` force one mode."""
    mode, chosen = next(iter(init_context.executor_config.items()))
    config: dict[str, Any] = dict(chosen)  # type: ignore[call-overload]
    if mode == "in_process":
        return _core_in_process_executor_creation(config)
    multiprocess = _core_multiprocess_executor_creation(_with_forkserver(config))
    if mode == "multiprocess":
        return multiprocess
    shared = {key: config.get(key) for key in ("retries", "step_dependency_config")}
    return AdaptiveExecutor(_core_in_process_executor_creation(shared), multiprocess)
