"""Download the real insightface models listed in ``repository/models.json``; copy the content
detector out of its Python package.

A model with a ``package`` (the content gate's ``nudenet_320n``: ``320n.onnx`` inside the
installed ``nudenet`` 3.4.2 wheel) is copied from that package, with the same size and
SHA-256 checks; it is never downloaded. For each other model: try each URL (primary, then
mirrors) with retries and exponential backoff; resume a partial ``.part`` file with an HTTP
Range request; check size and SHA-256; rename atomically into place; delete a file that does
not match. Offline, print one line per missing model saying how to provide it.
Nothing is ever downloaded at request time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from pipeline.precision import file_sha256
from repository.layout import MODELS_DIR

log = logging.getLogger(__name__)
MANIFEST = Path(__file__).with_name("models.json")


@dataclass(frozen=True)
class ModelEntry:
    """One row of the manifest: a real model file with its published size and SHA-256."""

    name: str
    file: str
    role: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    #: (distribution, version, file inside the package) for a model shipped in a Python package.
    package: tuple[str, str, str] | None = None


def load_manifest(path: Path = MANIFEST) -> list[ModelEntry]:
    """Parse ``models.json`` into entries (raises ValueError naming a malformed row)."""
    data = json.loads(path.read_text())
    out = []
    for row in data["models"]:
        try:
            pkg = row.get("package")
            out.append(ModelEntry(row["name"], row["file"], row["role"], int(row["size"]), row["sha256"].lower(),
                                  tuple(row["urls"]),
                                  (pkg["name"], pkg["version"], pkg["file"]) if pkg else None))
        except KeyError as exc:
            raise ValueError(f"{path}: model row {row.get('name', '?')} lacks {exc}") from None
    return out


def verify(entry: ModelEntry, path: Path) -> bool:
    """True when ``path`` has the entry's size and SHA-256."""
    return path.is_file() and path.stat().st_size == entry.size and file_sha256(path) == entry.sha256


class DownloadError(RuntimeError):
    """Every URL of a model failed; the message lists why."""


def package_file(entry: ModelEntry) -> Path | None:
    """The model's file inside its installed Python package (``entry.package``), or None when the
    entry has no package or the package is not installed. Not checked: see ``verify``."""
    if entry.package is None:
        return None
    spec = importlib.util.find_spec(entry.package[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.package[2]
    return path if path.is_file() else None


def copy_from_package(entry: ModelEntry, dest_dir: Path = MODELS_DIR) -> Path:
    """Copy a packaged model into ``dest_dir/entry.file`` (size and SHA-256 checked); return its path.

    Raises:
        DownloadError: the package is not installed, or its file is not the one recorded.
    """
    final = dest_dir / entry.file
    if verify(entry, final):
        return final
    src = package_file(entry)
    if src is None:
        raise DownloadError(f"{entry.name}: the package {entry.package[0]}=={entry.package[1]} is not installed")
    if not verify(entry, src):
        raise DownloadError(f"{entry.name}: {src} is not the file recorded in models.json (size {entry.size}, "
                            f"sha256 {entry.sha256[:12]}...): another {entry.package[0]} version?")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(final)
    return final


def _fetch(client: httpx.Client, url: str, part: Path, total: int, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers, follow_redirects=True) as resp:
        if resp.status_code == 416 and have == total:
            return
        resp.raise_for_status()
        if have and resp.status_code != 206:
            have = 0  # the server ignored Range: start over
        mode = "ab" if have else "wb"
        with part.open(mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                        desc=part.name, disable=not progress) as bar:
            for block in resp.iter_bytes(1 << 20):
                f.write(block)
                bar.update(len(block))


def download(entry: ModelEntry, dest_dir: Path = MODELS_DIR, retries: int = 4, timeout: float = 30.0,
             progress: bool = True) -> Path:
    """Fetch one model into ``dest_dir/entry.file``; return its path.

    Raises:
        DownloadError: no URL produced a file of the right size and SHA-256.
    """
    if entry.package is not None:
        return copy_from_package(entry, dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / entry.file
    if verify(entry, final):
        return final
    if final.exists():
        log.warning("%s: existing file does not match the manifest checksum; deleting it", final)
        final.unlink()
    part = final.with_name(final.name + ".part")
    errors = []
    with httpx.Client(timeout=timeout) as client:
        for url in entry.urls:
            for attempt in range(retries):
                try:
                    _fetch(client, url, part, entry.size, progress)
                    break
                except (httpx.HTTPError, OSError) as exc:
                    errors.append(f"{url} (try {attempt + 1}): {exc}")
                    if isinstance(exc, httpx.ConnectError):
                        break  # no route or no name resolution: offline, try the next mirror
                    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (401, 403, 404):
                        break
                    time.sleep(min(2**attempt, 30))
            if part.exists() and part.stat().st_size == entry.size:
                if file_sha256(part) == entry.sha256:
                    part.replace(final)
                    return final
                errors.append(f"{url}: SHA-256 mismatch, file deleted")
                part.unlink()
            elif part.exists() and part.stat().st_size > entry.size:
                part.unlink()
    raise DownloadError(f"{entry.name}: every source failed: " + "; ".join(errors[-4:]))


def how_to_provide(entry: ModelEntry, dest_dir: Path = MODELS_DIR) -> str:
    """One line telling a person how to put the model in place by hand."""
    if entry.package is not None:
        name, version, file = entry.package
        return (f"missing model {entry.name}: pip install {name}=={version} (its wheel holds {file}), then "
                f"faceswap-repository models; or put {entry.file} ({entry.size} bytes, sha256 {entry.sha256[:12]}...) "
                f"into {dest_dir}/")
    return (f"missing model {entry.name}: put {entry.file} ({entry.size} bytes, sha256 {entry.sha256[:12]}...) "
            f"into {dest_dir}/ (from {entry.urls[0]}), or run `make models` where the network allows")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("names", nargs="*", help="models to fetch (default: all in repository/models.json)")
    ap.add_argument("--dest", type=Path, default=MODELS_DIR)
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per connection attempt")


def run(args: argparse.Namespace) -> int:
    """``faceswap-repository models``: fetch what is missing; offline, say how to provide each file.
    Exits 0 either way: the pipeline falls back to the shared detector and labelled stand-ins."""
    missing = 0
    for entry in load_manifest():
        if args.names and entry.name not in args.names:
            continue
        try:
            path = download(entry, args.dest, args.retries, args.timeout)
            print(f"ok       {entry.name}: {path}")
        except DownloadError as exc:
            missing += 1
            log.debug("%s", exc)
            print(how_to_provide(entry, args.dest))
    if missing:
        print(f"{missing} model(s) not downloaded: the pipeline will use the real detector from ../shared/models "
              "where present and labelled stand-ins for the rest (faceswap-repository standins)")
    return 0

