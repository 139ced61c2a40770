"""File names as bytes: a reversible printable escaping, and restic's own exclude-pattern matching.

A POSIX file name is any bytes but "/" and NUL; it need not be UTF-8 and may hold newlines. The file-tree
engine keeps names as bytes from the walk to the restore, and shows them (fingerprint items, logs, the stored
walk) through `escape_name`: UTF-8 text stays as it is, a backslash is doubled, and every byte that is not
printable UTF-8 (an invalid byte, a newline, a control character) becomes `\\xHH`. `unescape_name` gives the
exact bytes back.

`excluded` decides what `restic backup --exclude` leaves out exactly as restic 0.14 does (internal/filter),
so the walk recorded beside a snapshot holds what restic stored: a pattern is cleaned and split at "/", each
part is matched against one path component with Go's `filepath.Match` (`*`, `?`, `[...]` with `^` for
negation, `\\` escapes; never across "/"), `**` spans any number of components, a pattern not starting with
"/" may match at any depth, and a later pattern starting with "!" takes back what earlier ones excluded.
"""

from __future__ import annotations

import functools
import posixpath
import re

ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def escape_name(raw: bytes) -> str:
    """Given a path or name as bytes, return it printable and reversible (see the module docstring)."""
    try:
        text = raw.decode("utf-8")
        if text.isprintable() and "\\" not in text:
            return text
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")
    parts: list[str] = []
    for character in text:
        if character == "\\":
            parts.append("\\\\")
        elif character.isprintable():
            parts.append(character)
        else:
            parts.extend(f"\\x{byte:02x}" for byte in character.encode("utf-8", "surrogateescape"))
    return "".join(parts)


def unescape_name(text: str) -> bytes:
    """Given the output of `escape_name`, return the original bytes."""
    result = bytearray()
    position = 0
    for match in ESCAPE.finditer(text):
        result += text[position : match.start()].encode("utf-8")
        token = match.group(1)
        result += b"\\" if token == "\\" else bytes([int(token[1:], 16)])
        position = match.end()
    result += text[position:].encode("utf-8")
    return bytes(result)


@functools.lru_cache(maxsize=1024)
def _component_regex(part: str) -> re.Pattern[str] | None:
    """Translate one pattern component (Go's filepath.Match syntax) into a regular expression; None for a
    malformed one, which matches nothing (restic refuses to start with it)."""
    out: list[str] = []
    index = 0
    while index < len(part):
        character = part[index]
        index += 1
        if character == "*":
            out.append(".*")
        elif character == "?":
            out.append(".")
        elif character == "\\":
            if index >= len(part):
                return None
            out.append(re.escape(part[index]))
            index += 1
        elif character == "[":
            translated, index = _character_class(part, index)
            if translated is None:
                return None
            out.append(translated)
        else:
            out.append(re.escape(character))
    return re.compile("".join(out), re.DOTALL)


def _character_class(part: str, index: int) -> tuple[str | None, int]:
    """Translate the class starting after "[" at `index`; return it and the index after its "]"."""
    negated = index < len(part) and part[index] == "^"
    index += negated
    ranges: list[str] = []
    while True:
        if index >= len(part):
            return None, index
        if part[index] == "]" and ranges:
            return ("[^" if negated else "[") + "".join(ranges) + "]", index + 1
        low, index = _class_character(part, index)
        if low is None:
            return None, index
        if index < len(part) and part[index] == "-":
            high, index = _class_character(part, index + 1)
            if high is None or high < low:
                return None, index
            ranges.append(f"{re.escape(low)}-{re.escape(high)}")
        else:
            ranges.append(re.escape(low))


def _class_character(part: str, index: int) -> tuple[str | None, int]:
    if index >= len(part) or part[index] in "-]":
        return None, index
    if part[index] == "\\":
        index += 1
        if index >= len(part):
            return None, index
    return part[index], index + 1


def _split(path: str) -> list[str]:
    parts = path.split("/")
    if parts[0] == "":
        parts[0] = "/"
    return parts


@functools.lru_cache(maxsize=256)
def _pattern_parts(pattern: str) -> tuple[bool, tuple[str, ...]]:
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    cleaned = posixpath.normpath(body) if body else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return negated, tuple(_split(cleaned))


def _part_matches(pattern: str, component: str) -> bool:
    if not any(character in pattern for character in "\\[]*?"):
        return pattern == component
    regex = _component_regex(pattern)
    return regex is not None and regex.fullmatch(component) is not None


def _match(patterns: list[str], components: list[str]) -> bool:
    """restic's filter.match: does the pattern (components, "**" expanded) match the path's components?"""
    if "**" in patterns:
        position = patterns.index("**")
        for stars in range(len(components) - len(patterns) + 2):
            expanded = patterns[:position] + ["*"] * stars + patterns[position + 1 :]
            if _match(expanded, components):
                return True
        return False
    if not patterns:
        return not components
    if len(patterns) > len(components):
        return False
    low, high = 0, len(components) - len(patterns)
    if patterns[0] == "/":
        high = 0
    elif components[0] == "/":
        low = 1
    for offset in range(high, low - 1, -1):
        if all(_part_matches(patterns[i], components[offset + i]) for i in range(len(patterns))):
            return True
    return False


def invalid_pattern(pattern: str) -> bool:
    """True when restic would refuse `pattern` ("invalid pattern(s) provided"): a malformed `[...]` class or
    a trailing backslash in one of its parts."""
    _, parts = _pattern_parts(pattern)
    return any(_component_regex(part) is None for part in parts if part != "**")


def excluded(path: bytes, patterns: list[str]) -> bool:
    """True when restic would exclude the absolute `path` with these `--exclude` patterns (the last matching
    pattern decides; one starting with "!" includes)."""
    if not patterns:
        return False
    components = _split(path.decode("utf-8", "surrogateescape"))
    result = False
    for pattern in patterns:
        negated, parts = _pattern_parts(pattern)
        if _match(list(parts), components):
            result = not negated
    return result
