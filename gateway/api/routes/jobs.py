"""/v1/jobs: video and batch face swap as background jobs with progress."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from gateway.api.deps import AdmissionDep, JobsDep, MediaURLsDep, SettingsDep, StoreDep, TritonDep
from gateway.api.forms import JobForm, body_rules
from gateway.core.errors import PIPELINE_CODES, UPLOAD_CODES, APIError, errors
from gateway.services import jobs as service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JOB_CODES = ("job_not_found", "job_expired", "storage_unavailable")


class JobOut(BaseModel):
    """A job as the API shows it (``gateway.jobs.backend.Job.public``)."""

    id: str = Field(examples=["0c4f3a9d8e7b41f2a6c5d4e3f2a1b0c9"])
    kind: Literal["video", "batch"]
    status: Literal["queued", "running", "cancelling", "done", "failed", "cancelled"]
    created_at: float = Field(description="Unix seconds")
    updated_at: float = Field(description="Unix seconds")
    progress: float = Field(description="0..1")
    done: int = Field(description="frames (video) or files (batch) done")
    total: int = Field(description="frames or files in all (from the header at first, the real count at the end)")
    eta_s: float | None = Field(description="seconds left, estimated")
    warnings: list[str]
    error: str | None
    error_code: str | None = Field(description="a failed job's code (never null once failed)")
    options: dict = Field(description="the job's options as sent")
    restarts: int = Field(description="times the job was started again after its process stopped")
    quality: list[dict] = Field(description="per face track of a done video: identity transfer and leakage, "
                                            "flicker")
    result_ready: bool
    result_url_used: bool = Field(description="the result was PUT to the job's result_url")



@router.post("", status_code=202, summary="Start a video or batch job", response_model=JobOut,
             openapi_extra=body_rules(JobForm.rules),
             responses=errors(*UPLOAD_CODES, *PIPELINE_CODES, "missing_media", "missing_source", "face_not_found",
                              "media_url_invalid", "media_url_not_allowed", "corrupt_video", "video_too_long",
                              "video_too_many_frames", "video_frame_too_large", "video_pixel_rate_too_high",
                              "storage_full", "storage_unavailable"))
async def create_job(request: Request, form: Annotated[JobForm, Depends()], runner: JobsDep, triton: TritonDep,
                     store: StoreDep, settings: SettingsDep, admission: AdmissionDep,
                     media_urls: MediaURLsDep) -> JSONResponse:
    """202 with the job (its id and status); the source face is embedded now, once per job.
    Media given as URLs are fetched by the job itself: their errors (input_fetch_failed,
    corrupt_video, video_too_long, ...) show as the job's error_code."""
    job = await service.create(request, form, runner, triton, store, settings, admission, media_urls)
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/{job_id}", summary="A job's status and progress",
            responses={200: {"model": JobOut}, **errors(*JOB_CODES)})
async def get_job(job_id: str, runner: JobsDep, settings: SettingsDep) -> dict:
    """status (queued / running / done / failed / cancelled), progress 0..1, done/total frames or
    files, eta_s, warnings, error."""
    return (await service.job_or_404(runner, settings, job_id)).public()


@router.get("/{job_id}/result", summary="The result: a video, or a zip of images with batch_report.json",
            response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}},
                                         "application/zip": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "The result file"},
                       307: {"description": "The result is in the S3 bucket: a presigned URL to it (Location)"},
                       **errors(*JOB_CODES, "job_not_done", "job_failed", "job_cancelled")})
async def job_result(job_id: str, runner: JobsDep, settings: SettingsDep) -> Response:
    """The result file, or with S3 job media a 307 redirect to a presigned URL of the object, so
    that results reach clients without passing through a gateway."""
    job = await service.job_or_404(runner, settings, job_id)
    if job.status in ("failed", "cancelled"):
        raise APIError(409, f"job_{job.status}", f"The job {job.status}; it has no result."
                       + (f" Reason: {job.error}" if job.error else ""))
    if job.status != "done" or not job.result:
        raise APIError(409, "job_not_done", f"The job is {job.status}; its result is not ready yet.")
    media = "video/mp4" if job.kind == "video" else "application/zip"
    name = f"faceswap_{job_id}.{'mp4' if job.kind == 'video' else 'zip'}"
    where = await runner.result(job, name)
    if isinstance(where, str):
        return RedirectResponse(where, status_code=307)
    return FileResponse(where, media_type=media, filename=name)


@router.delete("/{job_id}", summary="Cancel a queued or running job; delete a finished one", status_code=204,
               responses={202: {"model": JobOut, "description": "cancelled, or cancelling (the job as it then is)"},
                          **errors(*JOB_CODES)})
async def delete_job(job_id: str, runner: JobsDep, settings: SettingsDep) -> Response:
    job = await service.job_or_404(runner, settings, job_id)
    if job.status in ("queued", "running", "cancelling"):
        job = await runner.cancel(job_id)  # waits up to 3 s for the job to stop, wherever it runs
        if job is None:  # deleted meanwhile
            raise APIError(404, "job_not_found", f"No job {job_id!r}.")
        public = job.public()
        if public["status"] == "running":
            public["status"] = "cancelling"  # the truth: asked to stop, not stopped yet
        return JSONResponse(public, status_code=202)
    await runner.delete(job_id)
    return Response(status_code=204)
