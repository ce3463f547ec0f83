"""Batch face swap: every image of a folder or zip, one result per file, errors listed, never fatal.

File names from a zip never become paths as they are: each output is written under the
output folder as ``<index>_<safe stem>.<format>`` (only letters, digits, ``-``, ``_`` and
``.`` kept), and ``batch_report.json`` maps every input name to its output or its error.
"""

from __future__ import annotations

import asyncio
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from client.errors import FaceSwapError
from client.library import AsyncFaceSwapClient

MAX_ENTRY_BYTES = 100 * 1024 * 1024


@dataclass
class BatchItem:
    name: str
    output: str | None = None
    faces_detected: int = 0
    faces_swapped: int = 0
    error: str | None = None


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


def iter_inputs(source: Path) -> Iterator[tuple[str, bytes | Exception]]:
    """(name, bytes or the error reading it) for each file of a folder (sorted) or zip."""
    if source.is_dir():
        for p in sorted(q for q in source.rglob("*") if q.is_file()):
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
        for info in zf.infolist():
            if info.is_dir():
                continue
            if info.file_size > MAX_ENTRY_BYTES:
                yield info.filename, ValueError(f"entry larger than {MAX_ENTRY_BYTES} bytes")
                continue
            try:
                yield info.filename, zf.read(info)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                yield info.filename, exc


async def swap_batch(client: AsyncFaceSwapClient, source_latent: np.ndarray, source: Path, out_dir: Path,
                     in_flight: int = 4, progress: Callable[[int, int], None] | None = None,
                     cancelled: Callable[[], bool] | None = None, **opts) -> BatchReport:
    """Swap every image of ``source`` (folder or zip) into ``out_dir``; returns the report
    (also written to ``out_dir/batch_report.json``). A bad file is an item with an error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = list(iter_inputs(source))
    report = BatchReport([BatchItem(name) for name, _ in entries])
    sem = asyncio.Semaphore(max(in_flight, 1))
    done = 0

    async def one(i: int, data: bytes | Exception) -> None:
        nonlocal done
        item = report.items[i]
        try:
            if cancelled and cancelled():
                raise asyncio.CancelledError
            if isinstance(data, Exception):
                raise FaceSwapError(f"cannot read: {data}")
            async with sem:
                res = await client.swap(data, source_latent, **opts)
            path = out_dir / f"{i:04d}_{safe_stem(item.name)}.{'jpg' if res.format == 'jpeg' else res.format}"
            path.write_bytes(res.image)
            item.output, item.faces_detected, item.faces_swapped = path.name, len(res.faces), res.faces_swapped
            report.stand_in_models = res.stand_in_models
        except FaceSwapError as exc:
            item.error = str(exc)
        finally:
            done += 1
            if progress:
                progress(done, len(entries))

    await asyncio.gather(*(one(i, data) for i, (_, data) in enumerate(entries)))
    (out_dir / "batch_report.json").write_text(report.to_json())
    return report
