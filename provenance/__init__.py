"""Marks that every output is AI-made, and a check for them (issue 12).

Three independent marks, each readable without the others:

- a signed C2PA manifest (``c2pa_manifest``; SDK ``c2pa-python``);
- IPTC ``DigitalSourceType`` = compositeWithTrainedAlgorithmicMedia in the file's XMP (``xmp``);
- an invisible watermark in the pixels carrying (service id, result id) (``pipeline.watermark``:
  pixels only, so the Triton stage that marks a frame before its one encode loads it without
  the C2PA SDK).

For the gateway and jobs::

    signer = ProvenanceSigner.from_files(chain_pem_path, key_pem_path, service_id=...)  # operator
    signer = ProvenanceSigner.development(state_dir)            # or: dev chain made at first use
    out = mark_image(data, "jpeg", target_bytes, models, result_id, signer)
    frame = watermark_frame(bgr, Payload(signer.service_id, result_id))  # per video frame
    mark_video_file(mp4_path, target_path, models, result_id, signer)     # after encoding
    report = verify(uploaded_bytes, filename)

``models`` is ``[{"name": str, "sha256": 64 hex, "stand_in": bool}, ...]``.
"""

from pipeline.watermark import Detection, Payload, detect

from .c2pa_manifest import DEFAULT_SERVICE_ID, MODELS_ASSERTION, ProvenanceSigner, check_models
from .mark import mark_encoded, mark_image, mark_video_file, normalise_format, watermark_frame
from .verify import verify
from .xmp import COMPOSITE_SYNTHETIC, COMPOSITE_WITH_TRAINED_MEDIA

__all__ = [
    "COMPOSITE_SYNTHETIC",
    "COMPOSITE_WITH_TRAINED_MEDIA",
    "DEFAULT_SERVICE_ID",
    "MODELS_ASSERTION",
    "Detection",
    "Payload",
    "ProvenanceSigner",
    "check_models",
    "detect",
    "mark_encoded",
    "mark_image",
    "mark_video_file",
    "normalise_format",
    "verify",
    "watermark_frame",
]
