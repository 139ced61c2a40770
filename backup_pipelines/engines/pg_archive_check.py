"""Archive check of a PostgreSQL custom-format dump read from stdin: prove it is whole, to its last byte.

`pg_restore --list` reads only the table of contents at the start of the archive, so a dump cut short after
it still lists fine. This check feeds the same bytes (zero-copy, with tee(2) and splice(2), when stdin is a
pipe) to two pg_restore processes: `--list` (the summary that is recorded) and `--file=/dev/null`, which reads
and decodes every data block to the end and fails on a truncated or damaged archive. It prints the listing,
then `data: complete` when both succeeded.

Run as a script (no package import, so it starts fast): `python pg_archive_check.py PG_RESTORE`. Exit 1 with
pg_restore's error on stderr when the archive is not whole.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20


def main(pg_restore: str) -> int:
    with tempfile.TemporaryFile() as list_errors, tempfile.TemporaryFile() as read_errors:
        return check(pg_restore, [list_errors, read_errors])


def check(pg_restore: str, errors: list[IO[bytes]]) -> int:
    """Feed stdin to `pg_restore --list` and `pg_restore --file=/dev/null`; print the listing and the
    verdict; return the exit status. `errors` are two files for the two processes' stderr."""
    lister = subprocess.Popen([pg_restore, "--list"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors[0])
    reader = subprocess.Popen(
        [pg_restore, "--file=/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors[1]
    )
    listing: list[bytes] = []
    collector = threading.Thread(target=lambda: listing.append(lister.stdout.read()))  # type: ignore[union-attr]
    collector.start()
    targets = [lister.stdin, reader.stdin]
    helpers = zerocopy()
    try:
        helpers.tee_and_splice(sys.stdin.fileno(), reader.stdin.fileno(), lister.stdin.fileno())  # type: ignore[union-attr]
    except BrokenPipeError:  # the full reader stopped: the archive is damaged, its exit status says why
        pass
    except OSError as failure:
        if not helpers.moved_nothing(failure):  # else stdin is not a pipe, or there is no tee(2): copy
            raise
        copy(sys.stdin.buffer, targets)
    for target in targets:
        with contextlib.suppress(BrokenPipeError):
            target.close()  # type: ignore[union-attr]
    collector.join()
    statuses = (lister.wait(), reader.wait())
    sys.stdout.buffer.write(b"".join(listing))
    if any(statuses):
        for status, error in zip(statuses, errors, strict=True):
            error.seek(0)
            if status:
                sys.stderr.buffer.write(error.read())
        return 1
    print("data: complete")
    return 0


def copy(source: IO[bytes], targets: list[Any]) -> None:
    """Write everything from `source` to every target; a target that stops reading is dropped."""
    while chunk := source.read(CHUNK):
        for target in list(targets):
            try:
                target.write(chunk)
            except BrokenPipeError:  # --list stops after the table of contents; the full reader must not
                targets.remove(target)


def zerocopy() -> Any:
    """The package's zero-copy helpers (backup_pipelines/zerocopy.py), loaded by path: importing the package
    would cost this short-lived script more than the check itself."""
    path = Path(__file__).resolve().parent.parent / "zerocopy.py"
    spec = importlib.util.spec_from_file_location("backup_pipelines_zerocopy", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
