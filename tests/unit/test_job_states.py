"""What a Redis-queue job record shows the API (gateway.jobs.queue.to_public), whatever state
saq left it in: a sweep's abort is never shown as a caller's cancel."""

from __future__ import annotations

from saq import Job as SaqJob
from saq import Status

from gateway.jobs.queue import CANCELLED, FUNCTION, SWEPT, to_public


def record(status: Status, error: str | None, attempts: int, retries: int = 4) -> SaqJob:
    return SaqJob(FUNCTION, key="j", status=status, error=error, attempts=attempts, retries=retries,
                  meta={"kind": "video"}, queued=1, touched=1)


def test_a_sweeps_abort_with_restarts_left_is_queued_not_cancelled():
    job = to_public(record(Status.ABORTED, SWEPT, attempts=1), ttl_s=3600, heartbeat_s=10)
    assert job.status == "queued" and job.error is None and job.error_code is None
    job = to_public(record(Status.ABORTED, "abort", attempts=1), ttl_s=3600, heartbeat_s=10)
    assert job.status == "queued"  # an abort with no caller behind it is not a cancel


def test_a_sweeps_abort_past_the_restart_limit_fails_with_its_code():
    job = to_public(record(Status.ABORTED, SWEPT, attempts=4), ttl_s=3600, heartbeat_s=10)
    assert (job.status, job.error_code) == ("failed", "job_restart_limit") and "4 time(s)" in job.error


def test_a_callers_cancel_is_cancelled():
    job = to_public(record(Status.ABORTED, CANCELLED, attempts=1), ttl_s=3600, heartbeat_s=10)
    assert job.status == "cancelled"
