"""Read an mbstream (xbstream) archive on stdin to its end and say whether it is whole; standard library only,
so it runs as its own small process (`python mbstream_check.py`) beside the backup, reading the stream as it
is written, and again in verify.

The format, chunk after chunk: magic `XBSTCK01`, flags (1 byte), type (1 byte: `P` payload, `E` end of a file),
path length (4 bytes, little-endian) and path; a payload chunk then has its length (8), its offset in the file
(8), the CRC-32 of the payload (4) and the payload. The archive is whole when every chunk is complete and its
CRC matches, every file's chunks follow on at the right offsets, every file has its end chunk, and the files
mariabackup writes only after the copy succeeded (`xtrabackup_checkpoints`, `backup-my.cnf`,
`xtrabackup_info`) are there. Prints `files: N`, `bytes: N`, `complete: yes|no (why)`.
"""

from __future__ import annotations

import struct
import sys
import zlib
from typing import BinaryIO

MAGIC = b"XBSTCK01"
FINAL_FILES = ("xtrabackup_checkpoints", "backup-my.cnf", "xtrabackup_info")
BLOCK = 1 << 20


class Incomplete(Exception):
    pass


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise Incomplete(f"the stream ends inside a chunk ({len(data)} of {size} bytes)")
    return data


def check(stream: BinaryIO) -> tuple[int, int]:
    """Read the archive to its end; return (files, payload bytes). Raise Incomplete saying what is wrong."""
    offsets: dict[str, int] = {}
    ended: set[str] = set()
    total = 0
    while True:
        magic = stream.read(len(MAGIC))
        if not magic:
            break
        if magic != MAGIC:
            raise Incomplete(f"no chunk magic at byte {total}: not an mbstream archive, or damaged")
        _flags, kind, length = struct.unpack("<BcI", read_exactly(stream, 6))
        path = read_exactly(stream, length).decode("utf-8", "replace")
        if kind == b"E":
            ended.add(path)
            continue
        if kind != b"P":
            raise Incomplete(f"chunk type {kind!r} of {path} is not one this check knows")
        size, offset, checksum = struct.unpack("<QQI", read_exactly(stream, 20))
        if offset != offsets.get(path, 0):
            raise Incomplete(f"{path}: a chunk at offset {offset}, expected {offsets.get(path, 0)}")
        crc, left = 0, size
        while left:
            block = read_exactly(stream, min(left, BLOCK))
            crc = zlib.crc32(block, crc)
            left -= len(block)
        if crc != checksum:
            raise Incomplete(f"{path}: CRC-32 mismatch at offset {offset}")
        offsets[path] = offset + size
        total += size
    unended = sorted(set(offsets) - ended)
    if unended:
        raise Incomplete(f"{len(unended)} file(s) without their end chunk, e.g. {unended[0]}")
    missing = [name for name in FINAL_FILES if name not in ended]
    if missing:
        raise Incomplete(f"{', '.join(missing)} missing: mariabackup did not finish the copy")
    return len(ended), total


def main() -> int:
    try:
        files, total = check(sys.stdin.buffer)
    except Incomplete as problem:
        print(f"complete: no ({problem})")
        return 0
    print(f"files: {files}\nbytes: {total}\ncomplete: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
