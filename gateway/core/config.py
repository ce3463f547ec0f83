"""Gateway settings (pydantic-settings): environment variables ``FACESWAP_GATEWAY_*`` or ``.env``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every setting, with its default. See README "Gateway settings"."""

    model_config = SettingsConfigDict(env_prefix="FACESWAP_GATEWAY_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Listen address; anything but loopback needs hmac_secret.")
    port: int = Field(8080, description="Listen port.")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC host:port.")
    triton_timeout_s: float = Field(60.0, description="Deadline of one Triton call; past it the answer is 504.")
    retry_after_s: int = Field(5, description="Retry-After seconds sent with 503 when Triton is down.")
    hmac_secret: SecretStr | None = Field(None, description="Shared secret for request signatures (HMAC-SHA256).")
    signature_max_age_s: int = Field(300, description="Older (or newer) signed timestamps are refused (stale).")
    max_upload_bytes: int = Field(25 * 1024 * 1024, description="Largest request body; more is 413.")
    max_pixels: int = Field(40_000_000, description="Largest image (width x height, from its header); more is 413.")
    store_path: Path = Field(ROOT / ".run" / "faces.sqlite3", description="SQLite file of the face store.")
    face_ttl_s: int = Field(7 * 24 * 3600, description="Seconds a registered face is kept.")
    models_dir: Path = Field(ROOT / "models", description="Where the real models are expected (shown by /readyz).")
    deep_check_ttl_s: float = Field(10.0, description="Seconds a /readyz?deep=1 result is cached.")
    thumbnail_size: int = Field(64, description="Side of face thumbnails in pixels (from the 112x112 aligned crop).")
    jobs_dir: Path = Field(ROOT / ".run" / "jobs", description="Inputs and results of video/batch jobs.")
    max_job_upload_bytes: int = Field(500 * 1024 * 1024, description="Largest POST /v1/jobs body; more is 413.")
    max_concurrent_jobs: int = Field(1, description="Jobs processed at once; the others wait queued.")
    job_in_flight: int = Field(8, description="Triton requests outstanding per job.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
