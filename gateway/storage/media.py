"""Where job media live: a local folder (one machine, or a shared file system) or an
S3-compatible bucket (R2 in production, SeaweedFS locally); and media behind signed URLs.

Keys are ``jobs/<job id>/input.<ext>`` and ``jobs/<job id>/result.<ext>``. Files move in
chunks (boto3's managed transfers: multipart above 8 MiB); nothing holds a whole video in
memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import httpx

log = logging.getLogger("gateway.media")
CHUNK = 1 << 20


class MediaError(Exception):
    """A media URL could not be read or written. ``code``: ``input_fetch_failed``,
    ``input_too_large``, ``result_upload_failed`` or ``media_url_invalid``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MediaStore(Protocol):
    """What job code needs of a store (all calls block; run them in a thread from asyncio)."""

    def put_file(self, key: str, path: Path, content_type: str) -> None: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def presigned_get(self, key: str, ttl_s: int, filename: str, content_type: str) -> str | None: ...
    def local_path(self, key: str) -> Path | None: ...
    def used_bytes(self) -> int | None: ...


class LocalMedia:
    """Media under a folder (``root/<key>``). Shared by every process on one machine, or on
    several when ``root`` is a shared file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise ValueError(f"media key {key!r} leaves the media folder")
        return p

    def put_file(self, key: str, path: Path, content_type: str = "") -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def presigned_get(self, key: str, ttl_s: int, filename: str, content_type: str) -> str | None:
        return None  # served by the gateway itself (local_path)

    def local_path(self, key: str) -> Path | None:
        p = self._path(key)
        return p if p.exists() else None

    def used_bytes(self) -> int | None:
        """Bytes of the files under the folder, less ``*.part`` files (uploads in progress, which
        :class:`DiskBudget` counts as reservations)."""
        total = 0
        for root, _, files in os.walk(self.root):
            for f in files:
                if f.endswith(".part"):
                    continue
                try:
                    total += os.stat(os.path.join(root, f)).st_size
                except OSError:
                    pass
        return total


class S3Media:
    """Media in an S3 bucket through boto3 (R2's S3 API, SeaweedFS, MinIO, AWS S3).

    Args:
        endpoint_url: e.g. ``http://127.0.0.1:8333`` or ``https://<account>.r2.cloudflarestorage.com``;
            None for AWS.
        bucket: created at start when missing (where the keys may do so).
        access_key_id, secret_access_key: None: boto3's own credential chain.
        region: "auto" for R2, "us-east-1" for SeaweedFS.
    """

    def __init__(self, endpoint_url: str | None, bucket: str, access_key_id: str | None,
                 secret_access_key: str | None, region: str = "us-east-1") -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id=access_key_id,
                                aws_secret_access_key=secret_access_key, region_name=region,
                                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                              retries={"max_attempts": 3, "mode": "standard"},
                                              connect_timeout=5, read_timeout=60))

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (raises botocore errors otherwise)."""
        from botocore.exceptions import ClientError

        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._s3.create_bucket(Bucket=self.bucket)
            log.info("created bucket %s", self.bucket)

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        self._s3.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})

    def get_file(self, key: str, path: Path) -> None:
        self._s3.download_file(self.bucket, key, str(path))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError:
            return False

    def delete_prefix(self, prefix: str) -> None:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def presigned_get(self, key: str, ttl_s: int, filename: str, content_type: str) -> str | None:
        return self._s3.generate_presigned_url(
            "get_object", ExpiresIn=int(ttl_s),
            Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": content_type,
                    "ResponseContentDisposition": f'attachment; filename="{filename}"'})

    def local_path(self, key: str) -> Path | None:
        return None

    def used_bytes(self) -> int | None:
        return None  # the bucket's quota and lifecycle are the operator's; not summed here


class StorageFull(Exception):
    """The jobs folder's disk budget has no room for these bytes (503 ``storage_full``)."""

    code = "storage_full"


