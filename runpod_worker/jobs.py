"""What one RunPod job does, apart from the SDK (so the unit tests need neither runpod nor Triton).

:func:`parse_input` checks a job's ``input`` against :class:`JobInput`; :class:`Jobs` runs it
against a Triton server (gRPC) with the gateway's own parts: the face store, the media URL
allow-list and fetch, the S3 settings (``gateway.core.config.Settings``, the same
``FACESWAP_GATEWAY_*`` environment). Every failure is a :class:`JobError` with a code (the
gateway's codes where one exists) and a message meant for a person.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from client import AsyncFaceSwapClient, FaceSwapClient
from client.errors import (
    FaceSwapError,
    InvalidInput,
    ModelFailed,
    ModelOutputInvalid,
    NoFaceError,
    RequestTimeout,
    ServerUnavailable,
)

log = logging.getLogger("runpod_worker")

#: Results up to this many bytes come back inline as base64 (RunPod caps a job's output payload).
DEFAULT_MAX_INLINE_BYTES = 2_000_000
#: Seconds a presigned result URL stays valid (as the gateway's job results).
RESULT_URL_TTL_S = 3600


class JobError(Exception):
    """A job that cannot be done. ``code``: ``invalid_input``, ``no_face``, ``face_not_found``,
    ``media_url_not_allowed``, ``input_fetch_failed``, ``input_too_large``, ``model_failed``,
    ``model_output_invalid``, ``triton_unavailable``, ``timeout``, ``storage_not_configured``,
    ``result_upload_failed``; the message says what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def as_output(self) -> dict[str, str]:
        """The handler's return value for this failure (the SDK marks the job FAILED)."""
        return {"error": f"{self.code}: {self}"}


class Media(BaseModel):
    """An input file: exactly one of ``base64`` (the file's bytes) or ``url`` (http/https, under
    ``FACESWAP_GATEWAY_MEDIA_URL_PREFIXES``)."""

    model_config = ConfigDict(extra="forbid")
    base64: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Media:
        if (self.base64 is None) == (self.url is None):
            raise ValueError("give exactly one of base64 or url")
        return self


class JobInput(BaseModel):
    """A job's ``input``.

    Attributes:
        task: "register" (faces of ``image`` into the face store), "swap" (``target`` image) or
            "video" (``video_url``).
        image: the photo to register (task register).
        target: the image to swap faces in (task swap).
        source / source_face_id: the identity, a photo (its largest face) or a registered face's
            id (tasks swap and video); exactly one.
        video_url: the video (task video), under the allowed prefixes.
        options: swap options (``client.FaceSwapClient.swap``: selection, output_format,
            quality, max_faces, ...); Triton checks them (a bad one: ``invalid_input``).
        max_inline_bytes: results up to this size come back as base64, larger ones go to the
            bucket (0: always the bucket).
    """

    model_config = ConfigDict(extra="forbid")
    task: Literal["register", "swap", "video"]
    image: Media | None = None
    target: Media | None = None
    source: Media | None = None
    source_face_id: str | None = None
    video_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    max_inline_bytes: int = Field(DEFAULT_MAX_INLINE_BYTES, ge=0, le=15_000_000)

    @model_validator(mode="after")
    def _fields_of_the_task(self) -> JobInput:
        need = {"register": {"image"}, "swap": {"target"}, "video": {"video_url"}}[self.task]
        given = {k for k in ("image", "target", "video_url") if getattr(self, k) is not None}
        if given != need:
            raise ValueError(f"task {self.task!r} takes {', '.join(sorted(need))}"
                             + (f", not {', '.join(sorted(given - need))}" if given - need else ""))
        if self.task != "register" and (self.source is None) == (self.source_face_id is None):
            raise ValueError(f"task {self.task!r} needs exactly one of source or source_face_id")
        if self.task == "register" and (self.source or self.source_face_id):
            raise ValueError("task 'register' takes no source")
        return self


def parse_input(raw: Any) -> JobInput:
    """Check a job's ``input``.

    Raises:
        JobError: ``invalid_input``, naming every field that is wrong and why.
    """
    if not isinstance(raw, dict):
        raise JobError("invalid_input", f"the job's input must be a JSON object, not {type(raw).__name__}")
    try:
        return JobInput.model_validate(raw)
    except ValidationError as exc:
        why = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg'].removeprefix('Value error, ')}"
                       for e in exc.errors())
        raise JobError("invalid_input", why) from None


