"""The RunPod serverless worker: the face swap pipeline behind a RunPod endpoint.

``python -m runpod_worker`` (the CPU Triton image, ``deploy/triton-cpu.Dockerfile``) starts the
embedded tritonserver once per worker (the ``cpu`` model repository, built at start as in
:mod:`launch.container`, on free loopback ports), then hands jobs to the runpod SDK's loop
(``runpod.serverless.start``). The SDK's local mode works the same way:
``python -m runpod_worker --test_input '{"input": {...}}'`` runs one job and exits, and
``--rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port N`` serves the SDK's local API
(``POST /runsync``, ``/run``, ``GET /status/{id}``).

A job's ``input`` (every field is checked; an unknown one is an error), see
:class:`runpod_worker.jobs.JobInput` and docs/runpod.md:

- ``{"task": "register", "image": MEDIA}``: registers every face of the image in the face store
  (the gateway's: Redis with ``FACESWAP_GATEWAY_REDIS_URL``, else SQLite at
  ``FACESWAP_GATEWAY_STORE_PATH``); returns ``{"faces": [{"id", "box", "score"}, ...]}``.
- ``{"task": "swap", "target": MEDIA, "source": MEDIA | "source_face_id": ID, "options": {...}}``:
  one image; returns the image as base64 when it is at most ``max_inline_bytes`` (default
  2,000,000), else uploads it to the S3/R2 bucket (``FACESWAP_GATEWAY_S3_*``) and returns a
  presigned URL.
- ``{"task": "video", "video_url": URL, "source": MEDIA | "source_face_id": ID}``: a video by URL
  (under ``FACESWAP_GATEWAY_MEDIA_URL_PREFIXES``), swapped frame by frame with progress updates
  (``runpod.serverless.progress_update``: ``{"done", "total"}``), the MP4 uploaded to the bucket.

``MEDIA`` is ``{"base64": "..."}`` or ``{"url": "https://..."}`` (a URL under the allowed
prefixes). A failed job returns ``{"error": "<code>: <message>"}``, which the SDK reports as the
job's error (status ``FAILED``).
"""
