"""The code-location image and the machine setup share one install script, so CI (which runs setup.sh) runs the
same steps the image build does. No container runtime is available here: the Dockerfile is checked as text,
and the script's package lists by its --print mode."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def packages(*arguments: str) -> list[str]:
    printed = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_tools.sh"), *arguments, "--print"],
        check=True,
        capture_output=True,
        text=True,
    )
    return printed.stdout.split()


def test_the_image_has_every_client_tool_and_pg_dump_for_each_supported_major() -> None:
    image = packages("--image")
    assert {f"postgresql-client-{major}" for major in range(13, 18)} <= set(image)
    assert {"mariadb-client", "mariadb-backup", "restic", "age", "zstd", "pgbackrest"} <= set(image)
    assert not any(name in image for name in ("postgresql", "mariadb-server", "chromium"))  # no servers in it


def test_the_dockerfile_uses_the_shared_script_a_pinned_venv_and_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "bash /tmp/install_tools.sh --image" in text
    assert re.search(r"pip install .*-c constraints\.txt", text)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert '"-m", "backup_pipelines.definitions"' in text and '"api", "grpc"' in text
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "bash scripts/install_tools.sh" in setup


def test_the_development_setup_installs_nothing_already_present() -> None:
    """On this machine (set up by the same script) every tool is there, so the list is empty."""
    assert packages() == []
