"""ENUM and SET members that mysqldump cannot write: characters outside the Basic Multilingual Plane.

MariaDB builds SHOW CREATE TABLE (which mysqldump copies) and information_schema.COLUMNS.COLUMN_TYPE in its
3-byte system character set, so a member such as 'ünï 🚀' is written 'ünï ?'. A restore creates the column
with the '?' member, and the rows holding the real member cannot be stored. The real members can be read
back: a temporary table made with `CREATE TEMPORARY TABLE .. AS SELECT column .. LIMIT 0` has the column's
real definition, and inserting member numbers (ENUM) or bits (SET) into it and selecting them gives the real
strings. Only columns whose COLUMN_TYPE shows a '?' are examined.

By default such a column fails the backup, naming table and column. A dataset with
`source.preserve_supplementary_enum_members` gets the column definition (and its default) rewritten in the
dump stream with the real members instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from backup_pipelines.engines.mysql_fingerprint import quote_identifier
from backup_pipelines.engines.mysql_stream import table_of_create
from backup_pipelines.errors import UnrepresentableSourceError

SUSPECT_COLUMNS_SQL = (
    "select c.table_name, c.column_name, c.data_type, c.column_type, c.column_default "
    "from information_schema.columns c join information_schema.tables t "
    "on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE' "
    "where c.table_schema = %s and c.data_type in ('enum', 'set') and c.column_type like '%%?%%' "
    "order by c.table_name, c.ordinal_position"
)
ENUM_COLUMNS_SQL = (
    "select c.table_name, c.column_name from information_schema.columns c join information_schema.tables t "
    "on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE' "
    "where c.table_schema = %s and c.data_type = 'enum' order by c.table_name, c.ordinal_position"
)
PROBE_TABLE = "bp_enum_members_probe"
ERROR_VALUE = "ENUM columns holding the error value '' (stored by a non-strict write; a strict server refuses it)"


def enum_members(column_type: str) -> list[str]:
    """Given an ENUM or SET column type as SHOW CREATE TABLE writes it (`enum('a','it''s')`), return its
    members unquoted. Raise ValueError if it is not one."""
    match = re.match(r"^(?:enum|set)\((.*)\)$", column_type, re.DOTALL)
    if match is None:
        raise ValueError(f"not an ENUM or SET type: {column_type!r}")
    members, text, position = [], match.group(1), 0
    while position < len(text):
        if text[position] != "'":
            raise ValueError(f"unexpected text in {column_type!r} at {position}")
        position, member = _quoted(text, position + 1)
        members.append(member)
        position += 1  # the comma after the member (or the end)
    return members


def _quoted(text: str, position: int) -> tuple[int, str]:
    characters = []
    while True:
        character = text[position]
        if character == "'" and text[position + 1 : position + 2] == "'":
            characters.append("'")
            position += 2
        elif character == "'":
            return position + 1, "".join(characters)
        elif character == "\\":
            characters.append(text[position + 1])
            position += 2
        else:
            characters.append(character)
            position += 1


def quote_member(member: str) -> str:
    """Return `member` as a string literal the way SHOW CREATE TABLE writes it."""
    return "'" + member.replace("\\", "\\\\").replace("'", "''") + "'"


def as_written(text: str) -> str:
    """Return `text` as MariaDB's SHOW CREATE TABLE writes it: characters outside the BMP become '?'."""
    return "".join("?" if ord(character) > 0xFFFF else character for character in text)


def outside_bmp(text: str) -> bool:
    """Return whether `text` holds a character outside the Basic Multilingual Plane."""
    return any(ord(character) > 0xFFFF for character in text)


@dataclass(frozen=True)
class LostColumn:
    """An ENUM/SET column whose definition mysqldump writes wrongly: as written and as it really is."""

    table: str
    column: str
    written_type: str
    written_default: str | None
    real_members: list[str]
    data_type: str

    def real_type(self) -> str:
        return f"{self.data_type}({','.join(quote_member(member) for member in self.real_members)})"

    def real_default(self) -> str | None:
        """Return the real default literal, or None when the written default is not a member literal."""
        if self.written_default is None or not self.written_default.startswith("'"):
            return None
        [written] = enum_members(f"enum({self.written_default})")
        by_written = {as_written(member): member for member in self.real_members}
        parts = written.split(",") if self.data_type == "set" else [written]
        return quote_member(",".join(by_written.get(part, part) for part in parts))