class DiskBudget:
    """The jobs folder's byte budget (setting ``max_jobs_disk_bytes``), kept exactly in one process.

    What counts: the bytes on disk (``measure()``, which leaves out ``*.part`` files) plus the
    bytes reserved with :meth:`take`: uploads as they arrive (chunk by chunk, before each chunk
    is written), and the expected result of each accepted job until it ends. A reservation is
    given back with :meth:`give` once its bytes are on disk (or gone); the disk is measured
    again then. So the folder never holds more than ``limit`` bytes through this process,
    though it may be refused a little early while a job's result is both written and reserved.

    Args:
        limit: bytes.
        measure: bytes on disk now (e.g. ``LocalMedia.used_bytes``).
    """

    def __init__(self, limit: int, measure: Callable[[], int | None]) -> None:
        self.limit, self._measure = int(limit), measure
        self._lock = threading.Lock()
        self._reserved = 0
        self._disk: int | None = None

    def _disk_now(self, fresh: bool) -> int:
        if fresh or self._disk is None:
            self._disk = int(self._measure() or 0)
        return self._disk

    def used(self) -> int:
        """Bytes on disk plus bytes reserved (measured now)."""
        with self._lock:
            return self._disk_now(True) + self._reserved

    def take(self, n: int, fresh: bool = False) -> None:
        """Reserve ``n`` bytes (``fresh``: measure the disk first).

        Raises:
            StorageFull: they do not fit; nothing is reserved.
        """
        with self._lock:
            if self._disk_now(fresh) + self._reserved + n > self.limit:
                raise StorageFull(f"the jobs folder's budget of {self.limit} bytes has no room for {n} more")
            self._reserved += n

    def give(self, n: int) -> None:
        """Give back a reservation of ``n`` bytes (its bytes are now on disk, or deleted)."""
        with self._lock:
            self._reserved = max(self._reserved - n, 0)
            self._disk_now(True)


class Reservation:
    """Bytes taken from a budget for one write; call it with ``n`` before writing ``n`` bytes
    (raises :class:`StorageFull`). ``taken``: the bytes reserved so far."""

    def __init__(self, budget: DiskBudget | None) -> None:
        self.budget, self.taken = budget, 0

    def __call__(self, n: int) -> None:
        if self.budget is not None:
            self.budget.take(n)
            self.taken += n


@contextmanager
def reserving(budget: DiskBudget | None) -> Iterator[Reservation]:
    """A :class:`Reservation` for bytes about to be written (each chunk of an upload or a
    download); all of it is given back when the block ends, when the bytes are on disk
    (measured) or deleted. ``budget`` None: nothing is reserved."""
    r = Reservation(budget)
    try:
        yield r
    finally:
        if r.taken:
            budget.give(r.taken)


def fetch_url(url: str, path: Path, max_bytes: int, timeout_s: float = 60.0,
              on_chunk: Callable[[int], None] | None = None) -> int:
    """Stream ``url`` (GET) into ``path``; returns the bytes written.

    ``on_chunk(n)`` is called before each chunk of ``n`` bytes is written (e.g.
    :meth:`DiskBudget.take`); what it raises stops the download (the partial file is deleted).

    Raises:
        MediaError: ``input_fetch_failed`` (unreachable, not 200), ``input_too_large``
            (more than ``max_bytes``; the partial file is deleted).
    """
    written = 0
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as r:
            if r.status_code != 200:
                raise MediaError("input_fetch_failed", f"fetching the input gave HTTP {r.status_code}")
            declared = int(r.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise MediaError("input_too_large", f"the input is {declared} bytes, over the limit of {max_bytes}")
            with path.open("wb") as out:
                for chunk in r.iter_bytes(CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise MediaError("input_too_large", f"the input is over the limit of {max_bytes} bytes")
                    if on_chunk is not None:
                        on_chunk(len(chunk))
                    out.write(chunk)
    except httpx.InvalidURL:  # checked at submission (gateway.core.urls); a job from an older gateway may not be
        path.unlink(missing_ok=True)
        raise MediaError("media_url_invalid", "the input URL is malformed") from None
    except httpx.HTTPError as exc:
        path.unlink(missing_ok=True)
        raise MediaError("input_fetch_failed", f"fetching the input failed: {type(exc).__name__}") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return written


def put_url(url: str, path: Path, content_type: str, timeout_s: float = 120.0) -> None:
    """Stream the file at ``path`` to ``url`` (PUT, with Content-Length): an R2/S3 presigned
    PUT URL or one the Worker signs.

    Raises:
        MediaError: ``result_upload_failed`` (unreachable, or an answer other than 2xx).
    """
    size = path.stat().st_size

    def chunks():
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    try:
        r = httpx.put(url, content=chunks(), timeout=timeout_s,
                      headers={"Content-Type": content_type, "Content-Length": str(size)})
    except httpx.InvalidURL:
        raise MediaError("media_url_invalid", "the result URL is malformed") from None
    except httpx.HTTPError as exc:
        raise MediaError("result_upload_failed", f"storing the result failed: {type(exc).__name__}") from None
    if not 200 <= r.status_code < 300:
        raise MediaError("result_upload_failed", f"storing the result gave HTTP {r.status_code}")


def make_media(s) -> MediaStore:
    """S3 (bucket created when missing) when ``s.s3_endpoint_url`` is set, else ``s.jobs_dir``
    (``s``: ``gateway.core.config.Settings``)."""
    if not s.s3_endpoint_url:
        return LocalMedia(s.jobs_dir)
    media = S3Media(s.s3_endpoint_url, s.s3_bucket,
                    s.s3_access_key_id.get_secret_value() if s.s3_access_key_id else None,
                    s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None, s.s3_region)
    media.ensure_bucket()
    return media
