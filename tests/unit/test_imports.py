"""The core loads without boto3: AWS costs ~0.1 s and ~20 MB per process, paid only by runs that reach AWS."""

from __future__ import annotations

import subprocess
import sys

CORE = ["backup_pipelines.operations", "backup_pipelines.copies", "backup_pipelines.runbook", "backup_pipelines.cli"]


def test_the_core_imports_boto3_only_when_aws_is_used() -> None:
    script = f"import sys, {', '.join(CORE)}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'boto3'))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    script = "import sys; from backup_pipelines.aws import make_client; print('boto3' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip() == "False"
