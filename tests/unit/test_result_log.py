"""The result-id log behind /v1/verify (gateway.storage.faces.SQLiteResultLog): expired ids are
not found, they are deleted by a periodic sweep through an index, not by a scan on every insert."""

from __future__ import annotations

import time

from gateway.storage.faces import SQLiteResultLog


def test_expired_ids_are_not_found_and_the_sweep_deletes_them(tmp_path, monkeypatch):
    log = SQLiteResultLog(tmp_path / "results.sqlite3", ttl_s=100)
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    log.remember(1, "image")
    now[0] += 30
    log.remember(2, "stream")
    now[0] += 80  # id 1 is 110 s old: expired; id 2 is 80 s old; the last sweep was 110 s ago
    assert log.lookup(1) is None and log.lookup(2)["kind"] == "stream"
    log.remember(3, "stream")  # sweeps (over SWEEP_S since the last one), then inserts
    assert [r[0] for r in log._db.execute("SELECT id FROM results ORDER BY id")] == [2, 3]
    now[0] += 1
    log.remember(4, "stream")  # no sweep within SWEEP_S
    plan = " ".join(str(r) for r in log._db.execute("EXPLAIN QUERY PLAN DELETE FROM results WHERE created_at < 0"))
    assert "results_created_at" in plan  # the sweep reads the index, not the whole table
    log.close()
