"""/v1/jobs: video and batch face swap as background jobs with progress."""

from __future__ import annotations

import shutil
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from client import AsyncFaceSwapClient, NoFaceError
from client.batch import safe_stem
from gateway.api import deps
from gateway.core.config import Settings
from gateway.core.errors import APIError
from gateway.core.images import inspect_image
from gateway.core.store import FaceStore

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


def _job_or_404(request: Request, job_id: str):
    job = request.app.state.jobs.store.get(job_id)
    if job is None:
        raise APIError(404, "job_not_found", f"No job {job_id!r}.")
    return job


@router.post("", status_code=202, summary="Start a video or batch job")
async def create_job(
    request: Request,
    video: Annotated[UploadFile | None, File(description=f"A video ({VIDEO_FORMATS})")] = None,
    images: Annotated[list[UploadFile] | None, File(description="Several images (a batch)")] = None,
    archive: Annotated[UploadFile | None, File(description="A zip of images (a batch)")] = None,
    source: Annotated[UploadFile | None, File(description="Photo of the wanted face (its largest face)")] = None,
    source_face_id: Annotated[str | None, Form(description="A face registered with POST /v1/faces")] = None,
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
        face = store.get(source_face_id)
        if face is None:
            raise APIError(404, "face_not_found", f"No face {source_face_id!r}: unknown, deleted or expired.")
        latent = face.latent
    else:
        data = await source.read()
        inspect_image(data, settings.max_pixels, "source")
        faces = (await triton.embed(data)).faces
        if not faces:
            raise NoFaceError("no face found in the source image")
        latent = max(faces, key=lambda f: f.area).latent
    reference = None
    if reference_face_id is not None:
        ref = store.get(reference_face_id)
        if ref is None:
            raise APIError(404, "face_not_found", f"No face {reference_face_id!r}: unknown, deleted or expired.")
        reference = ref.embedding
    runner = request.app.state.jobs
    job_id, d = runner.new_dir()
    if video is not None:
        data = await video.read()
        kind_fmt = sniff_video(data[:16])
        if kind_fmt is None:
            raise APIError(415, "unsupported_media_type", f"The video is not a supported container: send one of "
                                                          f"{VIDEO_FORMATS} (judged from the bytes).")
        path, kind = d / f"input.{kind_fmt}", "video"
        path.write_bytes(data)
    elif archive is not None:
        data = await archive.read()
        if data[:4] != b"PK\x03\x04":
            raise APIError(415, "unsupported_media_type", "The archive is not a zip file (judged from the bytes).")
        path, kind = d / "input.zip", "batch"
        path.write_bytes(data)
    else:
        path, kind = d / "inputs", "batch"
        path.mkdir()
        for i, up in enumerate(images):
            (path / f"{i:04d}_{safe_stem(up.filename or 'image')}").write_bytes(await up.read())
    opts = {"selection": "similar" if reference is not None else selection, "smoothing": smoothing,
            "output_format": output_format}
    job = runner.store.create(kind, str(path), latent, reference, opts, job_id)
    runner.submit(job_id)
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


@router.get("/{job_id}", summary="A job's status and progress")
async def get_job(request: Request, job_id: str) -> dict:
    """status (queued / running / done / failed / cancelled), progress 0..1, done/total frames or
    files, eta_s, warnings, error."""
    return _job_or_404(request, job_id).public()


@router.get("/{job_id}/result", summary="The result: a video, or a zip of images with batch_report.json")
async def job_result(request: Request, job_id: str) -> Response:
    job = _job_or_404(request, job_id)
    if job.status != "done" or not job.result:
        raise APIError(409, "job_not_done", f"The job is {job.status}; its result is not available.")
    media = "video/mp4" if job.kind == "video" else "application/zip"
    name = f"faceswap_{job_id}.{'mp4' if job.kind == 'video' else 'zip'}"
    return FileResponse(job.result, media_type=media, filename=name)


@router.delete("/{job_id}", summary="Cancel a queued or running job; delete a finished one")
async def delete_job(request: Request, job_id: str) -> Response:
    job = _job_or_404(request, job_id)
    runner = request.app.state.jobs
    if job.status in ("queued", "running"):
        runner.cancel(job_id)
        return JSONResponse({**job.public(), "status": "cancelled"}, status_code=202)
    shutil.rmtree(runner.jobs_dir / job_id, ignore_errors=True)
    runner.store.delete(job_id)
    return Response(status_code=204)
