"""The MySQL engine's pure parts: the dump stream edits (strict mode, collation, column rewrites), ENUM member
parsing and rewriting, sample ranges, and the CREATE DATABASE statement."""

from __future__ import annotations

import io

import pytest

from backup_pipelines.engines.mysql import create_database_sql
from backup_pipelines.engines.mysql_enums import ColumnRewrite, LostColumn, enum_members, rewrite_column_line
from backup_pipelines.engines.mysql_fingerprint import normalise_definition, sample_ranges
from backup_pipelines.engines.mysql_stream import (
    GENERATED_COLUMNS,
    DumpFilter,
    StrictDumpEditor,
    StrictDumpWriter,
    alter_database_line,
    strict_modes,
)
from backup_pipelines.errors import IntegrityError
from backup_pipelines.manifest import TableSample

HEADER = (
    b"-- MariaDB dump 10.19\n"
    b"/*!40101 SET NAMES utf8mb4 */;\n"
    b"/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n"
    b"/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;\n\n"
)
PLAIN_TABLE = b"CREATE TABLE `plain` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB;\n"
GENERATED_TABLE = (
    b"CREATE TABLE `gen` (\n  `a` int(11) DEFAULT NULL,\n  `b` int(11) GENERATED ALWAYS AS (`a` + 1) VIRTUAL\n"
    b") ENGINE=InnoDB;\n"
)
ROWS = b"INSERT INTO `plain` VALUES\n(1),\n(2);\n"
DUMP = HEADER + PLAIN_TABLE + ROWS + GENERATED_TABLE + b"INSERT INTO `gen` VALUES (1,2);\n-- Dump completed\n"
STRICT = b"/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES' */;\n"
RELAXED = b"/*!40101 SET SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n"
ALTER = b"ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n"


def filtered(dump: bytes, injected: bytes = b"") -> bytes:
    stream = DumpFilter(io.BufferedReader(io.BytesIO(dump)), injected)
    output = stream.read()
    stream.check()
    return output


def test_strict_modes_adds_strict_all_tables_once() -> None:
    assert strict_modes("NO_AUTO_VALUE_ON_ZERO") == "NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES"
    assert strict_modes("STRICT_ALL_TABLES,ANSI") == "STRICT_ALL_TABLES,ANSI"
    assert strict_modes("") == "STRICT_ALL_TABLES"


def test_the_dump_filter_makes_the_header_strict_adds_the_collation_and_relaxes_only_generated_tables() -> None:
    made_strict = b"SQL_MODE='NO_AUTO_VALUE_ON_ZERO,STRICT_ALL_TABLES' */;\n" + ALTER
    expected = HEADER.replace(b"SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n", made_strict)
    expected += PLAIN_TABLE + STRICT + ROWS + GENERATED_TABLE + RELAXED
    expected += b"INSERT INTO `gen` VALUES (1,2);\n-- Dump completed\n"
    assert filtered(DUMP, ALTER) == expected


def test_the_edits_do_not_depend_on_where_the_chunks_end() -> None:
    whole = StrictDumpEditor(ALTER)
    expected = whole.edit(DUMP) + whole.end()
    bytewise = StrictDumpEditor(ALTER)
    edited = b"".join(bytewise.edit(DUMP[index : index + 1]) for index in range(len(DUMP))) + bytewise.end()
    assert edited == expected


def test_a_dump_without_the_sql_mode_header_line_is_refused() -> None:
    with pytest.raises(IntegrityError, match="no SQL_MODE line"):
        filtered(b"-- some dump\n" + PLAIN_TABLE)
    with pytest.raises(IntegrityError, match="no SQL_MODE header line"):
        filtered(b"")  # the dump tool failed: the filter says so only when asked


def test_the_restore_side_writer_edits_old_dumps_and_keeps_edited_ones_strict() -> None:
    target = io.BytesIO()
    writer = StrictDumpWriter(target)
    for index in range(0, len(DUMP), 7):
        writer.write(DUMP[index : index + 7])
    writer.finish()
    assert target.getvalue() == filtered(DUMP)
    again = io.BytesIO()
    writer = StrictDumpWriter(again)
    writer.write(filtered(DUMP, ALTER))
    writer.finish()
    assert again.getvalue().count(b"STRICT_ALL_TABLES,STRICT_ALL_TABLES") == 0
    assert ALTER in again.getvalue()


