"""Hostile inputs made on the spot (never stored) and the memory figures the tests bound."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path


def bomb_zip(path: Path, entries: int, entry_bytes: int) -> None:
    """A zip of ``entries`` files of ``entry_bytes`` zeros each (one deflate stream, reused)."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    data = b"".join(z.compress(chunk) for _ in range(entry_bytes >> 20)) + z.flush()
    crc = 0
    for _ in range(entry_bytes >> 20):
        crc = zlib.crc32(chunk, crc)
    local, central = io.BytesIO(), io.BytesIO()
    for i in range(entries):
        name = f"zeros_{i:04d}.png".encode()
        offset = local.tell()
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), entry_bytes,
                                len(name), 0) + name + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data),
                                  entry_bytes, len(name), 0, 0, 0, 0, 0, offset) + name)
    cd = central.getvalue()
    path.write_bytes(local.getvalue() + cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, len(cd),
                                                         local.tell(), 0))


def anon_rss_mb(pid: int) -> float:
    """A process's own anonymous resident memory (MiB, ``RssAnon`` in /proc): its heap and
    private mappings, without shared memory or mapped files."""
    return int(open(f"/proc/{pid}/status").read().split("RssAnon:")[1].split()[0]) / 1024


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (MiB), from /proc."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = open(f"/proc/{p}/status").read()
            total += int(status.split("VmRSS:")[1].split()[0]) / 1024
            for task in os.listdir(f"/proc/{p}/task"):
                stack += [int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split()]
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
    return total