def client_error(exc: FaceSwapError) -> JobError:
    """The :class:`JobError` of a typed client error (the model's name stays in the message)."""
    for cls, code in ((NoFaceError, "no_face"), (InvalidInput, "invalid_input"),
                      (ModelOutputInvalid, "model_output_invalid"), (ModelFailed, "model_failed"),
                      (RequestTimeout, "timeout"), (ServerUnavailable, "triton_unavailable")):
        if isinstance(exc, cls):
            return JobError(code, str(exc))
    return JobError("model_failed", str(exc))


class Jobs:
    """Runs jobs against one Triton server.

    Args:
        triton_grpc: "host:port" of Triton's gRPC endpoint (the worker's embedded server).
        settings: ``gateway.core.config.Settings`` (default: from the environment).
        timeout: seconds for one inference.
    """

    def __init__(self, triton_grpc: str, settings=None, timeout: float = 120.0) -> None:
        from gateway.core.config import Settings
        from gateway.core.urls import MediaURLPolicy

        self.triton_grpc = triton_grpc
        self.settings = settings or Settings()
        self.policy = MediaURLPolicy(self.settings.media_url_prefixes)
        self.timeout = timeout
        self.client = FaceSwapClient(triton_grpc, "grpc", timeout=timeout)
        self._store = None
        self._s3 = None

    def close(self) -> None:
        self.client.close()
        if self._store is not None:
            self._store.close()

    # --- parts made on first use ------------------------------------------------------------

    @property
    def store(self):
        if self._store is None:
            from gateway.storage.faces import make_face_store

            self._store = make_face_store(self.settings)
        return self._store

    @property
    def s3(self):
        s = self.settings
        if not s.s3_endpoint_url:
            raise JobError("storage_not_configured", "the result is too large to return inline and no bucket is "
                           "set: set FACESWAP_GATEWAY_S3_ENDPOINT_URL, _BUCKET, _ACCESS_KEY_ID, _SECRET_ACCESS_KEY "
                           "on the endpoint (R2: https://ACCOUNT_ID.r2.cloudflarestorage.com, region auto)")
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client(
                "s3", endpoint_url=s.s3_endpoint_url, region_name=s.s3_region,
                aws_access_key_id=s.s3_access_key_id.get_secret_value() if s.s3_access_key_id else None,
                aws_secret_access_key=s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None)
        return self._s3

    # --- inputs -------------------------------------------------------------------------------

    def _fetch(self, url: str, field: str, dest: Path, max_bytes: int) -> Path:
        from gateway.core.urls import URLRefused
        from gateway.storage.media import MediaError, fetch_url

        try:
            checked = self.policy.check(url, field)
        except URLRefused as exc:
            raise JobError("invalid_input", str(exc)) from None
        except PermissionError:
            raise JobError("media_url_not_allowed", f"{field} is not under an allowed prefix "
                           "(FACESWAP_GATEWAY_MEDIA_URL_PREFIXES on the endpoint)") from None
        try:
            fetch_url(checked, dest, max_bytes)
        except MediaError as exc:
            raise JobError(exc.code, str(exc)) from None
        return dest

    def _bytes(self, media: Media, field: str, work: Path) -> bytes:
        limit = self.settings.max_upload_bytes
        if media.base64 is not None:
            if len(media.base64) > limit * 4 // 3 + 4:
                raise JobError("input_too_large", f"{field}.base64 is over the limit of {limit} bytes")
            try:
                data = base64.b64decode(media.base64, validate=True)
            except (binascii.Error, ValueError):
                raise JobError("invalid_input", f"{field}.base64 is not valid base64") from None
            if not data:
                raise JobError("invalid_input", f"{field}.base64 is empty")
            return data
        return self._fetch(media.url, f"{field}.url", work / f"{field}.bin", limit).read_bytes()

    def _source(self, job: JobInput, work: Path) -> tuple[np.ndarray, np.ndarray]:
        """(latent, embedding) of the job's identity."""
        if job.source_face_id is not None:
            face = self.store.get(job.source_face_id)
            if face is None:
                raise JobError("face_not_found", f"no registered face {job.source_face_id!r} (expired or deleted)")
            return face.latent, face.embedding
        res = self.client.embed(self._bytes(job.source, "source", work))
        face = res.largest()
        return face.latent, face.embedding

    # --- outputs ------------------------------------------------------------------------------

    def _result(self, data: bytes, content_type: str, suffix: str, limit: int) -> dict:
        if len(data) <= limit:
            return {"base64": base64.b64encode(data).decode(), "content_type": content_type, "bytes": len(data)}
        key = f"runpod/{time.strftime('%Y%m%d')}/{uuid.uuid4().hex}{suffix}"
        try:
            self.s3.put_object(Bucket=self.settings.s3_bucket, Key=key, Body=data, ContentType=content_type)
            url = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.settings.s3_bucket, "Key": key},
                                                 ExpiresIn=RESULT_URL_TTL_S)
        except JobError:
            raise
        except Exception as exc:  # botocore raises many types; the job fails with a code either way
            raise JobError("result_upload_failed", f"uploading the result to the bucket failed: {exc}") from None
        return {"url": url, "bucket": self.settings.s3_bucket, "key": key, "content_type": content_type,
                "bytes": len(data)}

    # --- tasks --------------------------------------------------------------------------------

    def register(self, job: JobInput, work: Path) -> dict:
        data = self._bytes(job.image, "image", work)
        res = self.client.embed(data)
        if not res.faces:
            raise JobError("no_face", "no face found in the image")
        sha = hashlib.sha256(data).hexdigest()
        faces = []
        for f in res.faces:
            thumb = cv2.imencode(".jpg", cv2.resize(f.aligned, (96, 96), interpolation=cv2.INTER_AREA))[1].tobytes()
            stored = self.store.add(f.box.tolist(), f.score, f.embedding, f.latent, thumb, sha,
                                    bool(res.stand_in_models))
            faces.append({"id": stored.id, "box": stored.box, "score": stored.score})
        return {"faces": faces, "stand_in_models": res.stand_in_models}

    def swap(self, job: JobInput, work: Path) -> dict:
        latent, embedding = self._source(job, work)
        target = self._bytes(job.target, "target", work)
        res = self.client.swap(target, latent, source_embedding=embedding, **job.options)
        if res.content_refused:  # the content gate (on in Triton unless a caller turns it off)
            raise JobError("content_refused", f"the target was refused by the content policy {res.content_policy!r}: "
                           "this service does not swap faces into intimate imagery; nothing was swapped or kept")
        out = {"faces_found": len(res.faces), "faces_swapped": res.faces_swapped, "format": res.format,
               "width": res.width, "height": res.height, "stand_in_models": res.stand_in_models}
        out["image"] = self._result(res.image, f"image/{res.format}", f".{res.format}", job.max_inline_bytes)
        return out

    async def video(self, job: JobInput, work: Path, progress: Callable[[dict], None]) -> dict:
        from media.video import ContentRefusedError, VideoError, VideoOptions, swap_video

        latent, embedding = await asyncio.to_thread(self._source, job, work)
        src = await asyncio.to_thread(self._fetch, job.video_url, "video_url", work / "input.video",
                                      self.settings.max_job_upload_bytes)
        dst = work / "result.mp4"
        last = [0.0]

        def on_progress(done: int, total: int, eta: float) -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0 or (total and done >= total):
                last[0] = now
                progress({"done": done, "total": total, "eta_s": round(eta, 1) if eta else None})

        opts = VideoOptions(selection=job.options.get("selection", "largest"))
        try:
            async with AsyncFaceSwapClient(self.triton_grpc, "grpc", timeout=self.timeout) as aclient:
                report = await swap_video(aclient, latent, src, dst, opts, progress=on_progress,
                                          source_embedding=embedding)
        except ContentRefusedError as exc:
            raise JobError("content_refused", str(exc)) from None
        except VideoError as exc:
            raise JobError("invalid_input", f"video_url: {exc}") from None
        data = dst.read_bytes()
        return {"frames": report.frames, "frames_swapped": report.frames_swapped, "seconds": round(report.seconds, 2),
                "stand_in_models": report.stand_in_models, "warnings": report.warnings,
                "video": await asyncio.to_thread(self._result, data, "video/mp4", ".mp4", job.max_inline_bytes)}

    async def run(self, raw: Any, progress: Callable[[dict], None] = lambda p: None) -> dict:
        """Do one job; returns its output, or ``{"error": "<code>: <message>"}``."""
        try:
            job = parse_input(raw)
            with tempfile.TemporaryDirectory(prefix="runpod-job-") as tmp:
                work = Path(tmp)
                if job.task == "video":
                    return await self.video(job, work, progress)
                return await asyncio.to_thread(getattr(self, job.task), job, work)
        except JobError as exc:
            log.warning("job failed: %s: %s", exc.code, exc)
            return exc.as_output()
        except FaceSwapError as exc:
            err = client_error(exc)
            log.warning("job failed: %s: %s", err.code, err)
            return err.as_output()
