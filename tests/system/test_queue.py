"""The Redis-backed pieces of scale-out against a real redis-server (no Triton): job records,
cancel and delete of queued jobs, expiry of finished jobs' media, the shared face store."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from saq import Status

from gateway.jobs.execute import JobLimits
from gateway.jobs.queue import FINISHED, QueueJobs, make_queue, sweep_expired, to_public
from gateway.storage.faces import RedisFaceStore
from gateway.storage.media import LocalMedia


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    from launch.services import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start(30)
    try:
        yield server.url
    finally:
        server.stop()


def run(coro):
    return asyncio.run(coro)


def test_queued_job_record_cancel_and_delete(redis_url, tmp_path):
    async def main():
        media = LocalMedia(tmp_path / "media")
        jobs = QueueJobs(make_queue(redis_url), media, JobLimits(), tmp_path / "uploads", ttl_s=3600)
        await jobs.start()
        try:
            job_id, d = jobs.new_job()
            (d / "input.mp4").write_bytes(b"\0" * 1000)
            opts = {"selection": "largest", "_input_url": None, "_result_url": "https://r2.example/put?sig=secret"}
            job = await jobs.create(job_id, "video", d / "input.mp4", np.ones(512, np.float32), None, opts)
            assert job.status == "queued" and media.exists(f"jobs/{job_id}/input.mp4") and not d.exists()
            public = (await jobs.get(job_id)).public()
            assert public["status"] == "queued" and "secret" not in str(public), public
            assert (await jobs.counts())["queued"] == 1
            cancelled = await jobs.cancel(job_id)  # no worker runs: a queued job is cancelled at once
            assert cancelled.status == "cancelled"
            assert (await jobs.counts())["queued"] == 0
            await jobs.delete(job_id)
            assert await jobs.get(job_id) is None and not media.exists(f"jobs/{job_id}/input.mp4")
        finally:
            await jobs.close()

    run(main())


def test_finished_jobs_expire_with_their_media(redis_url, tmp_path):
    async def main():
        queue = make_queue(redis_url)
        media = LocalMedia(tmp_path / "media")
        jobs = QueueJobs(queue, media, JobLimits(), tmp_path / "uploads", ttl_s=60)
        await jobs.start()
        try:
            job_id, d = jobs.new_job()
            (d / "input.zip").write_bytes(b"PK\x03\x04")
            await jobs.create(job_id, "batch", d / "input.zip", np.ones(512, np.float32), None, {})
            saq_job = await queue.job(job_id)
            await queue.finish(saq_job, Status.COMPLETE, result={"outcome": "done"})
            saq_job = await queue.job(job_id)
            assert to_public(saq_job, 60, 10).status == "done"
            old = time.time() - 120
            await queue.redis.zadd(FINISHED, {job_id: old})
            assert await sweep_expired(queue, media, 60) == 1
            assert not media.exists(f"jobs/{job_id}/input.zip")
            assert await sweep_expired(queue, media, 60) == 0  # taken once
            # the record reads as expired once its finish is older than the TTL
            saq_job.completed = int(old * 1000)
            assert to_public(saq_job, 60, 10).status == "expired"
        finally:
            await jobs.close()

    run(main())


def test_redis_face_store_shares_and_expires(redis_url):
    a, b = RedisFaceStore(redis_url, ttl_s=1), RedisFaceStore(redis_url, ttl_s=1)
    try:
        emb = np.random.default_rng(0).standard_normal(512).astype(np.float32)
        face = a.add([1, 2, 3, 4], 0.9, emb, emb * 2, b"jpeg", "ab" * 32, True)
        got = b.get(face.id)  # another gateway's store sees it
        assert got is not None and np.array_equal(got.embedding, emb) and np.array_equal(got.latent, emb * 2)
        assert got.box == [1.0, 2.0, 3.0, 4.0] and got.stand_in and got.thumbnail == b"jpeg"
        time.sleep(2.1)
        assert b.get(face.id) is None  # Redis expired it
        f2 = a.add([0, 0, 1, 1], 0.5, emb, emb, b"x", "cd" * 32, False)
        assert b.delete(f2.id) and a.get(f2.id) is None and not b.delete(f2.id)
    finally:
        a.close()
        b.close()
