"""Batch archives from untrusted callers: streamed, capped, refused entry by entry.

Every archive is made by the test itself (the zip bomb too: its deflate stream is computed
once and its headers written by hand, so 10 GB of zeros take a tenth of a second to make).
"""

from __future__ import annotations

import asyncio
import io
import stat
import zipfile

import pytest

from media.batch import ArchiveLimitError, ArchiveLimits, iter_inputs
from tests.support.hostile import bomb_zip


def png(seed: int = 0) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_bomb_is_refused_before_anything_is_read(tmp_path):
    bomb = tmp_path / "bomb.zip"
    bomb_zip(bomb, 200, 50 << 20)  # 10 GB of zeros in about 10 MB
    assert bomb.stat().st_size < 12 << 20
    with pytest.raises(ArchiveLimitError) as e:
        next(iter_inputs(bomb))
    assert e.value.code == "archive_too_large"


def test_bad_entries_are_refused_one_by_one_with_a_reason(tmp_path):
    z = tmp_path / "mixed.zip"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zi:
        zi.writestr("x.png", png(1))
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.png", png(0))
        zf.writestr("bomb.png", bytes(20 << 20))  # 20 MB of zeros: ~1000:1
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        fifo = zipfile.ZipInfo("fifo.png")
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(fifo, "")
        zf.writestr("nested.zip", inner.getvalue())
        zf.writestr("big.png", png(2) + bytes(31 << 20), compress_type=zipfile.ZIP_STORED)
    got = dict(iter_inputs(z, ArchiveLimits(max_entry_bytes=30 << 20)))
    assert isinstance(got["good.png"], bytes)
    reasons = {k: str(v) for k, v in got.items() if isinstance(v, Exception)}
    assert "zip bomb" in reasons["bomb.png"] and "symbolic link" in reasons["link.png"]
    assert "special file" in reasons["fifo.png"] and "archive inside" in reasons["nested.zip"]
    assert "allowed per file" in reasons["big.png"]


def test_whole_archive_limits_count_real_bytes_and_entries(tmp_path):
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(5):
            zf.writestr(f"{i}.png", png(i) + bytes(300_000))
    with pytest.raises(ArchiveLimitError) as e:
        list(iter_inputs(z, ArchiveLimits(max_entries=4)))
    assert e.value.code == "archive_too_many_entries"
    with pytest.raises(ArchiveLimitError) as e:
        list(iter_inputs(z, ArchiveLimits(max_total_bytes=1_000_000, max_ratio=1e9)))
    assert e.value.code == "archive_too_large"
    assert len(list(iter_inputs(z, ArchiveLimits(max_ratio=1e9)))) == 5


def test_reading_stops_when_cancelled(tmp_path):
    z = tmp_path / "c.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", png(i))
    calls = iter([False, False, True])
    with pytest.raises(asyncio.CancelledError):
        list(iter_inputs(z, cancelled=lambda: next(calls, True)))


def test_restart_limit_fails_a_job_that_keeps_dying(tmp_path):
    import numpy as np

    from gateway.jobs.execute import JobLimits
    from gateway.jobs.runner import JobRunner, JobStore

    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create("batch", str(tmp_path / "in.zip"), np.zeros(512, np.float32), None, {}, "j1")
    store.update(job.id, status="running", restarts=3)
    runner = JobRunner(store, tmp_path / "jobs", "127.0.0.1:1", 1, JobLimits(), max_restarts=3)
    try:
        assert runner.recover() == 0
        j = store.get("j1")
        assert (j.status, j.error_code) == ("failed", "job_restart_limit") and "3 restarts" in j.error
        assert j.public()["error_code"] == "job_restart_limit"
    finally:
        runner.shutdown()
