"""Face store: registered faces (embedding, swap latent, thumbnail) in a SQLite file with expiry."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger("gateway.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS faces (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    box TEXT NOT NULL,
    score REAL NOT NULL,
    embedding BLOB NOT NULL,
    latent BLOB NOT NULL,
    thumbnail BLOB NOT NULL,
    image_sha256 TEXT NOT NULL,
    stand_in INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_expiry ON faces (expires_at);
"""


@dataclass
class StoredFace:
    """One registered face.

    Attributes:
        id: opaque id (32 hex characters).
        box: [x1, y1, x2, y2] pixels in the image it came from.
        embedding: float32 [512] L2-normed ArcFace embedding.
        latent: float32 [512] inswapper source latent.
        thumbnail: JPEG bytes of the aligned face.
        created_at, expires_at: Unix seconds.
        stand_in: True when computed with stand-in models.
    """

    id: str
    box: list[float]
    score: float
    embedding: np.ndarray
    latent: np.ndarray
    thumbnail: bytes
    image_sha256: str
    created_at: float
    expires_at: float
    stand_in: bool

    @classmethod
    def new(cls, box: list[float], score: float, embedding: np.ndarray, latent: np.ndarray, thumbnail: bytes,
            image_sha256: str, stand_in: bool, ttl_s: float) -> StoredFace:
        """A face registered now, with a fresh id, expiring ``ttl_s`` seconds from now."""
        now = time.time()
        return cls(uuid.uuid4().hex, [float(v) for v in box], float(score), np.asarray(embedding, np.float32),
                   np.asarray(latent, np.float32), thumbnail, image_sha256, now, now + ttl_s, stand_in)


class FaceStore(Protocol):
    """Registered faces, as the routes use them (``app.state.store``): :class:`SQLiteFaceStore`
    on one machine, :class:`RedisFaceStore` when several processes share them. Calls block."""

    def add(self, box: list[float], score: float, embedding: np.ndarray, latent: np.ndarray, thumbnail: bytes,
            image_sha256: str, stand_in: bool) -> StoredFace: ...
    def get(self, face_id: str) -> StoredFace | None: ...
    def delete(self, face_id: str) -> bool: ...
    def sweep(self, now: float | None = None) -> int: ...
    def close(self) -> None: ...


class ResultLog(Protocol):
    """The result ids this service gave its outputs, for ``/v1/verify``: :class:`SQLiteResultLog`
    or :class:`RedisResultLog`."""

    def remember(self, result_id: int, kind: str) -> None: ...
    def lookup(self, result_id: int) -> dict | None: ...
    def close(self) -> None: ...


