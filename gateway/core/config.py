"""Gateway settings (pydantic-settings): environment variables ``FACESWAP_GATEWAY_*`` or ``.env``."""

from __future__ import annotations

import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.content import DEFAULT_REFUSED, DEFAULT_THRESHOLD, LABELS, ContentPolicy

ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every setting, with its default. See docs/gateway.md "Settings"."""

    model_config = SettingsConfigDict(env_prefix="FACESWAP_GATEWAY_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Listen address; anything but loopback needs hmac_secret.")
    port: int = Field(8080, description="Listen port.")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC host:port, or several comma-separated "
                            "(calls are spread round-robin; one refused as UNAVAILABLE is retried once on another "
                            "server), or a gRPC target such as dns:///triton-headless:8001.")
    triton_metrics_url: str = Field("", description="Triton's Prometheus metrics URL(s), comma-separated, read for "
                                    "the precision each network serves in (/readyz, gateway_network_precision). "
                                    "Empty: http://<host>:<port + 1>/metrics for each host:port of triton_url "
                                    "(Triton's default ports: gRPC 8001, metrics 8002).")
    request_timeout_s: float = Field(60.0, description="Deadline of a request from its arrival (all its Triton "
                                     "calls together); past it the answer is 504 deadline_exceeded.")
    max_request_timeout_s: float = Field(300.0, description="Largest deadline a caller may ask for with "
                                         "X-Request-Timeout.")
    max_in_flight: int = Field(0, description="Compute requests (swap, faces) in work at once in this process. "
                               "0: what the model repository advises for its profile (face_swap's "
                               "admission_in_flight parameter, read at start; 2 when Triton cannot be asked).")
    max_waiting: int = Field(-1, description="Compute requests waiting in line for a slot; more get 503 "
                             "overloaded at once. -1: the repository's admission_waiting (else max_in_flight).")
    max_pixels_in_flight: int = Field(80_000_000, description="Image pixels in work at once (two images at the "
                                      "max_pixels limit); more get 503 overloaded.")
    overload_retry_after_s: int = Field(1, description="Retry-After seconds sent with 503 overloaded.")
    retry_after_s: int = Field(5, description="Retry-After seconds sent with 503 when Triton is down "
                               "(triton_unavailable, and /readyz's 503).")
    health_timeout_s: float = Field(2.0, description="/readyz waits this long for Triton, then answers 503.")
    deep_check_timeout_s: float = Field(20.0, description="Time limit of one /readyz?deep=1 pipeline run.")
    deep_check_image: Path | None = Field(None, description="Photo with a face for /readyz?deep=1 (default: "
                                          "insightface's Tom_Hanks_54745.png when the package is installed).")
    hmac_secret: SecretStr | None = Field(None, description="Shared secret for request signatures (HMAC-SHA256).")
    signature_max_age_s: int = Field(300, description="Older (or newer) signed timestamps are refused (stale).")
    max_upload_bytes: int = Field(25 * 1024 * 1024, description="Largest request body; more is 413.")
    max_pixels: int = Field(40_000_000, description="Largest image (width x height, from its header); more is 413.")
    store_path: Path = Field(ROOT / ".run" / "faces.sqlite3", description="SQLite file of the face store.")
    face_ttl_s: int = Field(7 * 24 * 3600, description="Seconds a registered face is kept.")
    models_dir: Path = Field(ROOT / "models", description="Where the real models are expected (named in the log when "
                             "/readyz finds models not ready).")
    deep_check_ttl_s: float = Field(10.0, description="Seconds a /readyz?deep=1 result (success or failure) "
                                    "is cached.")
    thumbnail_size: int = Field(64, description="Side of face thumbnails in pixels (from the 112x112 aligned crop).")
    jobs_dir: Path = Field(ROOT / ".run" / "jobs", description="Inputs and results of video/batch jobs.")
    max_job_upload_bytes: int = Field(500 * 1024 * 1024, description="Largest POST /v1/jobs body; more is 413.")
    max_concurrent_jobs: int = Field(1, description="Jobs processed at once; the others wait queued.")
    job_in_flight: int = Field(4, description="Triton requests outstanding per job (jobs wait on a full Triton; "
                               "interactive requests do not).")
    max_job_restarts: int = Field(3, description="A job interrupted by a gateway stop is started again at most "
                                  "this many times, then failed (job_restart_limit).")
    archive_max_entries: int = Field(1000, description="Files in a batch archive; more: the job fails "
                                     "(archive_too_many_entries).")
    archive_max_total_bytes: int = Field(2 << 30, description="Uncompressed bytes of a batch archive; more: the job "
                                         "fails (archive_too_large).")
    archive_max_entry_bytes: int = Field(100 << 20, description="Uncompressed bytes of one archive entry; larger "
                                         "entries are refused in the report.")
    archive_max_ratio: float = Field(100.0, description="Compression ratio of one archive entry; above it the entry "
                                     "is refused in the report (zip bombs compress about 1000:1).")
    video_max_duration_s: float = Field(300.0, description="Seconds of a video job; longer: 422/failed "
                                        "video_too_long.")
    video_max_frames: int = Field(9000, description="Frames of a video job; more: 422/failed video_too_many_frames.")
    video_max_frame_pixels: int = Field(3840 * 2160, description="Pixels of one video frame; more: 422/failed "
                                        "video_frame_too_large.")
    video_max_pixel_rate: float = Field(3840 * 2160 * 30.0, description="Frame pixels x frames per second; more: "
                                        "422/failed video_pixel_rate_too_high.")
    job_ttl_s: float = Field(24 * 3600.0, description="Finished jobs (inputs, results, rows) are deleted this long "
                             "after they finish; reading one then is 404 job_expired.")
    sweep_interval_s: float = Field(60.0, description="How often expired jobs and faces are swept.")
    max_jobs_disk_bytes: int = Field(20 << 30, description="Disk budget of the jobs folder; past it new jobs get "
                                     "503 storage_full.")
    job_timeout_s: float = Field(60.0, description="Deadline of each Triton call of a job (a full Triton is waited "
                                 "on within it).")
    max_streams: int = Field(16, description="Live streams (/v1/stream) open at once in this process; more are "
                             "closed with 4503 overloaded. Each stream's frames also take admission slots.")
    stream_idle_timeout_s: float = Field(30.0, description="A stream without a message for this long is closed "
                                         "(4408 idle_timeout).")
    stream_max_frame_bytes: int = Field(4 << 20, description="Largest encoded frame of a stream (4413 "
                                        "frame_too_large).")
    stream_max_frame_pixels: int = Field(1920 * 1080, description="Largest frame of a stream, width x height "
                                         "(4413 frame_too_large).")
    stream_slot_wait_s: float = Field(10.0, description="A stream waits this long for an admission slot (in line "
                                      "with requests, first come first served; when the slot comes the newest frame "
                                      "goes), then drops the frame and goes on.")
    stream_frame_timeout_s: float = Field(10.0, description="Deadline of each Triton call of a stream frame.")
    marking: bool = Field(True, description="Mark every output as AI-made (C2PA manifest, XMP DigitalSourceType, "
                          "invisible watermark). Only this setting turns it off (logged at start); no request can.")
    content_gate: bool = Field(True, description="Refuse to swap faces into intimate imagery (the content gate: a "
                               "detector in the swap ensembles, docs/safety.md); a refused target is answered 422 "
                               "content_refused and nothing of it is kept. Only this setting turns it off (logged "
                               "at start, shown in /readyz and as gateway_content_gate 0); no request can.")
    content_classes: str = Field(",".join(DEFAULT_REFUSED), description="Comma-separated detector classes the gate "
                                 "refuses, from: " + ", ".join(LABELS) + ".")
    content_threshold: float = Field(DEFAULT_THRESHOLD, gt=0, le=1, description="Score (0-1] at which a refused "
                                     "class refuses the target (the highest on the shared test photos and clips: "
                                     "0.47, a hand at a chin; docs/safety.md).")
    consent_required: bool = Field(False, description="POST /v1/faces requires consent=true: the caller states "
                                   "that the person whose face is registered has consented; without it the answer "
                                   "is 422 consent_required. Recommended for a public service.")
    c2pa_cert_chain: Path | None = Field(None, description="PEM certificate chain (end-entity first) that signs the "
                                         "C2PA manifests; unset: a development chain made in c2pa_dev_dir (verifiers "
                                         "then report the signer as untrusted).")
    c2pa_private_key: Path | None = Field(None, description="PEM private key of c2pa_cert_chain.")
    c2pa_dev_dir: Path = Field(ROOT / ".run" / "c2pa", description="Where the development signing chain is made and "
                               "kept.")
    service_id: int = Field(0x46535753, ge=0, lt=1 << 32, description="32-bit id of this service in the watermark "
                            "payload (default 0x46535753, ASCII 'FSWS', provenance.DEFAULT_SERVICE_ID).")
    max_verify_bytes: int = Field(100 << 20, description="Largest file POST /v1/verify checks; more is 413.")
    results_ttl_s: float = Field(90 * 24 * 3600.0, description="How long result ids are remembered for /v1/verify "
                                 "(when a marked file was made).")
    redis_url: str | None = Field(None, description="Scale-out: redis://host:port/db. Set, jobs go through this "
                                  "Redis queue to faceswap-worker processes and registered faces live in Redis (shared "
                                  "by every gateway). Unset (the one-machine default): jobs run inside the gateway and "
                                  "faces live in store_path.")
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint of the job media bucket (R2: "
                                        "https://<account>.r2.cloudflarestorage.com; SeaweedFS: http://host:8333). "
                                        "Unset: job media stay in jobs_dir (one machine, or a shared file system).")
    s3_bucket: str = Field("faceswap", description="Bucket of the job media (created at start when missing).")
    s3_region: str = Field("us-east-1", description="S3 region (R2: auto).")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id (unset: boto3's own chain).")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    media_url_prefixes: str = Field("", description="Comma-separated URLs under which video_url / archive_url / "
                                    "result_url of a job must lie (e.g. the Worker's "
                                    "https://app.example.com/api/media/), compared as URLs: same scheme, host and "
                                    "port, path under the prefix's path (gateway.core.urls). Each names a path "
                                    "(https://host/ for a whole origin; one without a path stops the start). Empty: "
                                    "URL media are refused (422 media_url_not_allowed).")
    job_heartbeat_s: float = Field(10.0, description="Scale-out: a job whose worker has not beaten for this long is "
                                   "taken by another worker (from its beginning).")
    worker_concurrency: int = Field(1, description="faceswap-worker: jobs one worker process runs at once.")

    @field_validator("content_classes")
    @classmethod
    def _classes_parse(cls, v: str) -> str:
        ContentPolicy.parse(v, DEFAULT_THRESHOLD)  # an unknown class stops the start with its name
        return v

    @field_validator("media_url_prefixes")
    @classmethod
    def _prefixes_parse(cls, v: str) -> str:
        from gateway.core.urls import MediaURLPolicy

        MediaURLPolicy(v)  # a malformed prefix, or one without a path, stops the start with its reason
        return v


@lru_cache
def get_settings() -> Settings:
    return Settings()


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _default_text(value: Any) -> str:
    """A default as the table shows it: paths in the checkout relative to it, the rest as set in
    the environment (``unset`` for None, ``empty`` for "")."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return f"`{value.relative_to(ROOT) if value.is_relative_to(ROOT) else value}`"
    return "empty" if value == "" else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown() -> str:
    """The table of settings in docs/gateway.md (``python -m gateway.core.config`` prints it)."""
    prefix = Settings.model_config["env_prefix"]
    rows = ["| setting | environment variable | type | default | meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{name}` | `{prefix}{name.upper()}` | {_cell(_type_name(f.annotation))} | {_default_text(f.default)} "
             f"| {_cell(f.description or '')} |" for name, f in Settings.model_fields.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())  # noqa: T201 (the command prints the table)
