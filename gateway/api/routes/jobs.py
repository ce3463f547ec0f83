"""/v1/jobs: video and batch face swap as background jobs with progress."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from client import AsyncFaceSwapClient
from gateway.api import deps
from gateway.core.config import Settings
from gateway.core.errors import APIError, errors
from gateway.core.execute import is_zip, probe_video, sniff_video
from gateway.core.media import DiskBudget, Reservation, StorageFull, reserving
from gateway.core.store import FaceStore
from gateway.core.urls import MediaURLPolicy, URLRefused
from media.formats import HEAD
from media.video import VideoLimitError

log = logging.getLogger("gateway.jobs")
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
VIDEO_FORMATS = "mp4, mov, mkv, webm, avi"


async def _head(upload: UploadFile, what: str) -> bytes:
    """The first bytes of an upload, as many as sniffing needs (400 for an empty one); the file is rewound."""
    head = await upload.read(HEAD)
    await upload.seek(0)
    if not head:
        raise APIError(400, "empty_file", f"The {what} file is empty (0 bytes).")
    return head


async def _save(runner, job_id: str, uploads: list[UploadFile], path: Path, budget: DiskBudget | None,
                zipped: bool) -> int:
    """Copy an upload to ``path`` in 1 MiB chunks (never whole in memory), or several into one zip
    (``zipped``; entry names are the client's, reported back, never used as paths). Each chunk is
    reserved in ``budget`` before it is written, into ``<path>.part``; the file gets its name when
    complete. Returns its size in bytes. On any failure the job's folder is dropped.

    Raises:
        APIError: 503 ``storage_full`` (nothing stays on disk or reserved).
    """
    part = path.with_name(path.name + ".part")

    def write(reserve: Reservation) -> None:
        def copy(src, out) -> None:
            while chunk := src.read(1 << 20):
                reserve(len(chunk))
                out.write(chunk)

        with part.open("wb") as f:
            if not zipped:
                copy(uploads[0].file, f)
                return
            with warnings.catch_warnings(), zipfile.ZipFile(f, "w") as z:
                warnings.simplefilter("ignore", UserWarning)  # two uploads may share a name: both are kept
                for up in uploads:
                    up.file.seek(0)
                    reserve(256)  # the entry's headers (local and central), names up to ~100 bytes
                    with z.open(zipfile.ZipInfo(up.filename or "image"), "w") as out:
                        copy(up.file, out)
        reserve(max(part.stat().st_size - reserve.taken, 0))  # the zip's end record, long names

    try:
        with reserving(budget) as reserve:
            await run_in_threadpool(write, reserve)
            part.rename(path)
    except BaseException as exc:
        part.unlink(missing_ok=True)
        runner.discard(job_id)
        if isinstance(exc, StorageFull):
            raise APIError(503, "storage_full", "The service has no room for this job's upload right now; "
                           "finished jobs expire and free room. Retry later.", {"Retry-After": "300"}) from None
        raise
    return path.stat().st_size


def _checked_url(policy: MediaURLPolicy, field: str, url: str | None) -> str | None:
    """The normalised URL to use for a job's ``field`` (see gateway.core.urls), or None.

    Raises:
        APIError: 422 ``media_url_invalid`` (malformed, userinfo, encoded dots...) or
            ``media_url_not_allowed`` (not under the operator's prefixes, or URL media off).
    """
    if url is None:
        return None
    if not policy:
        raise APIError(422, "media_url_not_allowed", f"{field}: this service takes no media by URL "
                       "(no media URL prefixes are configured); upload the file instead.")
    try:
        return policy.check(url, field)
    except URLRefused as exc:
        raise APIError(422, "media_url_invalid", f"{exc}.") from None
    except PermissionError:
        raise APIError(422, "media_url_not_allowed", f"{field} is not under any of the media URL prefixes this "
                       "service is configured with (same scheme, host and port; path under the prefix).") from None


async def _job_or_404(request: Request, job_id: str):
    job = await request.app.state.jobs.get(job_id)
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
    video_url: Annotated[str | None, Form(description="Instead of `video`: a URL the service GETs the video from "
                                                      "(e.g. a presigned R2/S3 URL); it must start with one of the "
                                                      "operator's media_url_prefixes")] = None,
    archive_url: Annotated[str | None, Form(description="Instead of `archive`: a URL of the zip")] = None,
    result_url: Annotated[str | None, Form(description="A URL the result is PUT to when the job is done (e.g. a "
                                                       "presigned R2/S3 PUT URL); the job then shows "
                                                       "result_url_used")] = None,
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
    """202 with the job (its id and status); the source face is embedded now, once per job.
    Media given as URLs are fetched by the job itself: their errors (input_fetch_failed,
    corrupt_video, video_too_long, ...) show as the job's error_code."""
    kinds = [x for x in (video, images, archive, video_url, archive_url) if x]
    if len(kinds) != 1:
        raise APIError(422, "missing_media", "Send exactly one of: video, images (one or more), archive (zip), "
                                             "video_url, archive_url.")
    video_url, archive_url, result_url = (_checked_url(request.app.state.media_urls, name, url) for name, url in
                                          (("video_url", video_url), ("archive_url", archive_url),
                                           ("result_url", result_url)))
    if (source is None) == (source_face_id is None):
        raise APIError(422, "missing_source", "Send exactly one of: a source image or source_face_id.")
    if source_face_id is not None:
        face = deps.face_or_404(store, source_face_id)
    else:
        data, pixels = await deps.read_image(source, settings, "source")
        with request.app.state.admission.pixels_reserved(pixels):
            face = await deps.source_face(request, data, triton)
    latent = face.latent
    reference = None if reference_face_id is None else deps.face_or_404(store, reference_face_id).embedding
    runner = request.app.state.jobs
    budget: DiskBudget | None = runner.budget
    full = APIError(503, "storage_full", "The service has no room for new jobs right now; finished jobs expire "
                    f"after {settings.job_ttl_s / 3600:g} h. Retry later.", {"Retry-After": "300"})
    if budget is not None and await run_in_threadpool(budget.used) >= budget.limit:  # before any upload is copied
        log.warning("jobs folder at its budget of %d bytes: new jobs refused", budget.limit)
        raise full
    input_url = video_url or archive_url
    expected = 0  # bytes of the upload: its result will be about as large (re-encoded video, images in a zip)
    if input_url is not None:
        job_id, d = runner.new_job()
        path, kind = None, "video" if video_url else "batch"
    elif video is not None:
        head = await _head(video, "video")
        kind_fmt = sniff_video(head)
        if kind_fmt is None:
            raise APIError(415, "unsupported_media_type", f"The video is not a supported container: send one of "
                                                          f"{VIDEO_FORMATS} (judged from the bytes).")
        job_id, d = runner.new_job()
        path, kind = d / f"input.{kind_fmt}", "video"
        expected = await _save(runner, job_id, [video], path, budget, False)
        try:
            problem = await run_in_threadpool(probe_video, path, runner.video_limits)
        except VideoLimitError as exc:
            runner.discard(job_id)
            raise APIError(422, exc.code, f"The video cannot be processed here: {exc}.") from None
        if problem:
            runner.discard(job_id)
            raise APIError(422, "corrupt_video", problem)
    elif archive is not None:
        if not is_zip(await _head(archive, "archive")):
            raise APIError(415, "unsupported_media_type", "The archive is not a zip file (judged from the bytes).")
        job_id, d = runner.new_job()
        path, kind = d / "input.zip", "batch"
        expected = await _save(runner, job_id, [archive], path, budget, False)
    else:
        job_id, d = runner.new_job()
        path, kind = d / "input.zip", "batch"
        expected = await _save(runner, job_id, images, path, budget, True)
    if budget is not None and expected:  # reserved for the result until the job ends
        try:
            budget.take(expected)
        except StorageFull:
            runner.discard(job_id)
            raise full from None
    opts = {"selection": "similar" if reference is not None else selection, "smoothing": smoothing,
            "output_format": output_format}
    opts.update({k: v for k, v in (("_input_url", input_url), ("_result_url", result_url)) if v})
    # the source's identity, for the per-track quality figures (private: never shown back)
    opts["_source_embedding"] = [float(v) for v in np.asarray(face.embedding, np.float32)]
    try:
        job = await runner.create(job_id, kind, path, latent, reference, opts,
                                  expected_bytes=expected if budget is not None else 0)
    except BaseException:
        runner.discard(job_id)
        if budget is not None and expected:
            budget.give(expected)
        raise
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("/{job_id}", summary="A job's status and progress", responses=errors(401, 404))
async def get_job(request: Request, job_id: str) -> dict:
    """status (queued / running / done / failed / cancelled), progress 0..1, done/total frames or
    files, eta_s, warnings, error."""
    return (await _job_or_404(request, job_id)).public()


@router.get("/{job_id}/result", summary="The result: a video, or a zip of images with batch_report.json",
            responses={200: {"content": {"video/mp4": {}, "application/zip": {}}},
                       307: {"description": "The result is in the S3 bucket: a presigned URL to it (Location)"},
                       **errors(401, 404, 409)})
async def job_result(request: Request, job_id: str) -> Response:
    """The result file, or with S3 job media a 307 redirect to a presigned URL of the object, so
    that results reach clients without passing through a gateway."""
    job = await _job_or_404(request, job_id)
    if job.status in ("failed", "cancelled"):
        raise APIError(409, f"job_{job.status}", f"The job {job.status}; it has no result."
                       + (f" Reason: {job.error}" if job.error else ""))
    if job.status != "done" or not job.result:
        raise APIError(409, "job_not_done", f"The job is {job.status}; its result is not ready yet.")
    media = "video/mp4" if job.kind == "video" else "application/zip"
    name = f"faceswap_{job_id}.{'mp4' if job.kind == 'video' else 'zip'}"
    where = await request.app.state.jobs.result(job, name)
    if isinstance(where, str):
        return RedirectResponse(where, status_code=307)
    return FileResponse(where, media_type=media, filename=name)


@router.delete("/{job_id}", summary="Cancel a queued or running job; delete a finished one", status_code=204,
               responses={202: {"description": "cancelled (the job's JSON)"}, **errors(401, 404)})
async def delete_job(request: Request, job_id: str) -> Response:
    job = await _job_or_404(request, job_id)
    runner = request.app.state.jobs
    if job.status in ("queued", "running", "cancelling"):
        job = await runner.cancel(job_id)  # waits up to 3 s for the job to stop, wherever it runs
        public = job.public() if job else {"id": job_id, "status": "cancelled"}
        if public["status"] == "running":
            public["status"] = "cancelling"  # the truth: asked to stop, not stopped yet
        return JSONResponse(public, status_code=202)
    await runner.delete(job_id)
    return Response(status_code=204)
