"""Archive check of a SQLite backup: read the database from stdin, print its integrity verdict and table count.

Run as `python -m backup_pipelines.engines.sqlite_check`; exit 1 when the database is not sound.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from backup_pipelines.engines.sqlite import TABLES_SQL, integrity


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bp-sqlite-check-") as folder:
        path = Path(folder) / "check.sqlite"
        with open(path, "wb") as output:
            shutil.copyfileobj(sys.stdin.buffer, output, 1 << 20)
        try:
            verdict = integrity(path)
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
                tables = len(connection.execute(TABLES_SQL).fetchall())
        except sqlite3.Error as error:
            print(f"integrity_check: {error}")
            return 1
    print(f"integrity_check: {verdict}\ntables: {tables}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
