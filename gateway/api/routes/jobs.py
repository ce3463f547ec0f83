"""/v1/jobs: video and batch face swap as background jobs with progress."""

from __future__ import annotations

import asyncio
import logging
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import av
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from client import AsyncFaceSwapClient
from client.video import VideoLimitError, VideoLimits, header_figures
from gateway.api import deps
from gateway.core.config import Settings
from gateway.core.errors import APIError, errors
from gateway.core.store import FaceStore

log = logging.getLogger("gateway.jobs")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
VIDEO_FORMATS = "mp4, mov, mkv, webm, avi"


def sniff_video(head: bytes) -> str | None:
    """Container judged from the first bytes: "mp4" (ISO BMFF / QuickTime), "mkv", "avi" or None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    if head[:4] == b"RIFF" and head[8:11] == b"AVI":
        return "avi"
    return None


async def _head(upload: UploadFile, what: str) -> bytes:
    """The first 16 bytes of an upload (400 for an empty one); the file is rewound."""
    head = await upload.read(16)
    await upload.seek(0)
    if not head:
        raise APIError(400, "empty_file", f"The {what} file is empty (0 bytes).")
    return head


async def _save(upload: UploadFile, path: Path) -> None:
    """Copy an upload to disk in chunks (never whole in memory)."""
    def copy() -> None:
        with path.open("wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)

    await run_in_threadpool(copy)


def _zip_uploads(images: list[UploadFile], path: Path) -> None:
    """Several uploaded images become one zip; entry names are the client's names (reported back,
    never used as paths)."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore", UserWarning)  # two uploads may share a name: both are kept
        for up in images:
            up.file.seek(0)
            with z.open(zipfile.ZipInfo(up.filename or "image"), "w") as out:
                shutil.copyfileobj(up.file, out, 1 << 20)


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


def _job_or_404(request: Request, job_id: str):
    job = request.app.state.jobs.store.get(job_id)
    if job is None:
        raise APIError(404, "job_not_found", f"No job {job_id!r}.")
    if job.status == "expired":
        raise APIError(404, "job_expired", f"The job {job_id!r} finished more than "
                       f"{request.app.state.settings.job_ttl_s / 3600:g} h ago; it and its files were deleted.")
    return job


@router.post("", status_code=202, summary="Start a video or batch job",
             responses=errors(400, 401, 404, 413, 415, 422, 502, 503, 504))
