"""Which job, media and face-store backends a process uses, from its settings.

One machine (the default, no extra service): jobs in the gateway's threads with a SQLite
record, media in ``jobs_dir``, faces in SQLite. Scale-out (``redis_url`` set): jobs through
the Redis queue to ``faceswap-worker`` processes, faces in Redis, media in the S3 bucket when
``s3_endpoint_url`` is set (else in ``jobs_dir``, which every process must then share).
"""

from __future__ import annotations

from gateway.core.config import Settings
from gateway.core.execute import JobLimits
from gateway.core.media import DiskBudget, LocalMedia, MediaStore, S3Media
from media.batch import ArchiveLimits
from media.video import VideoLimits


def job_limits(s: Settings) -> JobLimits:
    return JobLimits(video=VideoLimits(s.video_max_duration_s, s.video_max_frames, s.video_max_frame_pixels,
                                       s.video_max_pixel_rate),
                     archive=ArchiveLimits(s.archive_max_entries, s.archive_max_total_bytes, s.archive_max_entry_bytes,
                                           s.archive_max_ratio),
                     in_flight=s.job_in_flight, max_input_bytes=s.max_job_upload_bytes, call_timeout_s=s.job_timeout_s)


def make_media(s: Settings) -> MediaStore:
    """S3 (bucket created when missing) when ``s3_endpoint_url`` is set, else ``jobs_dir``."""
    if not s.s3_endpoint_url:
        return LocalMedia(s.jobs_dir)
    media = S3Media(s.s3_endpoint_url, s.s3_bucket,
                    s.s3_access_key_id.get_secret_value() if s.s3_access_key_id else None,
                    s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None, s.s3_region)
    media.ensure_bucket()
    return media


def make_jobs(s: Settings):
    """The job backend of a gateway: ``JobRunner`` (in-process) or ``QueueJobs`` (Redis)."""
    if s.redis_url:
        from gateway.core.queue import QueueJobs, make_queue

        jobs = QueueJobs(make_queue(s.redis_url), make_media(s), job_limits(s), s.jobs_dir / "_uploads",
                         s.job_ttl_s, s.job_heartbeat_s, s.max_job_restarts)
    else:
        from gateway.core.jobs import JobRunner, JobStore

        s.jobs_dir.mkdir(parents=True, exist_ok=True)
        jobs = JobRunner(JobStore(s.store_path), s.jobs_dir, s.triton_url, s.max_concurrent_jobs, job_limits(s),
                         s.max_job_restarts)
    if isinstance(jobs.media, LocalMedia):  # an S3 bucket's quota is the operator's
        jobs.budget = DiskBudget(s.max_jobs_disk_bytes, jobs.media.used_bytes)
    return jobs


def make_face_store(s: Settings):
    """``RedisFaceStore`` when ``redis_url`` is set, else the SQLite ``FaceStore``."""
    from gateway.core.store import FaceStore, RedisFaceStore

    return RedisFaceStore(s.redis_url, s.face_ttl_s) if s.redis_url else FaceStore(s.store_path, s.face_ttl_s)


def make_results(s: Settings):
    """Where result ids are remembered: Redis with ``redis_url``, else beside the faces."""
    from gateway.core.store import RedisResultLog, ResultLog

    return RedisResultLog(s.redis_url, s.results_ttl_s) if s.redis_url else ResultLog(s.store_path, s.results_ttl_s)
