"""Video and batch jobs on one machine: kept in the gateway's SQLite file, run by a bounded
pool of threads inside the gateway (the zero-setup default; ``gateway.jobs.queue`` is the
Redis-queue backend with separate ``faceswap-worker`` processes, with the same interface).

A job is ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. Inputs and results
live under ``jobs_dir/<id>/``. Each thread runs the job with its own asyncio loop and gRPC
client (``gateway.jobs.execute``), writing progress to the store.

Restarts: at shutdown, running jobs are interrupted and left ``running``; at start, every
``queued`` or ``running`` job is queued again (a running one restarts from its first frame,
with a warning saying so). No job is silently lost; one whose input is gone is ``failed``
with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from client import AsyncFaceSwapClient, FaceSwapError
from gateway.jobs.backend import ACTIVE, Job, UploadFolders
from gateway.jobs.execute import JobFailed, JobLimits, failure_code, fetch_input, progress_reporter, run_job
from gateway.storage.media import DiskBudget, LocalMedia, reserving
from media.video import VideoError

log = logging.getLogger("gateway.jobs")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, progress REAL NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0, eta_s REAL, warnings TEXT NOT NULL DEFAULT '[]', error TEXT,
    input TEXT NOT NULL, result TEXT, latent BLOB NOT NULL, reference BLOB, options TEXT NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0, error_code TEXT
);
"""
#: Columns added after the first release, with their definitions (added to older files at open).
MIGRATIONS = {"error_code": "TEXT", "quality": "TEXT NOT NULL DEFAULT '[]'"}


class JobStore:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for col, kind in MIGRATIONS.items():
            if col not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, kind: str, input_path: str, latent: np.ndarray, reference: np.ndarray | None, options: dict,
               job_id: str) -> Job:
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, kind, status, created_at, updated_at, input, latent, reference, "
                             "options) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                             (job_id, kind, now, now, input_path, np.asarray(latent, np.float32).tobytes(),
                              None if reference is None else np.asarray(reference, np.float32).tobytes(),
                              json.dumps(options)))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT id, kind, status, created_at, updated_at, progress, done, total, eta_s, "
                                   "warnings, error, input, result, options, restarts, error_code, quality FROM jobs "
                                   "WHERE id = ?",
                                   (job_id,)).fetchone()
        if row is None:
            return None
        return Job(*row[:9], json.loads(row[9]), row[10], row[11], row[12], json.loads(row[13]), row[14], row[15],
                   json.loads(row[16] or "[]"))

    def vectors(self, job_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        with self._lock:
            lat, ref = self._db.execute("SELECT latent, reference FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return np.frombuffer(lat, np.float32), None if ref is None else np.frombuffer(ref, np.float32)

    def update(self, job_id: str, **fields) -> None:
        for key in ("warnings", "quality"):
            if key in fields:
                fields[key] = json.dumps(fields[key])
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def active(self) -> list[Job]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running') "
                                                   "ORDER BY created_at")]
        return [j for j in (self.get(i) for i in ids) if j is not None]

    def finished_before(self, t: float) -> list[Job]:
        """Jobs done, failed or cancelled whose last change is older than ``t`` (Unix seconds)."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status IN ('done', 'failed', "
                                                   "'cancelled') AND updated_at < ?", (t,))]
        return [j for j in (self.get(i) for i in ids) if j is not None]

    def forget_expired_before(self, t: float) -> None:
        """Delete the tombstones of jobs that expired before ``t``."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE status = 'expired' AND updated_at < ?", (t,))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


