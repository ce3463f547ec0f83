"""Batch face swap: every image of a folder or zip, one result per file, errors listed, never fatal.

File names from a zip never become paths as they are: each output is written under the
output folder as ``<index>_<safe stem>.<format>`` (only letters, digits, ``-``, ``_`` and
``.`` kept), and ``batch_report.json`` maps every input name to its output or its error.
"""

from __future__ import annotations

import asyncio
import json
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from client.core import SwapResult
from client.errors import FaceSwapError
from client.library import AsyncFaceSwapClient
from media.formats import HEAD, sniff

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what a zip may unpack to (defaults: gateway settings ``ARCHIVE_*``).

    Attributes:
        max_entries: files in the archive (directories not counted).
        max_total_bytes: uncompressed bytes of all entries together.
        max_entry_bytes: uncompressed bytes of one entry (larger ones are refused in the report).
        max_ratio: uncompressed / compressed size of one entry (zip bombs compress ~1000:1;
            photos barely compress, so 100 leaves room for any real image).
    """

    max_entries: int = 1000
    max_total_bytes: int = 2 << 30
    max_entry_bytes: int = 100 << 20
    max_ratio: float = 100.0


class ArchiveLimitError(ValueError):
    """The archive as a whole passes a limit; ``code`` names it (``archive_too_many_entries``,
    ``archive_too_large``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _EntryRefused(Exception):
    pass


@dataclass
class BatchItem:
    """One input file: its output or error, and per swapped face its quality figures
    (``face``, ``identity_transfer``, ``identity_leakage``; see ``pipeline.quality``)."""

    name: str
    output: str | None = None
    faces_detected: int = 0
    faces_swapped: int = 0
    error: str | None = None
    face_quality: list[dict] | None = None


@dataclass
class BatchReport:
    items: list[BatchItem] = field(default_factory=list)
    stand_in_models: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for i in self.items if i.error)

    def to_json(self) -> str:
        return json.dumps({"items": [asdict(i) for i in self.items], "failed": self.failed,
                           "stand_in_models": self.stand_in_models}, indent=2, ensure_ascii=False)


def safe_stem(name: str) -> str:
    """A file-system-safe stem from any client-supplied name (no folders, no dots in front)."""
    stem = Path(name.replace("\\", "/")).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return (stem or "image")[:80]


def iter_inputs(source: Path, limits: ArchiveLimits = ArchiveLimits(),
                cancelled: Callable[[], bool] | None = None) -> Iterator[tuple[str, bytes | Exception]]:
    """(name, bytes or why it was refused) for each file of a folder (sorted) or zip, read one at
    a time: memory holds one entry, never the archive.

    Zip entries are refused one by one (with the reason in the item) when they are links,
    devices or other special files, nested archives, larger than ``max_entry_bytes`` or
    compressed more than ``max_ratio`` : 1. The whole archive fails with ArchiveLimitError past
    ``max_entries`` files or ``max_total_bytes`` (checked on the sizes it declares before
    anything is read, and again on the bytes really read).

    Raises:
        ValueError: ``source`` is neither a folder nor a readable zip.
        ArchiveLimitError: a whole-archive limit was passed.
        asyncio.CancelledError: ``cancelled()`` became true (checked between 1 MiB chunks).
    """
    def check_cancel() -> None:
        if cancelled and cancelled():
            raise asyncio.CancelledError

    if source.is_dir():
        for p in sorted(q for q in source.rglob("*") if q.is_file()):
            check_cancel()
            try:
                yield str(p.relative_to(source)), p.read_bytes()
            except OSError as exc:
                yield str(p.relative_to(source)), exc
        return
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{source} is neither a folder nor a readable zip: {exc}") from None
    with zf:
        files = [i for i in zf.infolist() if not i.is_dir()]
        if len(files) > limits.max_entries:
            raise ArchiveLimitError("archive_too_many_entries", f"the archive holds {len(files)} files; the limit "
                                    f"is {limits.max_entries}")
        declared = sum(i.file_size for i in files)
        if declared > limits.max_total_bytes:
            raise ArchiveLimitError("archive_too_large", f"the archive declares {declared} uncompressed bytes; the "
                                    f"limit is {limits.max_total_bytes}")
        total = 0
        for info in files:
            check_cancel()
            try:
                data = _read_entry(zf, info, limits, limits.max_total_bytes - total, check_cancel)
            except _EntryRefused as exc:
                yield info.filename, ValueError(str(exc))
                continue
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, zlib.error) as exc:
                yield info.filename, exc
                continue
            total += len(data)
            yield info.filename, data


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits, budget: int,
                check_cancel: Callable[[], None]) -> bytes:
    """One entry's bytes, read in chunks against the limits (see iter_inputs)."""
    mode = info.external_attr >> 16  # Unix mode where the archiver wrote one (file-type bits may be 0)
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a special file"
        raise _EntryRefused(f"refused: {kind}, not an image")
    if info.file_size > limits.max_entry_bytes:
        raise _EntryRefused(f"refused: {info.file_size} bytes, more than the {limits.max_entry_bytes} allowed per file")
    if info.file_size > max(info.compress_size, 1) * limits.max_ratio:
        raise _EntryRefused(f"refused: compressed {info.file_size / max(info.compress_size, 1):.0f}:1, more than "
                            f"{limits.max_ratio:.0f}:1 (a zip bomb?)")
    buf = bytearray()
    with zf.open(info) as f:
        while chunk := f.read(CHUNK):
            check_cancel()
            buf += chunk
            if len(buf) > budget:
                raise ArchiveLimitError("archive_too_large", "the archive unpacks to more than "
                                        f"{limits.max_total_bytes} bytes")
            if len(buf) > limits.max_entry_bytes:
                raise _EntryRefused(f"refused: more than the {limits.max_entry_bytes} bytes allowed per file")
            if len(buf) > max(info.compress_size, 1) * limits.max_ratio:
                raise _EntryRefused(f"refused: compressed more than {limits.max_ratio:.0f}:1 (a zip bomb?)")
    nested = sniff(bytes(buf[:HEAD]))
    if nested is not None and nested.kind == "archive":
        raise _EntryRefused("refused: an archive inside the archive")
    return bytes(buf)


