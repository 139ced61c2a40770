"""File names as bytes: the reversible escaping and restic's exclude-pattern rules."""

from __future__ import annotations

import pytest

from backup_pipelines.file_names import escape_name, excluded, invalid_pattern, unescape_name

NAMES = [
    b"plain.txt",
    b"latin1-\xe9\xff.bin",
    b"new\nline",
    b"-dash",
    b"glob*?[.txt",
    b"back\\slash \\x41",
    "unicode ✓ 日本".encode(),
    b"\x7f\x00\x01",
    "line\u2028separator".encode(),
]


@pytest.mark.parametrize("name", NAMES)
def test_escaped_names_are_printable_and_give_the_same_bytes_back(name: bytes) -> None:
    escaped = escape_name(name)
    assert escaped.isprintable() and unescape_name(escaped) == name


def test_a_literal_backslash_escape_is_not_confused_with_an_escaped_byte() -> None:
    assert escape_name(b"\\xe9") != escape_name(b"\xe9")
    assert escape_name(b"latin1-\xe9") == "latin1-\\xe9"


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        (b"/srv/tree/a.tmp", ["*.tmp"], True),
        (b"/srv/tree/a.tmpx", ["*.tmp"], False),
        (b"/srv/tree/sub/a.txt", ["tree/*.txt"], False),  # "*" never crosses "/"
        (b"/srv/tree/a.txt", ["tree/*.txt"], True),  # a relative pattern matches at any depth
        (b"/srv/tree/a.txt", ["/tree/*.txt"], False),  # an absolute one only from the root
        (b"/srv/tree/sub/deep/a.txt", ["tree/**/a.txt"], True),
        (b"/srv/tree/-dash", ["[^a-z]dash"], True),
        (b"/srv/tree/glob*?[.txt", ["glob\\*\\?\\[.txt"], True),
        (b"/srv/tree/globX?[.txt", ["glob\\*\\?\\[.txt"], False),
        (b"/srv/tree/new\nline.txt", ["*.txt", "!new*"], False),  # a later "!" pattern takes it back
        (b"/srv/tree/glob.txt", ["*.txt", "!new*"], True),
        (b"/srv/tree/latin1-\xe9.bin", ["latin1-?.bin"], True),  # "?" is one (invalid) byte, as in Go
        (b"/srv/tree/cache", ["cache"], True),
        (b"/srv/tree/a[", ["a["], False),  # a malformed pattern matches nothing
    ],
)
def test_exclude_patterns_follow_restic(path: bytes, patterns: list[str], expected: bool) -> None:
    assert excluded(path, patterns) is expected


def test_malformed_patterns_are_found_as_restic_refuses_them() -> None:
    assert invalid_pattern("a[") and invalid_pattern("x/[]") and invalid_pattern("trailing\\")
    assert not invalid_pattern("glob\\*") and not invalid_pattern("**/[^a-z]*.tmp") and not invalid_pattern("!keep")
