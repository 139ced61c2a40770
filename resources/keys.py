"""The age identity (private key) that verify and restore tests decrypt with.

Backup runs never need it: they encrypt to the manifest's public recipients. The identity is a secret kept
apart from the backups, given either as the key itself or as a path to an identity file, each through an
environment variable (in Kubernetes, a mounted Secret).
"""

from __future__ import annotations

import os

import dagster as dg

from backup_pipelines.crypto import IDENTITY_ENV, IDENTITY_FILE_ENV


class AgeIdentityResource(dg.ConfigurableResource):
    """Names the environment variables holding the age identity, or its file path. Resolved lazily, so a
    run that only backs up needs no identity, and a missing one fails verify with a message naming both."""

    identity_env: str = IDENTITY_ENV
    identity_file_env: str = IDENTITY_FILE_ENV
    identity_file: str | None = None

    def credentials(self) -> tuple[str | None, str | None]:
        """Return (identity text, identity file path) as configured; either may be None."""
        return os.environ.get(self.identity_env), self.identity_file or os.environ.get(self.identity_file_env)
