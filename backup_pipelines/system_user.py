"""Running tools as a database server's system user, and the scratch folders restores work in.

pgBackRest, pg_ctl, mbstream, mariabackup and the servers they start must run as the user owning the data
files (`postgres`, `mysql`); as root the project hands them folders and runs them through `runuser`, which
keeps the environment (secrets travel there, never in argv). Not root, everything runs as the current user.
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

SCRATCH_DIR_ENV = "BACKUP_SCRATCH_DIR"


def scratch_folder() -> str:
    """Return the folder for temporary restores and archive files: $BACKUP_SCRATCH_DIR if set, else the system's
    temporary folder (tempfile.gettempdir(), which follows $TMPDIR)."""
    return os.environ.get(SCRATCH_DIR_ENV) or tempfile.gettempdir()


def as_user(user: str, *argv: str) -> tuple[str, ...]:
    """`argv` run as system user `user` (through runuser when we are root and `user` is another one)."""
    return ("runuser", "-u", user, "--", *argv) if os.geteuid() == 0 and user != "root" else argv


def give_to(path: Path, user: str) -> None:
    """As root, hand `path` to system user `user`; otherwise nothing (the current user owns it)."""
    if os.geteuid() != 0:
        return
    account = pwd.getpwnam(user)
    os.chown(path, account.pw_uid, account.pw_gid)


def owned_folder(path: Path, user: str) -> Path:
    """Make the new folder `path` (mode 0700) for `user`; return it."""
    path.mkdir(mode=0o700)
    give_to(path, user)
    return path


def owned_scratch(user: str, prefix: str) -> Path:
    """A new private folder in the scratch folder (`scratch_folder`) for `user`."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_folder()))
    give_to(folder, user)
    return folder
