"""The fault suite: every test here injects one fault (parametrized cases count one each) and checks that it
is contained. Its tests carry the `faults` marker; the summary at the end (tests/conftest.py) counts the cases by
category."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_pipelines.crypto import KeyPair
from backup_pipelines.sample import create_sample_database
from backup_pipelines.sandbox import PostgresSandbox

HERE = Path(__file__).parent
FAULTS_DATABASE = "faults_db"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.timeout(120))  # a fault that hangs a backup fails its case, not the run


@pytest.fixture(autouse=True)
def identity(age_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_AGE_IDENTITY", age_keys.identity)


@pytest.fixture(scope="session")
def faults_database(postgres: PostgresSandbox) -> str:
    """A small sample database only the fault suite uses, so its dump size stays put between cases."""
    create_sample_database(postgres.conninfo(), FAULTS_DATABASE, orders=400)
    return FAULTS_DATABASE
