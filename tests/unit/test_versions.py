"""The Dagster family is pinned in lockstep: an unpinned install silently resolves years-old integrations."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = {"dagster": "1.13.27", "dagster-webserver": "1.13.27", "dagster-pipes": "1.13.27"}
INTEGRATIONS = {
    "dagster-aws": "0.29.27",
    "dagster-k8s": "0.29.27",
    "dagster-postgres": "0.29.27",
    "dagster-slack": "0.29.27",
}


def test_installed_dagster_family_matches_the_pins() -> None:
    for package, expected in {**CORE, **INTEGRATIONS}.items():
        assert version(package) == expected, package


def test_integrations_match_the_core_minor_and_patch() -> None:
    core_patch = version("dagster").split(".")[2]
    for package in INTEGRATIONS:
        assert version(package) == f"0.{int(version('dagster').split('.')[1]) + 16}.{core_patch}", package


def pin(dependency: str) -> tuple[str, str]:
    """The package and version of a `name[extras]==version` requirement."""
    match = re.match(r"^([a-z0-9-]+)(?:\[.*\])?==(.+)$", dependency)
    assert match is not None, dependency
    return match.group(1), match.group(2)


def test_pyproject_and_constraints_pin_the_same_versions() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(pin(d) for d in dependencies if "==" in d)
    constraints = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    for package, expected in {**CORE, **INTEGRATIONS}.items():
        assert constraints[package] == expected, package
        if package in pins:
            assert pins[package] == expected, package
