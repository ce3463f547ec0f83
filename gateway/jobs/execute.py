"""Running one video or batch job: the same code in the gateway's in-process runner
(one machine) and in ``faceswap-worker`` processes (Redis queue).

A job's input is a file (an upload the gateway kept) or a URL the gateway was given
(``video_url`` / ``archive_url``, e.g. one the Cloudflare Worker signs for an object in R2);
its result is a file, and is also PUT to ``result_url`` when the caller gave one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.storage.media import MediaError, StorageFull, fetch_url, put_url
from media.batch import CONTENT_REFUSED, ArchiveLimitError, ArchiveLimits, swap_batch
from media.formats import HEAD, sniff
from media.video import (
    ContentRefusedError,
    VideoLimitError,
    VideoLimits,
    VideoOptions,
    header_figures,
    swap_video,
)

log = logging.getLogger("gateway.jobs")
CONTENT_TYPES = {"video": "video/mp4", "batch": "application/zip"}
RESULT_NAMES = {"video": "result.mp4", "batch": "result.zip"}


class JobFailed(Exception):
    """A job cannot finish for a reason its caller can fix; ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def failure_code(exc: BaseException) -> str:
    """The job ``error_code`` of any exception a job ended with (never None): the exception's own
    ``code`` (JobFailed, limit errors), the API code of a Triton error (gateway.core.errors),
    ``corrupt_video`` / ``corrupt_archive`` for unreadable media, ``storage_unavailable`` for the
    S3 store or Redis, else ``internal_error``."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    from gateway.core.errors import from_triton, is_storage_error
    from media.video import VideoError

    if isinstance(exc, FaceSwapError):
        return from_triton(exc, None).code
    if isinstance(exc, VideoError):
        return "corrupt_video"
    if isinstance(exc, zipfile.BadZipFile):
        return "corrupt_archive"
    if is_storage_error(exc):
        return "storage_unavailable"
    return "internal_error"


@dataclass(frozen=True)
class JobLimits:
    """Bounds on one job's work (see the gateway settings of the same names)."""

    video: VideoLimits = field(default_factory=VideoLimits)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    in_flight: int = 4
    max_input_bytes: int = 500 * 1024 * 1024
    call_timeout_s: float = 60.0


def sniff_video(head: bytes) -> str | None:
    """Container judged from the first bytes: "mp4" (ISO BMFF / QuickTime), "mkv" (Matroska,
    WebM), "avi" or None (see ``media.formats``)."""
    fmt = sniff(head)
    return fmt.name if fmt is not None and fmt.kind == "video" else None


def is_zip(head: bytes) -> bool:
    """True when the first bytes are a zip's with entries (an empty zip is not a batch)."""
    fmt = sniff(head)
    return fmt is not None and fmt.name == "zip"


