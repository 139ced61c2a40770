"""Small streaming edits of a mysqldump SQL stream, at backup time (the stored dump) and at restore time.

mysqldump's header sets `SQL_MODE='NO_AUTO_VALUE_ON_ZERO'` for the rest of the script, which overrides any
session mode the client chose: a value the restored table cannot hold (an ENUM member written as '?') is then
stored as '' with only a warning. The edits make the script strict (STRICT_ALL_TABLES), so such a value is an
error: the header line gets the mode, and after each table's CREATE TABLE a line sets the mode its rows are
inserted under. That is strict, except for a table with generated columns: MariaDB's mysqldump writes their
values too, and a strict server refuses any value given for a generated column (ERROR 1906), so those tables'
rows are inserted under mysqldump's own mode (their content is still compared by the fingerprint).

At backup time an `ALTER DATABASE CHARACTER SET .. COLLATE ..` line (no name: the database the client was
started with) follows the header, so every restore of the stored dump, the tool's or a plain
`mysql db < dump.sql`, gives the database the source's default character set and collation. Lines of
CREATE TABLE statements can go through one more rewrite (column definitions SHOW CREATE TABLE cannot write).

The stream is scanned a chunk at a time; only chunks holding a CREATE TABLE are split into lines, so the rows
pass at the speed of bytes.find.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from typing import IO, Any

from backup_pipelines.errors import IntegrityError

STRICT_MODE = "STRICT_ALL_TABLES"
HEADER_SQL_MODE = re.compile(rb"^(/\*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE=')([^']*)(' \*/;)\s*$")
HEADER_ENDS = (b"CREATE ", b"DROP ", b"INSERT ", b"LOCK ", b"USE ", b"-- Table structure", b"-- Dump completed")
HEADER_MAX_BYTES = 1 << 16  # a header is a few hundred bytes; more without the SQL_MODE line is not one
CHUNK = 1 << 20
NAME = re.compile(r"^[A-Za-z0-9_]+$")
CREATE_TABLE = b"CREATE TABLE `"
CREATE_TABLE_NAME = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \($")
GENERATED = b" GENERATED ALWAYS AS ("

LineRewrite = Callable[[bytes], bytes]
GENERATED_COLUMNS = "generated columns (mysqldump writes their values, which a strict server refuses)"


def table_of_create(line: bytes) -> str | None:
    """Return the table a `CREATE TABLE `name` (` line of a dump creates, None for any other line."""
    match = CREATE_TABLE_NAME.match(line.rstrip(b"\n"))
    return match.group(1).decode().replace("``", "`") if match else None


def strict_modes(modes: str) -> str:
    """Given a comma-separated SQL mode list, return it with STRICT_ALL_TABLES added (once)."""
    chosen = [mode for mode in modes.split(",") if mode]
    return ",".join(chosen if STRICT_MODE in chosen else [*chosen, STRICT_MODE])


def plain_name(name: str) -> str:
    """Return `name` (a character set or collation) if it is a plain name. Raise ValueError otherwise."""
    if not NAME.match(name):
        raise ValueError(f"unexpected character set or collation name: {name!r}")
    return name


def alter_database_line(character_set: str, collation: str) -> bytes:
    """Return the statement giving the client's current database `character_set` and `collation`. Raise
    ValueError if either is not a plain name."""
    return f"ALTER DATABASE CHARACTER SET {plain_name(character_set)} COLLATE {plain_name(collation)};\n".encode()


def ends_header(line: bytes) -> bool:
    """Return whether `line` is past mysqldump's header (a statement or a section comment)."""
    return line.startswith(HEADER_ENDS)


def lines(data: bytes) -> list[bytes]:
    """Return `data` split after each newline (only "\\n": mysqldump escapes the others in values)."""
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def rows_mode_line(modes: str, generated: bool) -> bytes:
    """Return the statement setting the SQL mode a table's rows are inserted under: `modes` (the header's,
    strict) unless the table has generated columns, then `modes` without STRICT_ALL_TABLES."""
    chosen = [mode for mode in modes.split(",") if mode and not (generated and mode == STRICT_MODE)]
    return f"/*!40101 SET SQL_MODE='{','.join(chosen)}' */;\n".encode()


