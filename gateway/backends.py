"""Which job backend a process uses, from its settings (the face store and the result log:
``gateway.storage.faces.make_face_store`` / ``make_results``; job media:
``gateway.storage.media.make_media``).

One machine (the default, no extra service): jobs in the gateway's threads with a SQLite
record, media in ``jobs_dir``, faces in SQLite. Scale-out (``redis_url`` set): jobs through
the Redis queue to ``faceswap-worker`` processes, faces in Redis, media in the S3 bucket when
``s3_endpoint_url`` is set (else in ``jobs_dir``, which every process must then share).
"""

from __future__ import annotations

from gateway.core.config import Settings
from gateway.jobs.backend import JobBackend
from gateway.jobs.execute import JobLimits
from gateway.storage.media import DiskBudget, LocalMedia, make_media
from media.batch import ArchiveLimits
from media.video import VideoLimits


def job_limits(s: Settings) -> JobLimits:
    return JobLimits(video=VideoLimits(s.video_max_duration_s, s.video_max_frames, s.video_max_frame_pixels,
                                       s.video_max_pixel_rate),
                     archive=ArchiveLimits(s.archive_max_entries, s.archive_max_total_bytes, s.archive_max_entry_bytes,
                                           s.archive_max_ratio),
                     in_flight=s.job_in_flight, max_input_bytes=s.max_job_upload_bytes, call_timeout_s=s.job_timeout_s)


def make_jobs(s: Settings) -> JobBackend:
    """The job backend of a gateway: ``JobRunner`` (in-process) or ``QueueJobs`` (Redis)."""
    if s.redis_url:
        from gateway.jobs.queue import QueueJobs, make_queue

        jobs = QueueJobs(make_queue(s.redis_url), make_media(s), job_limits(s), s.jobs_dir / "_uploads",
                         s.job_ttl_s, s.job_heartbeat_s, s.max_job_restarts)
    else:
        from gateway.jobs.runner import JobRunner, JobStore

        s.jobs_dir.mkdir(parents=True, exist_ok=True)
        jobs = JobRunner(JobStore(s.store_path), s.jobs_dir, s.triton_url, s.max_concurrent_jobs, job_limits(s),
                         s.max_job_restarts)
    if isinstance(jobs.media, LocalMedia):  # an S3 bucket's quota is the operator's
        jobs.budget = DiskBudget(s.max_jobs_disk_bytes, jobs.media.used_bytes)
    return jobs
