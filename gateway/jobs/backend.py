"""What every job backend is (``JobBackend``), the job record it hands the routes (``Job``),
and where uploads wait (``UploadFolders``).

Two backends implement it: ``gateway.jobs.runner.JobRunner`` (threads of the gateway, SQLite,
the one-machine default) and ``gateway.jobs.queue.QueueJobs`` (a Redis queue drained by
``faceswap-worker`` processes, media in S3 or a shared folder); ``gateway.backends.make_jobs``
picks one from the settings.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from gateway.storage.media import DiskBudget, MediaStore

#: A job in one of these states can still be cancelled.
ACTIVE = ("queued", "running")


@dataclass
class Job:
    """A job's row. ``done``/``total`` count frames (video) or files (batch). ``quality``: per
    face track of a done video, frames, mean and minimum identity transfer and leakage, and the
    flicker score (batch jobs carry theirs per image in ``batch_report.json``)."""

    id: str
    kind: str
    status: str
    created_at: float
    updated_at: float
    progress: float = 0.0
    done: int = 0
    total: int = 0
    eta_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    input: str = ""
    result: str | None = None
    options: dict = field(default_factory=dict)
    restarts: int = 0
    error_code: str | None = None
    quality: list[dict] = field(default_factory=list)

    def public(self) -> dict:
        """The job as the API shows it: no server paths, no signed URLs (options starting with
        ``_`` are private); ``result_ready``, and ``result_url_used`` when the result was PUT to
        the caller's ``result_url``."""
        d = asdict(self)
        d.pop("input")
        d["result_ready"] = self.status == "done" and self.result is not None
        d["result_url_used"] = d["result_ready"] and bool(self.options.get("_result_url"))
        d.pop("result")
        d["options"] = {k: v for k, v in self.options.items() if not k.startswith("_")}
        return d


class UploadFolders:
    """Where a route puts a job's upload before the backend takes it: ``upload_root/<job id>/``."""

    upload_root: Path

    def new_job(self) -> tuple[str, Path]:
        """A new job id and its folder (where the route puts the upload)."""
        job_id = uuid.uuid4().hex
        d = self.upload_root / job_id
        d.mkdir(parents=True)
        return job_id, d

    def discard(self, job_id: str) -> None:
        """Drop a job folder made by :meth:`new_job` (a job refused, or an upload moved away)."""
        shutil.rmtree(self.upload_root / job_id, ignore_errors=True)


class JobBackend(Protocol):
    """The job backend as the routes and the app use it (``app.state.jobs``)."""

    #: Where job media live (uploads, results).
    media: MediaStore
    #: The jobs folder's byte budget (local media only; None: the operator's S3 quota).
    budget: DiskBudget | None
    #: ``gateway.core.marking.Marker`` (set by the app at start): marks every result.
    marker: object
    #: ``gateway.core.content.ContentGate`` (set by the app at start): the policy jobs apply.
    gate: object

    @property
    def video_limits(self): ...

    def new_job(self) -> tuple[str, Path]: ...
    def discard(self, job_id: str) -> None: ...

    async def create(self, job_id: str, kind: str, input_path: Path | None, latent: np.ndarray,
                     reference: np.ndarray | None, options: dict, expected_bytes: int = 0) -> Job: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def cancel(self, job_id: str) -> Job | None: ...
    async def delete(self, job_id: str) -> None: ...
    async def result(self, job: Job, filename: str) -> Path | str: ...
    async def counts(self) -> dict[str, int]: ...
    async def start(self) -> int: ...
    async def expire(self, ttl_s: float) -> int: ...
    async def close(self) -> None: ...