def _real_members(cursor: Any, database: str, table: str, column: str, data_type: str, count: int) -> list[str]:
    quoted = quote_identifier(column)
    cursor.execute(f"drop temporary table if exists {PROBE_TABLE}")
    cursor.execute(
        f"create temporary table {PROBE_TABLE} as select {quoted} as member "
        f"from {quote_identifier(database)}.{quote_identifier(table)} limit 0"
    )
    try:
        numbers = [index + 1 if data_type == "enum" else 1 << index for index in range(count)]
        cursor.executemany(f"insert into {PROBE_TABLE} (member) values (%s)", numbers)
        cursor.execute(f"select member from {PROBE_TABLE} order by member + 0")
        return [row[0] for row in cursor.fetchall()]
    finally:
        cursor.execute(f"drop temporary table {PROBE_TABLE}")


def lost_columns(connection: Any, database: str, excluded: set[str]) -> list[LostColumn]:
    """Return the ENUM/SET columns of `database` (outside `excluded` tables) with a member holding a character
    outside the BMP, read through `connection` (not the dump's snapshot: this makes temporary tables)."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute(SUSPECT_COLUMNS_SQL, (database,))
        for table, column, data_type, column_type, default in cursor.fetchall():
            if table in excluded:
                continue
            written = enum_members(column_type)
            real = _real_members(cursor, database, table, column, data_type, len(written))
            if any(outside_bmp(member) for member in real):
                found.append(LostColumn(table, column, column_type, default, real, data_type))
    return found


def refuse(database: str, columns: list[LostColumn]) -> UnrepresentableSourceError:
    """Return the error that fails a backup of `database` because of `columns`, naming each."""
    named = "; ".join(
        f"{database}.{lost.table} column {lost.column}: "
        + ", ".join(repr(member) for member in lost.real_members if outside_bmp(member))
        for lost in columns
    )
    return UnrepresentableSourceError(
        f"mysqldump would write ENUM/SET members holding characters outside the Basic Multilingual Plane as '?' "
        f"and their rows would not restore: {named}. Change the members, or set "
        f"source.preserve_supplementary_enum_members to rewrite those column definitions in the dump."
    )


class ColumnRewrite:
    """A line rewrite for DumpFilter: inside each `CREATE TABLE` of the dump, the definitions of `columns`
    get their real members and default."""

    def __init__(self, columns: list[LostColumn]) -> None:
        self._by_table: dict[str, list[LostColumn]] = {}
        for lost in columns:
            self._by_table.setdefault(lost.table, []).append(lost)
        self._current: list[LostColumn] = []

    def __call__(self, line: bytes) -> bytes:
        table = table_of_create(line)
        if table is not None:
            self._current = self._by_table.get(table, [])
            return line
        if line.startswith(b")"):
            self._current = []
        for lost in self._current:
            line = rewrite_column_line(line, lost)
        return line


def rewrite_column_line(line: bytes, lost: LostColumn) -> bytes:
    """Return a CREATE TABLE line with `lost`'s written type (and lossy default) replaced by the real ones,
    or the line unchanged when it does not define that column."""
    prefix = f"  {quote_identifier(lost.column)} ".encode()
    written = prefix + lost.written_type.encode()
    if not line.startswith(written):
        return line
    rest = line[len(written) :]
    real_default = lost.real_default()
    if real_default is not None and lost.written_default is not None:
        rest = rest.replace(f" DEFAULT {lost.written_default}".encode(), f" DEFAULT {real_default}".encode(), 1)
    return prefix + lost.real_type().encode() + rest


def tables_with_enum_error_values(connection: Any, database: str, excluded: set[str]) -> dict[str, str]:
    """Return the tables of `database` (outside `excluded`) with a row whose ENUM column holds the error value
    '' (member number 0, which only a non-strict write stores), each with that reason: their rows must be
    restored without strict mode, where '' is what they hold. One query per table with ENUM columns, stopping
    at the first such row."""
    with connection.cursor() as cursor:
        cursor.execute(ENUM_COLUMNS_SQL, (database,))
        by_table: dict[str, list[str]] = {}
        for table, column in cursor.fetchall():
            if table not in excluded:
                by_table.setdefault(table, []).append(column)
        found = {}
        for table, columns in by_table.items():
            condition = " or ".join(f"{quote_identifier(column)} = 0" for column in columns)
            cursor.execute(
                f"select 1 from {quote_identifier(database)}.{quote_identifier(table)} where {condition} limit 1"
            )
            if cursor.fetchone() is not None:
                found[table] = ERROR_VALUE
    return found
