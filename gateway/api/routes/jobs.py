"""/v1/jobs: video and batch face swap as background jobs with progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from gateway.api.deps import AdmissionDep, JobsDep, MediaURLsDep, SettingsDep, StoreDep, TritonDep
from gateway.api.forms import JobForm
from gateway.core.errors import APIError, errors
from gateway.services import jobs as service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=202, summary="Start a video or batch job",
             responses=errors(400, 401, 404, 413, 415, 422, 502, 503, 504))
async def create_job(request: Request, form: Annotated[JobForm, Depends()], runner: JobsDep, triton: TritonDep,
                     store: StoreDep, settings: SettingsDep, admission: AdmissionDep,
                     media_urls: MediaURLsDep) -> JSONResponse:
    """202 with the job (its id and status); the source face is embedded now, once per job.
    Media given as URLs are fetched by the job itself: their errors (input_fetch_failed,
    corrupt_video, video_too_long, ...) show as the job's error_code."""
    job = await service.create(request, form, runner, triton, store, settings, admission, media_urls)
    return JSONResponse(job.public(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("/{job_id}", summary="A job's status and progress", responses=errors(401, 404))
async def get_job(job_id: str, runner: JobsDep, settings: SettingsDep) -> dict:
    """status (queued / running / done / failed / cancelled), progress 0..1, done/total frames or
    files, eta_s, warnings, error."""
    return (await service.job_or_404(runner, settings, job_id)).public()


@router.get("/{job_id}/result", summary="The result: a video, or a zip of images with batch_report.json",
            responses={200: {"content": {"video/mp4": {}, "application/zip": {}}},
                       307: {"description": "The result is in the S3 bucket: a presigned URL to it (Location)"},
                       **errors(401, 404, 409)})
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
               responses={202: {"description": "cancelled (the job's JSON)"}, **errors(401, 404)})
async def delete_job(job_id: str, runner: JobsDep, settings: SettingsDep) -> Response:
    job = await service.job_or_404(runner, settings, job_id)
    if job.status in ("queued", "running", "cancelling"):
        job = await runner.cancel(job_id)  # waits up to 3 s for the job to stop, wherever it runs
        public = job.public() if job else {"id": job_id, "status": "cancelled"}
        if public["status"] == "running":
            public["status"] = "cancelling"  # the truth: asked to stop, not stopped yet
        return JSONResponse(public, status_code=202)
    await runner.delete(job_id)
    return Response(status_code=204)
