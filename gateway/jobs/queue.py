"""Jobs through Redis: gateways enqueue, ``faceswap-worker`` processes run them (scale-out).

The queue library is saq (https://github.com/tobymao/saq): asyncio-native like the rest of the
job code, with what at-least-once delivery needs built in: a per-job heartbeat (a job whose
worker stops beating is swept and queued again by another worker), a retry cap, abort across
processes, and job records that any process can read. A job's record *is* the saq job: its
``meta`` holds our fields (done/total frames or files, eta, warnings, error code, result key).

Delivery: a job whose worker dies (``kill -9``, a lost machine) is started again from the
beginning by another worker once its heartbeat is ``job_heartbeat_s`` old, at most
``max_job_restarts`` times, then it fails with ``job_restart_limit``. A worker that is stopped
politely (SIGTERM) hands its jobs back to the queue at once.
Media: inputs and results are objects (``jobs/<id>/input.*``, ``jobs/<id>/result.*``) in the
S3 bucket, or in a folder every process shares; or, for jobs with ``result_url``, the result is
PUT there too. Finished jobs expire ``job_ttl_s`` after they finish: their objects are deleted
by the next sweep of any process and reading the job answers 404 ``job_expired`` (the record
stays 7 more TTLs as a tombstone, then Redis drops it).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from saq import Job as SaqJob
from saq import Queue, Status, Worker

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.core.errors import storage_errors
from gateway.jobs.backend import Job, UploadFolders
from gateway.jobs.execute import (
    CONTENT_TYPES,
    JobFailed,
    JobLimits,
    failure_code,
    fetch_input,
    progress_reporter,
    run_job,
)
from gateway.storage.media import MediaStore
from media.video import VideoError

log = logging.getLogger("gateway.queue")
QUEUE_NAME = "faceswap"
FUNCTION = "faceswap_job"
#: saq's error text on a job its sweeper took from a dead worker.
SWEPT = "worker_lost"
#: The abort error of a cancel a caller asked for (``QueueJobs.cancel``); any other abort is not a cancel.
CANCELLED = "cancelled"
#: Redis sorted set of finished jobs (id -> finish time, Unix s), read by the expiry sweep.
FINISHED = "faceswap:jobs:finished"
PENDING = (Status.NEW, Status.QUEUED)


def make_queue(redis_url: str) -> Queue:
    """The job queue on ``redis_url`` (``redis://host:port/db``)."""
    return Queue.from_url(redis_url, name=QUEUE_NAME, swept_error_message=SWEPT)


def _vec(a: np.ndarray | None) -> str | None:
    return None if a is None else base64.b64encode(np.asarray(a, np.float32).tobytes()).decode()


def _unvec(s: str | None) -> np.ndarray | None:
    return None if s is None else np.frombuffer(base64.b64decode(s), np.float32)


def _public_status(job: SaqJob, heartbeat_s: float) -> str:
    meta = job.meta or {}
    if job.status in PENDING:
        return "queued"
    if job.status == Status.ACTIVE:
        return "running"
    if job.status == Status.ABORTING and job.error == SWEPT:
        return "queued"  # its worker died; the sweep is handing it to another worker
    if job.status == Status.ABORTING:
        # a cancel whose worker is gone never finishes aborting: it is cancelled all the same
        return "cancelled" if time.time() * 1000 - job.touched > 2000 * heartbeat_s else "cancelling"
    if job.status == Status.ABORTED and job.error != CANCELLED and job.retryable:
        return "queued"  # aborted by a sweep, not by a caller: its worker queues it again (JobWorker._requeue)
    if job.status == Status.ABORTED:
        return "failed" if job.error != CANCELLED else "cancelled"
    if job.status == Status.FAILED:
        return "failed"
    return meta.get("outcome", "done")


def to_public(job: SaqJob, ttl_s: float, heartbeat_s: float) -> Job:
    """Our job view of a saq job record (see :class:`gateway.jobs.runner.Job`)."""
    meta = job.meta or {}
    status = _public_status(job, heartbeat_s)
    error, code = meta.get("error"), meta.get("error_code")
    if job.status == Status.ABORTED and job.error != CANCELLED and not job.retryable:
        error, code = (f"the job's worker stopped while it ran, {job.attempts} time(s); it is not started again "
                       f"(limit {job.retries - 1} restarts)"), "job_restart_limit"
    elif job.status == Status.FAILED:
        error, code = error or "internal error (see the job worker's log)", code or "internal_error"
    finished = (job.completed or 0) / 1000
    if status in ("done", "failed", "cancelled") and finished and time.time() - finished > ttl_s:
        status = "expired"
    return Job(id=job.key, kind=meta.get("kind", ""), status=status, created_at=job.queued / 1000 or time.time(),
               updated_at=max(job.touched, job.queued) / 1000,
               progress=1.0 if status == "done" else float(job.progress),
               done=int(meta.get("done", 0)), total=int(meta.get("total", 0)), eta_s=meta.get("eta_s"),
               warnings=list(meta.get("warnings", [])), error=error, input="",
               result=meta.get("result_key") if status == "done" else None, options=dict(meta.get("options", {})),
               restarts=max(job.attempts - 1, 0), error_code=code, quality=list(meta.get("quality", [])))


class QueueJobs(UploadFolders):
    """The Redis-queue job backend as a gateway uses it (same interface as the in-process
    :class:`gateway.jobs.runner.JobRunner`); the jobs run in ``faceswap-worker`` processes."""

    def __init__(self, queue: Queue, media: MediaStore, limits: JobLimits, upload_dir: Path, ttl_s: float,
                 heartbeat_s: float = 10.0, max_restarts: int = 3) -> None:
        self.queue, self.media, self.limits = queue, media, limits
        self.upload_root = Path(upload_dir)  # uploads wait here until they are objects
        self.ttl_s, self.heartbeat_s, self.max_restarts = ttl_s, heartbeat_s, max_restarts
        self.budget = None  # set by make_jobs when the media are a local folder (uploads counted; results are the
        #                     workers', in other processes)

    @property
    def video_limits(self):
        return self.limits.video

    async def create(self, job_id: str, kind: str, input_path: Path | None, latent: np.ndarray,
                     reference: np.ndarray | None, options: dict, expected_bytes: int = 0) -> Job:
        """Store the upload as an object (``jobs/<id>/input.*``) and enqueue the job.
        ``expected_bytes`` (a result reservation) is given back at once: results are written by the
        workers, outside this process's budget."""
        if expected_bytes and self.budget is not None:
            self.budget.give(expected_bytes)
        input_key = None
        if input_path is not None:
            input_key = f"jobs/{job_id}/{input_path.name}"
            try:
                await asyncio.to_thread(self.media.put_file, input_key, input_path, "application/octet-stream")
            finally:
                self.discard(job_id)
        job = SaqJob(FUNCTION, key=job_id, timeout=0, heartbeat=int(self.heartbeat_s), retries=self.max_restarts + 1,
                     ttl=int(8 * self.ttl_s), kwargs={"input_key": input_key, "latent": _vec(latent),
                                                      "reference": _vec(reference)},
                     meta={"kind": kind, "options": options, "warnings": []})
        if await self.queue.enqueue(job) is None:
            raise RuntimeError(f"job {job_id} exists already")
        return to_public(job, self.ttl_s, self.heartbeat_s)

    async def _job(self, job_id: str) -> SaqJob | None:
        return await self.queue.job(job_id)

    async def get(self, job_id: str) -> Job | None:
        job = await self._job(job_id)
        return None if job is None else to_public(job, self.ttl_s, self.heartbeat_s)

    async def cancel(self, job_id: str) -> Job | None:
        """Abort the job wherever it runs (saq's abort: the worker running it cancels it within
        about a second); waits up to 3 s for it to stop."""
        job = await self._job(job_id)
        if job is None:
            return None
        if job.status in (*PENDING, Status.ACTIVE):
            await self.queue.abort(job, CANCELLED)
            await self.queue.redis.zadd(FINISHED, {job_id: time.time()})
        for _ in range(30):
            job = await self._job(job_id)
            if job is None or job.status not in (*PENDING, Status.ACTIVE, Status.ABORTING):
                break
            await asyncio.sleep(0.1)
        return None if job is None else to_public(job, self.ttl_s, self.heartbeat_s)

    async def delete(self, job_id: str) -> None:
        await asyncio.to_thread(self.media.delete_prefix, f"jobs/{job_id}/")
        job = await self._job(job_id)
        if job is not None:
            await self.queue.redis.delete(job.id)
        await self.queue.redis.zrem(FINISHED, job_id)

    async def result(self, job: Job, filename: str) -> Path | str:
        """A presigned URL of the result object (S3), or its path (shared folder)."""
        local = self.media.local_path(job.result)
        if local is not None:
            return local
        return await asyncio.to_thread(self.media.presigned_get, job.result, int(min(self.ttl_s, 3600)), filename,
                                       CONTENT_TYPES.get(job.kind, "application/octet-stream"))

    async def counts(self) -> dict[str, int]:
        """Jobs waiting for a worker and jobs running, over the whole queue (for /metrics)."""
        return {"queued": await self.queue.count("queued"), "running": await self.queue.count("active")}

    async def start(self) -> int:
        """Connect (fails early when Redis is unreachable); nothing to recover: the queue keeps
        the jobs and the workers' sweep takes those of dead workers."""
        from redis.exceptions import RedisError

        try:
            await self.queue.connect()
            await self.queue.redis.ping()
        except RedisError as exc:
            raise RuntimeError(f"cannot reach the job queue's Redis (FACESWAP_GATEWAY_REDIS_URL): {exc}") from None
        return 0

    async def expire(self, ttl_s: float) -> int:
        return await sweep_expired(self.queue, self.media, ttl_s)

    async def close(self) -> None:
        await self.queue.disconnect()


async def sweep_expired(queue: Queue, media: MediaStore, ttl_s: float, now: float | None = None) -> int:
    """Delete the media of jobs finished more than ``ttl_s`` ago (any process may run it; each
    job is taken by one). Returns how many."""
    now = time.time() if now is None else now
    ids = await queue.redis.zrangebyscore(FINISHED, 0, now - ttl_s)
    n = 0
    for raw in ids:
        job_id = raw.decode() if isinstance(raw, bytes) else raw
        if await queue.redis.zrem(FINISHED, job_id):  # taken by this process
            await asyncio.to_thread(media.delete_prefix, f"jobs/{job_id}/")
            n += 1
    if n:
        log.info("%d finished job(s) expired; their media were deleted", n)
    return n


# -- the worker side ---------------------------------------------------------------------------

class WorkerMetrics:
    """Prometheus metrics of one worker process (served with ``faceswap-worker --metrics-port``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.jobs = Counter("faceswap_worker_jobs_total", "Jobs this worker ended, by outcome (done, failed; "
                            "cancelled and handed-back jobs are not counted here)", ["outcome"],
                            registry=self.registry)
        self.running = Gauge("faceswap_worker_jobs_running", "Jobs running in this worker", registry=self.registry)
        self.seconds = Histogram("faceswap_worker_job_seconds", "Run time of the jobs this worker ended",
                                 buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=self.registry)


class JobWorker:
    """What a ``faceswap-worker`` process runs: saq's worker with our job function.

    Args:
        triton_url: one or several Triton gRPC endpoints (see client.library.grpc_target).
        concurrency: jobs run at once by this process.
        heartbeat_s: see :class:`QueueJobs`; the sweep for dead workers' jobs runs every
            ``heartbeat_s / 2`` seconds.
    """

    def __init__(self, queue: Queue, media: MediaStore, triton_url: str, limits: JobLimits, concurrency: int = 1,
                 heartbeat_s: float = 10.0, ttl_s: float = 24 * 3600.0, work_dir: Path | None = None,
                 settings=None) -> None:
        self.queue, self.media, self.triton_url, self.limits = queue, media, triton_url, limits
        self.settings, self.marker = settings, None  # the marker comes from the settings at start
        self.gate = None  # so does the content gate (gateway.core.content.ContentGate)
        self.heartbeat_s, self.ttl_s = heartbeat_s, ttl_s
        self.work_dir = work_dir
        self.client: AsyncFaceSwapClient | None = None
        self.metrics = WorkerMetrics()
        self.worker = Worker(queue, functions=[(FUNCTION, self.process)], concurrency=concurrency,
                             startup=self._startup, shutdown=self._shutdown, shutdown_grace_period_s=0,
                             after_process=self._requeue,
                             timers={"sweep": max(int(heartbeat_s / 2), 1), "abort": 1, "schedule": 1,
                                     "worker_info": 10})

    async def _requeue(self, ctx: dict) -> None:
        """saq's after-process hook: a job that ended ``ABORTED`` without a caller's cancel, with
        restarts left, is queued again. This happens after Redis was away longer than
        ``heartbeat_s``: the job's beats failed, another worker's sweep took it for lost and queued
        it again, and this worker's own finish of the aborted run, arriving after that, took it
        off the queue (saq's finish and a sweep's retry race)."""
        job: SaqJob | None = ctx.get("job")
        if job is None:
            return
        try:
            stored = await self.queue.job(job.key)
            if stored is not None and stored.status == Status.ABORTED and stored.error != CANCELLED \
                    and stored.retryable:
                log.warning("job %s was aborted by a sweep after its run ended (Redis was away): queued again",
                            job.key)
                await self.queue.retry(stored, SWEPT)
        except Exception:  # Redis away again: a later sweep or the caller sees the job as it is
            log.warning("job %s: could not check its state after its run", job.key, exc_info=True)

    async def _startup(self, ctx: dict) -> None:
        self.client = AsyncFaceSwapClient(self.triton_url, "grpc", timeout=self.limits.call_timeout_s,
                                          overload_wait=self.limits.call_timeout_s)
        if self.settings is not None:
            from gateway.core.marking import Marker
            from gateway.storage.faces import make_results

            self.marker = await Marker.start(self.settings, self.client, make_results(self.settings))
            from gateway.core.content import ContentGate

            self.gate = ContentGate(self.settings)
            self.gate.log_start()
        self._expiry = asyncio.create_task(self._expire_forever())
        log.info("worker ready: queue %s, Triton %s, %d job(s) at once, heartbeat %g s", QUEUE_NAME,
                 self.triton_url, self.worker.concurrency, self.heartbeat_s)

    async def _shutdown(self, ctx: dict) -> None:
        self._expiry.cancel()
        if self.client is not None:
            await self.client.close()

    async def _expire_forever(self) -> None:
        while True:
            try:
                await sweep_expired(self.queue, self.media, self.ttl_s)
            except Exception:  # logged and tried again next time
                log.exception("expiry sweep failed")
            await asyncio.sleep(60)

    async def run(self) -> None:
        await self.worker.start()

    async def process(self, ctx: dict, *, input_key: str | None, latent: str, reference: str | None) -> dict:
        """saq's job function: never raises for a job's own failure (the job ends ``failed``
        with a code, and is not retried); only a stop (cancel, shutdown) propagates."""
        job: SaqJob = ctx["job"]
        meta = dict(job.meta or {})
        meta.update(done=0, total=0, eta_s=None, error=None, error_code=None)
        if job.attempts > 1:
            meta["warnings"] = [*meta.get("warnings", []), f"a job worker stopped while this job ran: started "
                                                           f"again from the beginning (attempt {job.attempts})"]
        await job.update(meta=meta, progress=0.0)
        progress_fields: dict = {}
        beat = asyncio.create_task(self._heartbeat(job, meta, progress_fields))
        t0 = time.monotonic()
        self.metrics.running.inc()
        try:
            outcome = await self._execute(job, meta, input_key, _unvec(latent), _unvec(reference),
                                          progress_fields)
            meta.update(outcome)
        except (JobFailed, FaceSwapError, VideoError, ValueError, OSError, zipfile.BadZipFile,
                *storage_errors()) as exc:  # the S3 store away mid-job: failed, storage_unavailable
            meta.update(outcome="failed", error=str(exc), error_code=failure_code(exc))
            log.warning("job %s failed (%s): %s", job.key, failure_code(exc), exc)
        finally:
            beat.cancel()
            self.metrics.running.dec()
        self.metrics.jobs.labels(meta.get("outcome", "failed")).inc()
        self.metrics.seconds.observe(time.monotonic() - t0)
        meta.update(progress_fields, eta_s=0.0 if meta.get("outcome") == "done" else None)
        await job.update(meta=meta, progress=1.0 if meta.get("outcome") == "done" else job.progress)
        await self.queue.redis.zadd(FINISHED, {job.key: time.time()})
        return {"outcome": meta["outcome"]}

    async def _heartbeat(self, job: SaqJob, meta: dict, fields: dict) -> None:
        """Write progress and beat every heartbeat_s / 4 (a swept job is one whose beat stopped)."""
        while True:
            await asyncio.sleep(max(self.heartbeat_s / 4, 0.5))
            try:
                await job.update(meta={**meta, **fields}, progress=float(fields.get("progress", 0.0)))
            except Exception:  # Redis briefly away: the next beat tries again
                log.warning("job %s: heartbeat failed", job.key, exc_info=True)

    async def _execute(self, job: SaqJob, meta: dict, input_key: str | None, latent: np.ndarray,
                       reference: np.ndarray | None, fields: dict) -> dict:
        kind, options = meta["kind"], meta.get("options", {})
        with tempfile.TemporaryDirectory(prefix=f"job-{job.key}-", dir=self.work_dir) as tmp:
            d = Path(tmp)
            if input_key is None:
                input_path = await asyncio.to_thread(fetch_input, kind, options["_input_url"], d, self.limits)
            else:
                input_path = d / Path(input_key).name
                await asyncio.to_thread(self.media.get_file, input_key, input_path)
            progress = progress_reporter(fields.update)
            outcome = await run_job(self.client, kind, input_path, d, latent, reference, options, self.limits,
                                    progress, lambda: False, options.get("_result_url"), self.marker, self.gate)
            result_key = f"jobs/{job.key}/{outcome.result.name}"
            await asyncio.to_thread(self.media.put_file, result_key, outcome.result, outcome.content_type)
        return {"outcome": "done", "result_key": result_key, "quality": outcome.quality,
                "warnings": [*meta.get("warnings", []), *outcome.warnings]}
