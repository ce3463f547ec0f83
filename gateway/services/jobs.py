"""``/v1/jobs``: a job's upload copied within the disk budget, its media URLs checked, its
source embedded once, and the job handed to the backend (``gateway.jobs``)."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
from fastapi import Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from client import AsyncFaceSwapClient
from gateway.api.forms import VIDEO_FORMATS, JobForm
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.errors import APIError
from gateway.core.urls import MediaURLPolicy, URLRefused
from gateway.jobs.backend import Job, JobBackend
from gateway.jobs.execute import is_zip, probe_video, sniff_video
from gateway.services.common import face_or_404, read_image, source_face
from gateway.storage.faces import FaceStore
from gateway.storage.media import DiskBudget, Reservation, StorageFull, reserving
from media.formats import HEAD
from media.video import VideoLimitError

log = logging.getLogger("gateway.jobs")


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


async def job_or_404(runner: JobBackend, settings: Settings, job_id: str) -> Job:
    """A job, or 404 ``job_not_found`` / ``job_expired``."""
    job = await runner.get(job_id)
    if job is None:
        raise APIError(404, "job_not_found", f"No job {job_id!r}.")
    if job.status == "expired":
        raise APIError(404, "job_expired", f"The job {job_id!r} finished more than "
                       f"{settings.job_ttl_s / 3600:g} h ago; it and its files were deleted.")
    return job




def _storage_full(settings: Settings) -> APIError:
    return APIError(503, "storage_full", "The service has no room for new jobs right now; finished jobs expire "
                    f"after {settings.job_ttl_s / 3600:g} h. Retry later.", {"Retry-After": "300"})


async def _source(request: Request, form: JobForm, triton: AsyncFaceSwapClient, store: FaceStore,
                  settings: Settings, admission: Admission):
    """The job's source face (registered, or the largest face of the source photo, embedded now)
    and the reference embedding (``reference_face_id``) or None."""
    if (form.source is None) == (form.source_face_id is None):
        raise APIError(422, "missing_source", "Send exactly one of: a source image or source_face_id.")
    if form.source_face_id is not None:
        face = face_or_404(store, form.source_face_id)
    else:
        data, pixels = await read_image(form.source, settings, "source")
        with admission.pixels_reserved(pixels):
            face = await source_face(request, data, triton)
    reference = None if form.reference_face_id is None else face_or_404(store, form.reference_face_id).embedding
    return face, reference


async def _take_upload(form: JobForm, runner: JobBackend, budget: DiskBudget | None, by_url: str | None
                       ) -> tuple[str, Path | None, str, int]:
    """A new job's id, its input's path (None: fetched from ``by_url`` by the job), its kind
    (video, batch) and the upload's size in bytes (its result will be about as large: a
    re-encoded video, images in a zip). A video is probed here: 422 when it cannot be processed."""
    if by_url is not None:
        job_id, _ = runner.new_job()
        return job_id, None, "video" if form.video_url else "batch", 0
    if form.video is not None:
        fmt = sniff_video(await _head(form.video, "video"))
        if fmt is None:
            raise APIError(415, "unsupported_media_type", f"The video is not a supported container: send one of "
                                                          f"{VIDEO_FORMATS} (judged from the bytes).")
        job_id, d = runner.new_job()
        path = d / f"input.{fmt}"
        size = await _save(runner, job_id, [form.video], path, budget, False)
        try:
            problem = await run_in_threadpool(probe_video, path, runner.video_limits)
        except VideoLimitError as exc:
            runner.discard(job_id)
            raise APIError(422, exc.code, f"The video cannot be processed here: {exc}.") from None
        if problem:
            runner.discard(job_id)
            raise APIError(422, "corrupt_video", problem)
        return job_id, path, "video", size
    if form.archive is not None and not is_zip(await _head(form.archive, "archive")):
        raise APIError(415, "unsupported_media_type", "The archive is not a zip file (judged from the bytes).")
    job_id, d = runner.new_job()
    uploads, zipped = ([form.archive], False) if form.archive is not None else (form.images, True)
    return job_id, d / "input.zip", "batch", await _save(runner, job_id, uploads, d / "input.zip", budget, zipped)


async def create(request: Request, form: JobForm, runner: JobBackend, triton: AsyncFaceSwapClient,
                 store: FaceStore, settings: Settings, admission: Admission, media_urls: MediaURLPolicy) -> Job:
    """Check the form, embed the source (once per job), copy the upload (or note its URL) and
    hand the job to ``runner``; returns the queued job. Media given as URLs are fetched by the
    job itself: their errors show as the job's ``error_code``.

    Raises:
        APIError: 400/413/415/422 for the form and its files, 404 for a face, 503 ``storage_full``.
    """
    if len([x for x in (form.video, form.images, form.archive, form.video_url, form.archive_url) if x]) != 1:
        raise APIError(422, "missing_media", "Send exactly one of: video, images (one or more), archive (zip), "
                                             "video_url, archive_url.")
    video_url, archive_url, result_url = (_checked_url(media_urls, name, url) for name, url in
                                          (("video_url", form.video_url), ("archive_url", form.archive_url),
                                           ("result_url", form.result_url)))
    face, reference = await _source(request, form, triton, store, settings, admission)
    budget: DiskBudget | None = runner.budget
    if budget is not None and await run_in_threadpool(budget.used) >= budget.limit:  # before any upload is copied
        log.warning("jobs folder at its budget of %d bytes: new jobs refused", budget.limit)
        raise _storage_full(settings)
    input_url = video_url or archive_url
    job_id, path, kind, expected = await _take_upload(form, runner, budget, input_url)
    if budget is not None and expected:  # reserved for the result until the job ends
        try:
            budget.take(expected)
        except StorageFull:
            runner.discard(job_id)
            raise _storage_full(settings) from None
    opts = {"selection": "similar" if reference is not None else form.selection, "smoothing": form.smoothing,
            "output_format": form.output_format}
    opts.update({k: v for k, v in (("_input_url", input_url), ("_result_url", result_url)) if v})
    # the source's identity, for the per-track quality figures (private: never shown back)
    opts["_source_embedding"] = [float(v) for v in np.asarray(face.embedding, np.float32)]
    try:
        return await runner.create(job_id, kind, path, face.latent, reference, opts,
                                   expected_bytes=expected if budget is not None else 0)
    except BaseException:
        runner.discard(job_id)
        if budget is not None and expected:
            budget.give(expected)
        raise
