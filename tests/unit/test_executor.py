"""The code location's executor: one dataset's steps in the run's process, several datasets' in forked processes."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.executor.multiprocess import MultiprocessExecutor

from assets.executor import AdaptiveExecutor, backup_executor, serial_plan


def test_one_dataset_chain_is_serial_and_two_datasets_are_not() -> None:
    assert serial_plan(["app__backup"])
    assert serial_plan(["app__backup", "app__copy", "app__verify", "app__restore_test"])
    assert not serial_plan(["app__backup", "shop__backup"])
    assert not serial_plan(["app__backup", "status_report"])  # a step of no dataset: not known to be serial
    assert serial_plan(["status_report"])


def _executor(config: dict[str, Any]) -> Any:
    definition = backup_executor
    context = dg.InitExecutorContext(
        job=dg.reconstructable(_job),
        executor_def=definition,
        executor_config=config,
        instance=dg.DagsterInstance.ephemeral(),
    )
    return definition.executor_creation_fn(context)  # type: ignore[misc]


@dg.job
def _job() -> None:
    pass


def test_auto_mode_forks_steps_from_a_forkserver_and_keeps_retries_in_both_modes() -> None:
    executor = _executor({"auto": {"retries": {"enabled": {}}, "max_concurrent": 3}})
    assert isinstance(executor, AdaptiveExecutor)
    assert isinstance(executor.in_process, InProcessExecutor) and isinstance(
        executor.multiprocess, MultiprocessExecutor
    )
    assert executor.multiprocess._start_method == "forkserver"
    assert executor.multiprocess._max_concurrent == 3
    assert executor.retries == executor.in_process.retries


def test_forced_modes_and_an_explicit_start_method() -> None:
    # Dagster fills in the defaults before the executor sees its config
    retries: dict[str, object] = {"retries": {"enabled": {}}}
    assert isinstance(_executor({"in_process": retries}), InProcessExecutor)
    spawned = _executor({"multiprocess": {**retries, "start_method": {"spawn": {}}}})
    assert isinstance(spawned, MultiprocessExecutor) and spawned._start_method == "spawn"
    assert backup_executor.get_requirements({"in_process": {}}) == []
    assert backup_executor.get_requirements({"auto": {}}) != []