class SQLiteFaceStore:
    """The one-machine :class:`FaceStore`: a thread-safe SQLite file; expired faces are invisible
    and purged on writes."""

    def __init__(self, path: Path, ttl_s: int) -> None:
        self.path, self.ttl_s = Path(path), ttl_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, box: list[float], score: float, embedding: np.ndarray, latent: np.ndarray, thumbnail: bytes,
            image_sha256: str, stand_in: bool) -> StoredFace:
        face = StoredFace.new(box, score, embedding, latent, thumbnail, image_sha256, stand_in, self.ttl_s)
        now = face.created_at
        with self._lock:
            self._db.execute("DELETE FROM faces WHERE expires_at < ?", (now,))
            self._db.execute(
                "INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (face.id, face.created_at, face.expires_at, json.dumps(face.box), face.score,
                 face.embedding.tobytes(), face.latent.tobytes(), face.thumbnail, image_sha256, int(stand_in)))
        return face

    def get(self, face_id: str) -> StoredFace | None:
        with self._lock:
            row = self._db.execute("SELECT id, box, score, embedding, latent, thumbnail, image_sha256, created_at, "
                                   "expires_at, stand_in FROM faces WHERE id = ? AND expires_at >= ?",
                                   (face_id, time.time())).fetchone()
        if row is None:
            return None
        return StoredFace(row[0], json.loads(row[1]), row[2], np.frombuffer(row[3], np.float32),
                          np.frombuffer(row[4], np.float32), row[5], row[6], row[7], row[8], bool(row[9]))

    def sweep(self, now: float | None = None) -> int:
        """Delete the faces past their expiry; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM faces WHERE expires_at < ?", (time.time() if now is None else now,))
        return cur.rowcount

    def delete(self, face_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM faces WHERE id = ?", (face_id,))
        return cur.rowcount > 0


class RedisFaceStore:
    """The face store shared by gateway replicas: one Redis hash per face, with Redis' own
    expiry (``EXPIRE`` = ``ttl_s``), so there is nothing to sweep. Same methods as
    :class:`FaceStore`.

    Args:
        url: ``redis://host:port/db``.
        ttl_s: seconds a registered face is kept.
    """

    PREFIX = "faceswap:face:"

    def __init__(self, url: str, ttl_s: int) -> None:
        import redis

        self.ttl_s = ttl_s
        self._r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)

    def close(self) -> None:
        self._r.close()

    def add(self, box: list[float], score: float, embedding: np.ndarray, latent: np.ndarray, thumbnail: bytes,
            image_sha256: str, stand_in: bool) -> StoredFace:
        face = StoredFace.new(box, score, embedding, latent, thumbnail, image_sha256, stand_in, self.ttl_s)
        key = self.PREFIX + face.id
        with self._r.pipeline(transaction=True) as p:
            p.hset(key, mapping={"box": json.dumps(face.box), "score": face.score,
                                 "embedding": face.embedding.tobytes(),
                                 "latent": face.latent.tobytes(), "thumbnail": thumbnail, "image_sha256": image_sha256,
                                 "created_at": face.created_at, "expires_at": face.expires_at,
                                 "stand_in": int(stand_in)})
            p.expire(key, self.ttl_s)
            p.execute()
        return face

    def get(self, face_id: str) -> StoredFace | None:
        h = self._r.hgetall(self.PREFIX + face_id)
        if not h:
            return None
        return StoredFace(face_id, json.loads(h[b"box"]), float(h[b"score"]),
                          np.frombuffer(h[b"embedding"], np.float32),
                          np.frombuffer(h[b"latent"], np.float32), h[b"thumbnail"], h[b"image_sha256"].decode(),
                          float(h[b"created_at"]), float(h[b"expires_at"]), h[b"stand_in"] == b"1")

    def sweep(self, now: float | None = None) -> int:
        return 0  # Redis expires the keys itself

    def delete(self, face_id: str) -> bool:
        return bool(self._r.delete(self.PREFIX + face_id))


class SQLiteResultLog:
    """The result ids this service gave its outputs (carried by their watermark and manifest),
    with when and what, for ``/v1/verify``: a SQLite table beside the faces, rows kept
    ``ttl_s``. Expired rows are deleted at most once every ``SWEEP_S`` seconds, through an index
    on ``created_at`` (a live stream adds a row per frame: a 90-day table grows to millions of
    rows, and a full scan on every insert cost 1 ms at 20,000 rows and grew with them);
    ``lookup`` ignores expired rows not yet swept."""

    SWEEP_S = 60.0

    def __init__(self, path: Path, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY, created_at REAL NOT NULL, "
                         "kind TEXT NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS results_created_at ON results (created_at)")
        self._swept = 0.0

    def remember(self, result_id: int, kind: str) -> None:
        now = time.time()
        with self._lock:
            if now - self._swept >= self.SWEEP_S:
                self._db.execute("DELETE FROM results WHERE created_at < ?", (now - self.ttl_s,))
                self._swept = now
            self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (result_id, now, kind))

    def lookup(self, result_id: int) -> dict | None:
        """``{"created_at": Unix s, "kind": "image" | "video" | "batch" | "stream"}`` or None."""
        with self._lock:
            row = self._db.execute("SELECT created_at, kind FROM results WHERE id = ? AND created_at >= ?",
                                   (result_id, time.time() - self.ttl_s)).fetchone()
        return None if row is None else {"created_at": row[0], "kind": row[1]}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisResultLog:
    """:class:`ResultLog` in Redis (shared by gateways and job workers; Redis expires the keys).

    Remembering a result never fails a swap: while Redis is unreachable the ids wait in this
    process (up to ``pending_max``, oldest dropped first, logged) and are written on the next call
    that reaches Redis. ``lookup`` sees the waiting ids too.
    """

    PREFIX = "faceswap:result:"

    def __init__(self, url: str, ttl_s: float, pending_max: int = 100_000) -> None:
        import collections

        import redis

        self.ttl_s = int(ttl_s)
        self._r = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._pending: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._pending_max = pending_max
        self._lock = threading.Lock()

    def _flush(self) -> None:
        with self._lock:
            items = list(self._pending.items())
        if not items:
            return
        with self._r.pipeline(transaction=False) as p:
            for rid, value in items:
                p.set(f"{self.PREFIX}{rid}", value, ex=self.ttl_s)
            p.execute()
        with self._lock:
            for rid, _ in items:
                self._pending.pop(rid, None)
        log.info("%d result id(s) kept while Redis was away are written now", len(items))

    def remember(self, result_id: int, kind: str) -> None:
        from redis.exceptions import ConnectionError, TimeoutError

        value = json.dumps({"created_at": time.time(), "kind": kind})
        try:
            self._flush()
            self._r.set(f"{self.PREFIX}{result_id}", value, ex=self.ttl_s)
        except (ConnectionError, TimeoutError) as exc:
            with self._lock:
                self._pending[result_id] = value
                while len(self._pending) > self._pending_max:
                    self._pending.popitem(last=False)
                n = len(self._pending)
            log.warning("Redis unreachable (%s): result id kept in this process until it is back (%d waiting)",
                        type(exc).__name__, n)

    def lookup(self, result_id: int) -> dict | None:
        with self._lock:
            waiting = self._pending.get(result_id)
        if waiting is not None:
            return json.loads(waiting)
        raw = self._r.get(f"{self.PREFIX}{result_id}")
        return None if raw is None else json.loads(raw)

    def close(self) -> None:
        self._r.close()


def make_face_store(s) -> FaceStore:
    """``RedisFaceStore`` when ``s.redis_url`` is set, else the SQLite store at ``s.store_path``
    (``s``: ``gateway.core.config.Settings``)."""
    return RedisFaceStore(s.redis_url, s.face_ttl_s) if s.redis_url else SQLiteFaceStore(s.store_path, s.face_ttl_s)


def make_results(s) -> ResultLog:
    """Where result ids are remembered: Redis with ``s.redis_url``, else beside the faces."""
    return (RedisResultLog(s.redis_url, s.results_ttl_s) if s.redis_url
            else SQLiteResultLog(s.store_path, s.results_ttl_s))