class OutputMarks(Protocol):
    """What marks a batch's outputs (``gateway.core.marking.Marker``): a watermark payload per
    swap (``(result id, 16 hex digits)``, embedded by Triton before its one encode) and the
    marked bytes of a swap that swapped a face (blocking; run in a thread)."""

    def payload(self) -> tuple[int | None, str]: ...

    def swapped_image(self, res: SwapResult, target: bytes | None, result_id: int | None, kind: str = "image",
                      quality: int = 95) -> bytes: ...


#: The error code that starts a batch item's ``error`` when the content gate refused its image.
CONTENT_REFUSED = "content_refused"


async def swap_batch(client: AsyncFaceSwapClient, source_latent: np.ndarray, source: Path, out_dir: Path,
                     in_flight: int = 4, progress: Callable[[int, int], None] | None = None,
                     cancelled: Callable[[], bool] | None = None, limits: ArchiveLimits = ArchiveLimits(),
                     marks: OutputMarks | None = None,
                     source_embedding: np.ndarray | None = None, **opts) -> BatchReport:
    """Swap every image of ``source`` (folder or zip) into ``out_dir``; returns the report
    (also written to ``out_dir/batch_report.json``). A bad or refused file is an item with an
    error. Entries are read one at a time, at most ``in_flight`` held at once. ``marks`` (the
    gateway's provenance marks, ``OutputMarks``) gives each swap its watermark payload and turns
    each output with a swapped face into what is written. ``source_embedding`` (the source's normed ArcFace
    embedding) gives each item's quality figures their identity transfer (else null).

    Raises:
        ArchiveLimitError: the archive passes a whole-archive limit (see iter_inputs).
        asyncio.CancelledError: ``cancelled()`` became true.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    sem = asyncio.Semaphore(max(in_flight, 1))
    total = _count(source)
    done = 0

    async def one(item: BatchItem, i: int, data: bytes | Exception) -> None:
        nonlocal done
        try:
            if isinstance(data, Exception):
                raise FaceSwapError(f"cannot read: {data}" if not str(data).startswith("refused") else str(data))
            rid, watermark = marks.payload() if marks is not None else (None, "")
            res = await client.swap(data, source_latent, source_embedding=source_embedding, watermark=watermark,
                                    **opts)
            if res.content_refused:  # nothing swapped, nothing written for this item
                item.error = (f"{CONTENT_REFUSED}: refused by the content policy {res.content_policy!r}; this service "
                              "does not swap faces into intimate imagery")
                return
            path = out_dir / f"{i:04d}_{safe_stem(item.name)}.{'jpg' if res.format == 'jpeg' else res.format}"
            marked = marks is not None and res.faces_swapped > 0  # nothing swapped: nothing to declare
            path.write_bytes(await asyncio.to_thread(marks.swapped_image, res, data, rid, "batch",
                                                     int(opts.get("quality") or 95)) if marked else res.image)
            item.output, item.faces_detected, item.faces_swapped = path.name, len(res.faces), res.faces_swapped
            item.face_quality = None if res.face_quality is None else [asdict(q) for q in res.face_quality]
            report.stand_in_models = res.stand_in_models
        except FaceSwapError as exc:
            item.error = str(exc)
        finally:
            done += 1
            sem.release()
            if progress:
                progress(done, total)

    tasks = []
    try:
        for i, (name, data) in enumerate(iter_inputs(source, limits, cancelled)):
            await sem.acquire()  # at most in_flight entries in memory and in work
            if cancelled and cancelled():
                raise asyncio.CancelledError
            item = BatchItem(name)
            report.items.append(item)
            tasks.append(asyncio.ensure_future(one(item, i, data)))
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    (out_dir / "batch_report.json").write_text(report.to_json())
    return report


def _count(source: Path) -> int:
    """Files to process (for progress): from the folder or the zip's directory."""
    if source.is_dir():
        return sum(1 for q in source.rglob("*") if q.is_file())
    try:
        with zipfile.ZipFile(source) as zf:
            return sum(1 for i in zf.infolist() if not i.is_dir())
    except (zipfile.BadZipFile, OSError):
        return 0
