"""Every error code the gateway, its job workers and its live streams can answer with, in one
table: the OpenAPI error descriptions (:func:`gateway.core.errors.errors`) and the table in
docs/gateway.md are generated from it, and ``tests/unit/test_errors.py`` finds every code the source
uses and checks that it is here, so the list cannot drift.

``python -m gateway.core.codes`` prints that table (Markdown).
"""

from __future__ import annotations

#: code -> (where it appears: HTTP statuses, "job" for a job's error_code, "stream" for a live
#: stream's error / frame_error message; what it means and what to do).
ERROR_CODES: dict[str, tuple[str, str]] = {
    # the caller's request
    "invalid_request": ("422", "a field is missing or of the wrong type (the message names it)"),
    "invalid_form": ("400", "the multipart form is malformed or over a form limit (too many fields or files, "
                            "a part too large)"),
    "invalid_option": ("422", "an option is out of range or does not go with another one"),
    "missing_source": ("422", "send exactly one source: an image, source_face_id or pairs"),
    "missing_media": ("422", "a job needs exactly one of video, images, archive, video_url, archive_url"),
    "empty_file": ("400", "an uploaded file has 0 bytes"),
    "payload_too_large": ("413", "the body is over the route's limit (from Content-Length, or while it streams)"),
    "image_too_large": ("413", "the image has more pixels than max_pixels (read from its header)"),
    "unsupported_media_type": ("415, job", "the bytes are not a supported image, video or zip"),
    "corrupt_image": ("422, stream", "the image cannot be decoded"),
    "corrupt_video": ("422, job", "the video cannot be read (corrupt or truncated)"),
    "corrupt_archive": ("job", "the zip cannot be read"),
    "no_face_in_source": ("422, stream", "no face was found in the source image"),
    "face_index_out_of_range": ("422", "face_index is past the faces found (the message gives the range)"),
    "face_not_found": ("404, stream", "no such registered face (unknown, deleted or expired)"),
    "media_url_invalid": ("422, job", "a media URL is malformed or uses a refused form (user@host, encoded dots, "
                                      "an odd IPv4 form, a bad port)"),
    "media_url_not_allowed": ("422", "a media URL is not under the operator's MEDIA_URL_PREFIXES (or URL media "
                                     "are off)"),
    "video_too_long": ("422, job", "the video is longer than VIDEO_MAX_DURATION_S"),
    "video_too_many_frames": ("422, job", "the video has more frames than VIDEO_MAX_FRAMES"),
    "video_frame_too_large": ("422, job", "a video frame has more pixels than VIDEO_MAX_FRAME_PIXELS"),
    "video_pixel_rate_too_high": ("422, job", "frame pixels x fps is over VIDEO_MAX_PIXEL_RATE"),
    "archive_too_many_entries": ("job", "the zip has more files than ARCHIVE_MAX_ENTRIES"),
    "archive_too_large": ("job", "the zip unpacks to more than ARCHIVE_MAX_TOTAL_BYTES"),
    "input_fetch_failed": ("job", "the job's video_url / archive_url could not be fetched (unreachable, not 200, "
                                  "a redirect)"),
    "input_too_large": ("job", "the fetched input is over MAX_JOB_UPLOAD_BYTES"),
    "result_upload_failed": ("job", "the result could not be PUT to result_url"),
    "frame_too_large": ("stream", "a stream frame is over STREAM_MAX_FRAME_BYTES or STREAM_MAX_FRAME_PIXELS"),
    "bad_request": ("stream", "a stream message is not what the protocol expects"),
    "idle_timeout": ("stream", "no stream message for STREAM_IDLE_TIMEOUT_S"),
    "content_refused": ("422, job, stream", "the target shows what the content policy refuses (intimate imagery): "
                                            "nothing was swapped or kept; the message names the policy"),
    "consent_required": ("422", "registering a face needs consent=true (the operator's CONSENT_REQUIRED setting): "
                                "state that the person consented"),
    "upgrade_required": ("426", "GET /v1/stream is a WebSocket: open it with a WebSocket client"),
    # signatures and callers
    "missing_signature": ("401", "the request is not signed (a secret is configured)"),
    "bad_signature": ("401", "the signature does not match"),
    "stale_signature": ("401", "the signed timestamp is older (or newer) than SIGNATURE_MAX_AGE_S"),
    "replayed_signature": ("401", "this signature was already used"),
    "content_sha256_mismatch": ("401", "the body's SHA-256 differs from the signed one"),
    "forbidden": ("403", "a non-loopback caller and no secret configured"),
    "not_found": ("404", "no such route"),
    "method_not_allowed": ("405", "the route does not take this method"),
    "http_error": ("4xx", "another HTTP-level refusal (the message says which)"),
    # jobs
    "job_not_found": ("404", "no such job"),
    "job_expired": ("404", "the job finished more than JOB_TTL_S ago; it and its files were deleted"),
    "job_not_done": ("409", "the job has no result yet"),
    "job_failed": ("409", "the job failed; it has no result (its error_code says why)"),
    "job_cancelled": ("409", "the job was cancelled; it has no result"),
    "job_restart_limit": ("job", "the job's worker stopped while it ran, more than MAX_JOB_RESTARTS times"),
    # the service
    "overloaded": ("503, stream", "at capacity: retry after Retry-After (nothing was computed)"),
    "triton_unavailable": ("503, job", "the inference server is down or not ready: retry after Retry-After"),
    "storage_unavailable": ("503, job", "Redis or the S3 store is unreachable: retry after Retry-After"),
    "storage_full": ("503, job", "the jobs folder is at MAX_JOBS_DISK_BYTES: retry after Retry-After"),
    "deadline_exceeded": ("504, job", "the request's deadline passed (X-Request-Timeout allows more)"),
    "model_failed": ("502, job", "a model inside Triton failed on a valid request (logged)"),
    "model_output_invalid": ("502, job", "a network returned NaN or infinite values (logged; no image was made)"),
    "triton_error": ("502, job", "another inference server failure"),
    "client_closed_request": ("499", "the caller hung up; its Triton calls were cancelled (metrics only)"),
    "internal_error": ("500, job, stream", "a bug: logged with its traceback"),
}


def markdown() -> str:
    """The table of codes in docs/gateway.md."""
    rows = ["| code | where | meaning |", "|---|---|---|"]
    rows += [f"| `{code}` | {where} | {meaning} |" for code, (where, meaning) in ERROR_CODES.items()]
    return "\n".join(rows)


def http_status(code: str) -> int:
    """The HTTP status a code is answered with (KeyError for a code that is never an HTTP answer)."""
    for where in ERROR_CODES[code][0].split(","):
        if where.strip().isdigit():
            return int(where)
    raise KeyError(f"{code} is not an HTTP answer")


if __name__ == "__main__":
    print(markdown())  # noqa: T201 (the command prints the table)
