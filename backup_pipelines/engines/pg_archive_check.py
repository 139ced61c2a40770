"""Archive check of a PostgreSQL custom-format dump read from stdin: prove it is whole, to its last byte.

`pg_restore --list` reads only the table of contents at the start of the archive, so a dump cut short after
it still lists fine. This check feeds the same bytes to two pg_restore processes: `--list` (the summary
that is recorded) and `--file=/dev/null`, which reads and decodes every data block to the end and fails on a
truncated or damaged archive. It prints the listing, then `data: complete` when both succeeded.

Run as a script (no package import, so it starts fast): `python pg_archive_check.py PG_RESTORE`. Exit 1 with
pg_restore's error on stderr when the archive is not whole.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
from typing import IO

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
    source = sys.stdin.buffer
    while chunk := source.read(CHUNK):
        for target in list(targets):
            try:
                target.write(chunk)  # type: ignore[union-attr]
            except BrokenPipeError:  # --list stops after the table of contents; the full reader must not
                targets.remove(target)
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