class JobRunner(UploadFolders):
    """The in-process job backend: runs jobs on ``workers`` threads of the gateway.

    Args:
        limits: bounds of one job's work (video and archive limits, Triton calls in flight,
            largest input fetched from a URL, deadline of each Triton call).
        max_restarts: a job interrupted by gateway stops is started again at most this often.
    """

    def __init__(self, store: JobStore, jobs_dir: Path, triton_url: str, workers: int, limits: JobLimits,
                 max_restarts: int = 3) -> None:
        self.store, self.jobs_dir, self.triton_url = store, Path(jobs_dir), triton_url
        self.upload_root = self.jobs_dir  # an upload stays where the job runs
        self.limits, self.max_restarts = limits, max_restarts
        self.media = LocalMedia(self.jobs_dir)
        self.budget: DiskBudget | None = None  # set by make_jobs (max_jobs_disk_bytes)
        self._expected: dict[str, int] = {}  # job id -> bytes reserved for its result until it ends
        self.marker = None  # set by the gateway at start (gateway.core.marking.Marker)
        self.gate = None  # set by the gateway at start (gateway.core.content.ContentGate)
        self._pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="job")
        self._cancel: dict[str, str] = {}
        self._stopping = False

    # -- the backend interface used by the routes ------------------------------------------

    @property
    def video_limits(self):
        return self.limits.video

    async def create(self, job_id: str, kind: str, input_path: Path | None, latent: np.ndarray,
                     reference: np.ndarray | None, options: dict, expected_bytes: int = 0) -> Job:
        """Record and queue a job. ``input_path``: the upload in the job's folder, or None when
        ``options["_input_url"]`` names where to fetch it. ``expected_bytes``: what the route
        reserved in :attr:`budget` for the result, given back when the job ends."""
        job = self.store.create(kind, str(input_path or ""), latent, reference, options, job_id)
        if expected_bytes:
            self._expected[job_id] = expected_bytes
        self._pool.submit(self._run, job_id)
        return job

    async def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    async def cancel(self, job_id: str) -> Job | None:
        """Ask a queued or running job to stop; waits up to 3 s for it to stop."""
        self._cancel[job_id] = "cancelled"
        job = self.store.get(job_id)
        if job is not None and job.status == "queued":
            self.store.update(job_id, status="cancelled")
        for _ in range(30):  # a running job stops within about a second wherever it is
            job = self.store.get(job_id)
            if job is None or job.status not in ACTIVE:
                break
            await asyncio.sleep(0.1)
        return job

    async def delete(self, job_id: str) -> None:
        self.discard(job_id)  # the job's folder: its input and result
        self.store.delete(job_id)

    async def result(self, job: Job, filename: str) -> Path | str:
        """Where to read a done job's result: its file."""
        return Path(job.result)

    async def counts(self) -> dict[str, int]:
        """Jobs queued and running (for /metrics)."""
        active = self.store.active()
        return {s: sum(j.status == s for j in active) for s in ACTIVE}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Queue again the jobs an earlier process left (see :meth:`recover`)."""
        return await asyncio.to_thread(self.recover)

    async def expire(self, ttl_s: float) -> int:
        return await asyncio.to_thread(self.sweep, ttl_s)

    async def close(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def recover(self) -> int:
        """Queue again every job left queued or running by an earlier process; returns how many."""
        jobs, queued = self.store.active(), 0
        for job in jobs:
            if job.status == "running" and job.restarts >= self.max_restarts:
                self.store.update(job.id, status="failed", error_code="job_restart_limit",
                                  error=f"the gateway stopped while this job ran {job.restarts + 1} times; it is not "
                                        f"started again (limit {self.max_restarts} restarts)")
                log.warning("job %s failed: restart limit", job.id)
                continue
            if job.status == "running":
                warnings = [*job.warnings, "the gateway restarted while this job ran: it was started again "
                                           "from the beginning"]
                self.store.update(job.id, status="queued", warnings=warnings, restarts=job.restarts + 1,
                                  progress=0.0, done=0)
            self._pool.submit(self._run, job.id)
            queued += 1
        return queued

    def sweep(self, ttl_s: float, now: float | None = None) -> int:
        """Expire finished jobs ``ttl_s`` after they finished: their files are deleted and the row
        becomes a tombstone (status ``expired``, read as 404 ``job_expired``) kept for 7 TTLs.
        Queued and running jobs never expire. Returns how many expired."""
        now = time.time() if now is None else now
        expired = self.store.finished_before(now - ttl_s)
        for job in expired:
            shutil.rmtree(self.jobs_dir / job.id, ignore_errors=True)
            self.store.update(job.id, status="expired", result=None, latent=b"", reference=None)
        self.store.forget_expired_before(now - 7 * ttl_s)
        if expired:
            log.info("%d finished job(s) expired; their files were deleted", len(expired))
        return len(expired)

    def shutdown(self) -> None:
        self._stopping = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    def _stop_reason(self, job_id: str) -> str | None:
        return "shutdown" if self._stopping else self._cancel.get(job_id)

    def _run(self, job_id: str) -> None:
        try:
            self._run_job(job_id)
        finally:
            expected = self._expected.pop(job_id, 0)
            if expected and self.budget is not None:
                self.budget.give(expected)

    def _run_job(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.status not in ACTIVE or self._stop_reason(job_id):
            return
        self.store.update(job_id, status="running", error=None, error_code=None)
        try:
            outcome = asyncio.run(self._run_async(job))
            self.store.update(job_id, status="done", progress=1.0, eta_s=0.0, result=str(outcome.result),
                              warnings=[*job.warnings, *outcome.warnings], quality=outcome.quality)
        except asyncio.CancelledError:
            if self._stop_reason(job_id) == "cancelled":
                self.store.update(job_id, status="cancelled")
            # shutdown: left "running" so that the next start queues it again
        except (JobFailed, FaceSwapError, VideoError, ValueError, OSError, zipfile.BadZipFile) as exc:
            self.store.update(job_id, status="failed", error=str(exc), error_code=failure_code(exc))
            log.warning("job %s failed (%s): %s", job_id, failure_code(exc), exc)
        except Exception as exc:  # a job must end in a state, whatever broke
            log.exception("job %s crashed", job_id)
            self.store.update(job_id, status="failed", error=f"internal error: {exc}", error_code=failure_code(exc))

    async def _run_async(self, job: Job):
        latent, reference = self.store.vectors(job.id)
        d = self.jobs_dir / job.id
        d.mkdir(parents=True, exist_ok=True)
        url = job.options.get("_input_url")
        if url:
            with reserving(self.budget) as reserve:  # each chunk of the download, in the disk budget
                input_path = await asyncio.to_thread(fetch_input, job.kind, url, d, self.limits, reserve)
        else:
            input_path = Path(job.input)
        progress = progress_reporter(lambda fields: self.store.update(job.id, **fields))
        # A job waits on a full Triton (up to the deadline of a call) instead of failing.
        async with AsyncFaceSwapClient(self.triton_url, "grpc", timeout=self.limits.call_timeout_s,
                                       overload_wait=self.limits.call_timeout_s) as client:
            return await run_job(client, job.kind, input_path, d, latent, reference, job.options, self.limits,
                                 progress, lambda: self._stop_reason(job.id) is not None,
                                 job.options.get("_result_url"), self.marker, self.gate)
