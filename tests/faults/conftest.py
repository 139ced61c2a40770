"""The fault suite: every test here injects one fault (parametrized cases count one each) and checks that it
is contained. Its tests carry the `faults` marker; the summary at the end counts the cases by category."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.sample import create_sample_database
from backup_pipelines.sandbox import PostgresSandbox

HERE = Path(__file__).parent
FAULTS_DATABASE = "faults_db"


def _category(item: pytest.Item) -> str:
    return item.path.stem.removeprefix("test_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.timeout(120))  # a fault that hangs a backup fails its case, not the run


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reports = [
        report
        for outcome in ("passed", "failed", "skipped", "error")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") in ("call", "setup") and "tests/faults/" in str(report.nodeid)
    ]
    counted: dict[str, str] = {}
    for report in reports:  # one outcome per case: a failed setup, else the call
        if report.when == "call" or report.outcome != "passed":
            counted[report.nodeid] = report.outcome
    if not counted:
        return
    by_category = Counter(
        nodeid.split("/")[-1].split("::")[0].removeprefix("test_").removesuffix(".py") for nodeid in counted
    )
    outcomes = Counter(counted.values())
    terminalreporter.write_sep("-", f"fault suite: {len(counted)} injected faults")
    for category, count in sorted(by_category.items()):
        terminalreporter.write_line(f"  {category}: {count}")
    terminalreporter.write_line("  outcomes: " + ", ".join(f"{key} {value}" for key, value in sorted(outcomes.items())))


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


@pytest.fixture(scope="session")
def faults_database(postgres: PostgresSandbox) -> str:
    """A small sample database only the fault suite uses, so its dump size stays put between cases."""
    create_sample_database(postgres.conninfo(), FAULTS_DATABASE, orders=400)
    return FAULTS_DATABASE