class StrictDumpEditor:
    """The edits of a dump (see the module docstring) as a push parser: `edit(data)` takes the next bytes and
    returns the edited bytes of the complete lines so far; `end()` returns the rest. With `require_header`, a
    header without mysqldump's SQL_MODE line raises IntegrityError (an unknown mysqldump: the restore would
    not be strict); otherwise such a stream passes unedited. The rows of tables with generated columns and of
    the tables in `relax` (name -> why) are inserted without strict mode; `relaxed` tells which, and why."""

    def __init__(
        self,
        injected: bytes = b"",
        rewrite: LineRewrite | None = None,
        require_header: bool = True,
        relax: Mapping[str, str] | None = None,
    ) -> None:
        self._injected, self._rewrite, self._require_header = injected, rewrite, require_header
        self._relax = dict(relax or {})
        self.relaxed: dict[str, str] = {}
        self._pending = b""
        self._in_header, self._header_bytes = True, 0
        self._modes: str | None = None  # the header's modes, once seen
        self._in_create, self._table = False, ""

    def edit(self, data: bytes) -> bytes:
        """Return the edited form of the complete lines in what was given so far."""
        buffer = self._pending + data
        cut = buffer.rfind(b"\n") + 1
        complete, self._pending = buffer[:cut], buffer[cut:]
        if self._in_header and len(self._pending) > HEADER_MAX_BYTES:
            complete, self._pending = complete + self._pending, b""
        if not (self._in_header or self._in_create) and CREATE_TABLE not in complete:
            return complete
        return b"".join(self._line(line) for line in lines(complete))

    def end(self) -> bytes:
        """Return the edited rest (a last line without a newline). A stream that ended inside the header is
        not judged here (the dump tool failed, and says why): see `header_seen`."""
        rest, self._pending = self._pending, b""
        return self._line(rest) if rest and not self._in_header else rest

    @property
    def header_seen(self) -> bool:
        """Whether mysqldump's SQL_MODE header line was found (and made strict)."""
        return self._modes is not None

    def _line(self, line: bytes) -> bytes:
        if self._in_header:
            return self._header_line(line)
        if self._in_create or line.startswith(CREATE_TABLE):
            return self._create_line(line)
        return line

    def _header_line(self, line: bytes) -> bytes:
        self._header_bytes += len(line)
        match = HEADER_SQL_MODE.match(line)
        if match is not None:
            self._in_header = False
            self._modes = strict_modes(match.group(2).decode())
            return match.group(1) + self._modes.encode() + match.group(3) + b"\n" + self._injected
        if ends_header(line) or self._header_bytes > HEADER_MAX_BYTES:
            self._header_done(line)
            return self._line(line)
        return line

    def _header_done(self, line: bytes) -> None:
        self._in_header = False
        if self._require_header:
            raise IntegrityError(
                "mysqldump's header has no SQL_MODE line to make the restore strict (an unknown mysqldump?): "
                f"stopped at {line[:80]!r}"
            )

    def _create_line(self, line: bytes) -> bytes:
        if not self._in_create:
            self._in_create, self._table = True, table_of_create(line) or ""
        if GENERATED in line:
            self.relaxed[self._table] = GENERATED_COLUMNS
        edited = self._rewrite(line) if self._rewrite is not None else line
        if line.startswith(b")") and line.rstrip().endswith(b";"):
            self._in_create = False
            if self._table in self._relax:
                self.relaxed.setdefault(self._table, self._relax[self._table])
            if self._modes is not None:
                edited += rows_mode_line(self._modes, self._table in self.relaxed)
        return edited


class DumpFilter(io.RawIOBase):
    """A readable stream of mysqldump's output with the edits of a StrictDumpEditor made to it."""

    def __init__(
        self,
        source: IO[bytes],
        injected: bytes = b"",
        rewrite: LineRewrite | None = None,
        relax: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._editor = StrictDumpEditor(injected, rewrite, relax=relax)
        self._pending = memoryview(b"")
        self._ended = False

    def check(self) -> None:
        """Raise IntegrityError if the whole dump was read and had no SQL_MODE header line to make strict."""
        if not self._editor.header_seen:
            raise IntegrityError(
                "mysqldump's output has no SQL_MODE header line to make the restore strict (an unknown mysqldump?)"
            )

    @property
    def relaxed(self) -> dict[str, str]:
        """The tables whose rows the dump inserts without strict mode, and why."""
        return dict(self._editor.relaxed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._ended:
            read = getattr(self._source, "read1", self._source.read)
            chunk = bytes(read(CHUNK))
            if chunk:
                self._pending = memoryview(self._editor.edit(chunk))
            else:
                self._pending, self._ended = memoryview(self._editor.end()), True
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]  # a view: no copy of the rest
        return size


class StrictDumpWriter:
    """A writer that passes a dump on to `target` with the edits of a StrictDumpEditor (for dumps stored
    before the engine made them at backup time; edits already made are kept as they are). Call `finish()`
    after the last write."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self._editor = StrictDumpEditor(require_header=False)

    def write(self, data: bytes) -> int:
        self._target.write(self._editor.edit(bytes(data)))
        return len(data)

    def finish(self) -> None:
        """Write what is still held back (a last line without a newline)."""
        self._target.write(self._editor.end())