def probe_video(path: Path, limits: VideoLimits | None = None) -> str | None:
    """None when PyAV can open the container, its header passes ``limits`` and a first video
    frame decodes; else why not (a sentence without server paths).

    Raises:
        VideoLimitError: the header declares more than ``limits`` allow.
    """
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return "The file has no video stream."
            if limits is not None:
                limits.check(*header_figures(c))
            for _ in c.decode(video=0):
                return None
    except (av.error.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return f"The video cannot be read (corrupt or truncated): {reason}."
    return "The video has no decodable frame."


def fetch_input(kind: str, url: str, workdir: Path, limits: JobLimits,
                on_chunk: Callable[[int], None] | None = None) -> Path:
    """Download a job's input from ``url`` into ``workdir`` and check it as an upload would be;
    ``on_chunk(n)`` before each chunk is written (a :class:`~gateway.storage.media.DiskBudget`
    reservation that may raise ``StorageFull``).

    Raises:
        JobFailed: input_fetch_failed, input_too_large, storage_full, unsupported_media_type,
            corrupt_video or a video limit code (video_too_long, ...).
    """
    path = workdir / "input.bin"
    try:
        fetch_url(url, path, limits.max_input_bytes, limits.call_timeout_s, on_chunk)
    except (MediaError, StorageFull) as exc:
        raise JobFailed(exc.code, f"{exc}") from None
    head = path.open("rb").read(HEAD)
    if kind == "batch":
        if not is_zip(head):
            raise JobFailed("unsupported_media_type", "The archive is not a zip file (judged from the bytes).")
        return path.rename(workdir / "input.zip")
    fmt = sniff_video(head)
    if fmt is None:
        raise JobFailed("unsupported_media_type", "The video is not a supported container (judged from the bytes).")
    path = path.rename(workdir / f"input.{fmt}")
    try:
        problem = probe_video(path, limits.video)
    except VideoLimitError as exc:
        raise JobFailed(exc.code, f"The video cannot be processed here: {exc}.") from None
    if problem:
        raise JobFailed("corrupt_video", problem)
    return path


@dataclass
class Outcome:
    """A finished job: ``result`` (a file in the job's folder), its media type, warnings, and
    for video the quality figures per face track (``media.video.VideoReport.tracks``)."""

    result: Path
    content_type: str
    warnings: list[str]
    quality: list[dict] = field(default_factory=list)


ProgressFn = Callable[[int, int, "float | None"], None]


def progress_reporter(write: Callable[[dict], None], min_interval_s: float = 0.5) -> ProgressFn:
    """A ``progress(done, total, fps)`` callback for swap_video/swap_batch that calls
    ``write({"done", "total", "progress", "eta_s"})`` at most every ``min_interval_s`` seconds
    (and always for the last item)."""
    t0, last = time.monotonic(), [0.0]

    def progress(done: int, total: int, fps: float | None = None) -> None:
        now = time.monotonic()
        if now - last[0] < min_interval_s and done < total:
            return
        last[0] = now
        rate = fps if fps else done / max(now - t0, 1e-6)
        eta = (total - done) / rate if rate > 0 and total >= done else None
        write({"done": done, "total": total, "progress": min(done / total, 1.0) if total else 0.0, "eta_s": eta})

    return progress


async def run_job(client: AsyncFaceSwapClient, kind: str, input_path: Path, workdir: Path, latent: np.ndarray,
                  reference: np.ndarray | None, options: dict, limits: JobLimits, progress: ProgressFn,
                  stop: Callable[[], bool], result_url: str | None = None, marker=None, gate=None) -> Outcome:
    """Swap a video or a batch archive; the result goes to ``workdir`` (and to ``result_url``).
    ``marker`` (gateway.core.marking.Marker) marks every output image, every video frame and
    the video file as AI-made before anything leaves. ``gate`` (gateway.core.content.ContentGate;
    None: the stages' default policy) is applied to each batch image and to the video's frames
    at ``VideoOptions.content_every_s``.

    Raises:
        JobFailed: the caller's media break a limit, the result URL refused the result, or
            (``content_refused``) the content gate refused a video frame: then the input and
            any partial output are deleted at once.
        asyncio.CancelledError: ``stop()`` turned true (cancel or shutdown).
        FaceSwapError, VideoError, OSError, zipfile.BadZipFile: the job failed.
    """
    emb = options.get("_source_embedding")
    embedding = None if emb is None else np.asarray(emb, np.float32)
    tracks: list[dict] = []
    policy = {} if gate is None else gate.options()  # {"content_policy": ...}
    try:
        if kind == "video":
            out = workdir / RESULT_NAMES[kind]
            rid, hook = marker.video_marks() if marker is not None else (None, None)
            opts = VideoOptions(options.get("selection", "largest"), options.get("smoothing", True),
                                limits.in_flight, limits=limits.video, frame_hook=hook,
                                content_policy=policy.get("content_policy"))
            rep = await swap_video(client, latent, input_path, out, opts, reference, progress, stop,
                                   source_embedding=embedding)
            if marker is not None:
                await asyncio.to_thread(marker.video_file, out, input_path, rid, rep.stand_in_models)
            warnings = rep.warnings + ([f"stand-in models used: {', '.join(rep.stand_in_models)}"]
                                       if rep.stand_in_models else [])
            tracks = list(rep.tracks)
        else:
            out_dir = workdir / "results"
            if out_dir.exists():
                shutil.rmtree(out_dir)
            marks = marker if marker is not None and marker.enabled else None
            rep = await swap_batch(client, latent, input_path, out_dir, limits.in_flight, progress, stop,
                                   limits.archive, marks=marks, source_embedding=embedding, **policy,
                                   output_format=options.get("output_format", "auto"))
            if stop():
                raise asyncio.CancelledError
            out = workdir / RESULT_NAMES[kind]
            with zipfile.ZipFile(out, "w") as z:
                for p in sorted(out_dir.iterdir()):
                    z.write(p, p.name)
            shutil.rmtree(out_dir, ignore_errors=True)
            warnings = [f"{i.name}: {i.error}" for i in rep.items if i.error]
            for _ in (i for i in rep.items if i.error and i.error.startswith(CONTENT_REFUSED)):
                if gate is not None:
                    gate.count("batch")
    except ContentRefusedError as exc:
        if gate is not None:
            gate.count("video")
        input_path.unlink(missing_ok=True)  # nothing refused is kept longer than the job
        shutil.rmtree(workdir / "results", ignore_errors=True)
        (workdir / RESULT_NAMES[kind]).unlink(missing_ok=True)
        raise JobFailed(exc.code, str(exc)) from None
    except (ArchiveLimitError, VideoLimitError) as exc:
        raise JobFailed(exc.code, str(exc)) from None
    if result_url:
        try:
            await asyncio.to_thread(put_url, result_url, out, CONTENT_TYPES[kind])
        except MediaError as exc:
            raise JobFailed(exc.code, str(exc)) from None
    return Outcome(out, CONTENT_TYPES[kind], warnings, tracks)