async def create_job(
    request: Request,
    video: Annotated[UploadFile | None, File(description=f"A video ({VIDEO_FORMATS})")] = None,
    images: Annotated[list[UploadFile] | None, File(description="Several images (a batch)")] = None,
    archive: Annotated[UploadFile | None, File(description="A zip of images (a batch)")] = None,
    source: Annotated[UploadFile | None, File(description="Photo of the wanted face (its largest face)")] = None,
    source_face_id: Annotated[str | None, Form(description="A face registered with POST /v1/faces",
                                               examples=["5f1c0e9a2b7d4c6f8e3a1b2c3d4e5f60"])] = None,
    reference_face_id: Annotated[str | None, Form(description="Video: swap the person most similar to this "
                                                              "registered face")] = None,
    selection: Annotated[Literal["largest", "all"], Form(description="Video: one tracked person, or all")] = "largest",
    smoothing: Annotated[bool, Form(description="Video: key-point smoothing against flicker")] = True,
    output_format: Annotated[Literal["auto", "jpeg", "png", "webp"], Form(description="Batch")] = "auto",
    triton: AsyncFaceSwapClient = Depends(deps.triton),
    store: FaceStore = Depends(deps.store),
    settings: Settings = Depends(deps.settings),
) -> JSONResponse:
    """202 with the job (its id and status); the source face is embedded now, once per job."""
    kinds = [x for x in (video, images, archive) if x]
    if len(kinds) != 1:
        raise APIError(422, "missing_media", "Send exactly one of: video, images (one or more), archive (zip).")
    if (source is None) == (source_face_id is None):
        raise APIError(422, "missing_source", "Send exactly one of: a source image or source_face_id.")
    if source_face_id is not None:
        latent = deps.face_or_404(store, source_face_id).latent
    else:
        data, pixels = await deps.read_image(source, settings, "source")
        with request.app.state.admission.pixels_reserved(pixels):
            latent = await deps.source_latent(request, data, triton)
    reference = None if reference_face_id is None else deps.face_or_404(store, reference_face_id).embedding
    runner = request.app.state.jobs
    used = await run_in_threadpool(runner.disk_bytes)
    if used > settings.max_jobs_disk_bytes:
        log.warning("jobs folder holds %d bytes, over its budget of %d: new jobs refused", used,
                    settings.max_jobs_disk_bytes)
        raise APIError(503, "storage_full", "The service has no room for new jobs right now; finished jobs expire "
                       f"after {settings.job_ttl_s / 3600:g} h. Retry later.", {"Retry-After": "300"})
    if video is not None:
        head = await _head(video, "video")
        kind_fmt = sniff_video(head)
        if kind_fmt is None:
            raise APIError(415, "unsupported_media_type", f"The video is not a supported container: send one of "
                                                          f"{VIDEO_FORMATS} (judged from the bytes).")
        job_id, d = runner.new_dir()
        path, kind = d / f"input.{kind_fmt}", "video"
        await _save(video, path)
        try:
            problem = await run_in_threadpool(probe_video, path, runner.video_limits)
        except VideoLimitError as exc:
            shutil.rmtree(d, ignore_errors=True)
            raise APIError(422, exc.code, f"The video cannot be processed here: {exc}.") from None
        if problem:
            shutil.rmtree(d, ignore_errors=True)
            raise APIError(422, "corrupt_video", problem)
    elif archive is not None:
        if (await _head(archive, "archive"))[:4] != b"PK\x03\x04":
            raise APIError(415, "unsupported_media_type", "The archive is not a zip file (judged from the bytes).")
        job_id, d = runner.new_dir()
        path, kind = d / "input.zip", "batch"
        await _save(archive, path)
    else:
        job_id, d = runner.new_dir()
        path, kind = d / "input.zip", "batch"
        await run_in_threadpool(_zip_uploads, images, path)
    opts = {"selection": "similar" if reference is not None else selection, "smoothing": smoothing,
            "output_format": output_format}
    job = runner.store.create(kind, str(path), latent, reference, opts, job_id)
    runner.submit(job_id)
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("/{job_id}", summary="A job's status and progress", responses=errors(401, 404))
async def get_job(request: Request, job_id: str) -> dict:
    """status (queued / running / done / failed / cancelled), progress 0..1, done/total frames or
    files, eta_s, warnings, error."""
    return _job_or_404(request, job_id).public()


@router.get("/{job_id}/result", summary="The result: a video, or a zip of images with batch_report.json",
            responses={200: {"content": {"video/mp4": {}, "application/zip": {}}}, **errors(401, 404, 409)})
async def job_result(request: Request, job_id: str) -> Response:
    job = _job_or_404(request, job_id)
    if job.status in ("failed", "cancelled"):
        raise APIError(409, f"job_{job.status}", f"The job {job.status}; it has no result."
                       + (f" Reason: {job.error}" if job.error else ""))
    if job.status != "done" or not job.result:
        raise APIError(409, "job_not_done", f"The job is {job.status}; its result is not ready yet.")
    media = "video/mp4" if job.kind == "video" else "application/zip"
    name = f"faceswap_{job_id}.{'mp4' if job.kind == 'video' else 'zip'}"
    return FileResponse(job.result, media_type=media, filename=name)


@router.delete("/{job_id}", summary="Cancel a queued or running job; delete a finished one", status_code=204,
               responses={202: {"description": "cancelled (the job's JSON)"}, **errors(401, 404)})
async def delete_job(request: Request, job_id: str) -> Response:
    job = _job_or_404(request, job_id)
    runner = request.app.state.jobs
    if job.status in ("queued", "running"):
        runner.cancel(job_id)
        for _ in range(30):  # a running job stops within about a second wherever it is
            job = runner.store.get(job_id)
            if job is None or job.status not in ("queued", "running"):
                break
            await asyncio.sleep(0.1)
        public = job.public() if job else {"id": job_id, "status": "cancelled"}
        if public["status"] == "running":
            public["status"] = "cancelling"  # the truth: asked to stop, not stopped yet
        return JSONResponse(public, status_code=202)
    shutil.rmtree(runner.jobs_dir / job_id, ignore_errors=True)
    runner.store.delete(job_id)
    return Response(status_code=204)