def test_a_headerless_stream_passes_the_restore_side_writer_unchanged() -> None:
    target = io.BytesIO()
    writer = StrictDumpWriter(target)
    writer.write(b"select 1;\nselect 2")
    writer.finish()
    assert target.getvalue() == b"select 1;\nselect 2"


def test_alter_database_line_accepts_only_plain_names() -> None:
    assert alter_database_line("utf8mb4", "utf8mb4_unicode_ci") == ALTER
    with pytest.raises(ValueError):
        alter_database_line("utf8mb4; drop database x", "utf8mb4_bin")


def test_enum_members_unquotes_as_show_create_table_writes_them() -> None:
    assert enum_members("enum('a','it''s','back\\\\slash','x,y?')") == ["a", "it's", "back\\slash", "x,y?"]
    assert enum_members("set('ünï ?','b')") == ["ünï ?", "b"]
    with pytest.raises(ValueError):
        enum_members("varchar(10)")


def lost(data_type: str, default: str | None) -> LostColumn:
    written = f"{data_type}('a','ünï ?','it''s')"
    return LostColumn("picks", "mood", written, default, ["a", "ünï 🚀", "it's"], data_type)


def test_a_lost_enum_column_line_gets_its_real_members_and_default() -> None:
    line = "  `mood` enum('a','ünï ?','it''s') NOT NULL DEFAULT 'ünï ?',\n".encode()
    rewritten = rewrite_column_line(line, lost("enum", "'ünï ?'"))
    assert rewritten == "  `mood` enum('a','ünï 🚀','it''s') NOT NULL DEFAULT 'ünï 🚀',\n".encode()
    assert rewrite_column_line(b"  `other` int(11),\n", lost("enum", None)) == b"  `other` int(11),\n"


def test_a_lost_set_default_maps_each_member() -> None:
    line = "  `mood` set('a','ünï ?','it''s') DEFAULT 'a,ünï ?'\n".encode()
    rewritten = rewrite_column_line(line, lost("set", "'a,ünï ?'"))
    assert rewritten == "  `mood` set('a','ünï 🚀','it''s') DEFAULT 'a,ünï 🚀'\n".encode()


def test_the_column_rewrite_touches_only_the_named_table() -> None:
    rewrite = ColumnRewrite([lost("enum", None)])
    line = "  `mood` enum('a','ünï ?','it''s') DEFAULT NULL,\n".encode()
    assert rewrite(b"CREATE TABLE `other` (\n") == b"CREATE TABLE `other` (\n"
    assert rewrite(line) == line
    assert rewrite(b") ENGINE=InnoDB;\n") == b") ENGINE=InnoDB;\n"
    rewrite(b"CREATE TABLE `picks` (\n")
    assert "ünï 🚀".encode() in rewrite(line)


def test_sample_ranges_spread_over_the_key_span() -> None:
    sample = TableSample(key="id", ranges=4, range_fraction=0.1)
    assert sample_ranges(0, 256, sample) == [[0, 5], [64, 69], [128, 133], [192, 197]]
    assert sample_ranges(None, None, sample) == []
    assert sample_ranges(5, 6, sample) == [[5, 5], [6, 6]]


def test_definitions_are_normalised_for_another_database_name() -> None:
    text = "CREATE TABLE `t` (..) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4 select `shop`.`t`.`a`"
    assert normalise_definition(text, "shop") == (
        "CREATE TABLE `t` (..) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 select `<database>`.`t`.`a`"
    )


def test_the_restore_target_is_created_with_the_recorded_collation() -> None:
    stats = {"database_character_set": "utf8mb4", "database_collation": "utf8mb4_unicode_ci"}
    assert create_database_sql("x", stats) == "create database `x` character set utf8mb4 collate utf8mb4_unicode_ci"
    assert create_database_sql("x", {}) == "create database `x` character set utf8mb4"


def test_the_editor_relaxes_the_tables_it_is_told_of_and_says_why() -> None:
    editor = StrictDumpEditor(relax={"plain": "ENUM error values", "absent": "not in the dump"})
    edited = editor.edit(DUMP) + editor.end()
    assert edited.count(RELAXED) == 2 and STRICT not in edited
    assert editor.relaxed == {"plain": "ENUM error values", "gen": GENERATED_COLUMNS}
