"""Check a file for our three marks: C2PA manifest, XMP ``DigitalSourceType``, pixel watermark."""

from __future__ import annotations

import io
import json
import logging

import av
import c2pa
import cv2
import numpy as np

from media import formats
from pipeline import watermark
from pipeline.codec import MAX_PIXELS, ImageError, header_size

from .c2pa_manifest import MODELS_ASSERTION, SOFT_BINDING, sdk_context
from .xmp import SYNTHETIC_TYPES, read_digital_source_type

log = logging.getLogger("provenance")

#: Frames read from a video for the watermark (every ``VIDEO_FRAME_STRIDE``-th from the start).
VIDEO_FRAMES = 8
VIDEO_FRAME_STRIDE = 3
#: Largest image decoded at full size for the watermark; larger JPEGs and PNGs are decoded
#: reduced (OpenCV IMREAD_REDUCED_*), which the mark survives (it lives at 256x256).
_FULL_DECODE_SIDE = 1024
#: The formats ``verify`` reads (``media.formats`` names; "mp4" is MP4 and QuickTime).
FORMATS = ("jpeg", "png", "webp", "mp4")


def sniff(data: bytes, filename_hint: str | None = None) -> str | None:
    """"jpeg", "png", "webp", "mp4" from the magic bytes (the name is only a fallback), or None."""
    for fmt in (formats.sniff(data), formats.by_extension(filename_hint or "")):
        if fmt is not None and fmt.name in FORMATS:
            return fmt.name
    return None


def _mime(fmt: str, data: bytes) -> str:
    found = formats.sniff(data)
    if found is not None and found.name == fmt:
        return found.mime  # video/quicktime for QuickTime's brand
    return "video/mp4" if fmt == "mp4" else f"image/{fmt}"


def _actions(manifest: dict) -> list[dict]:
    out = []
    for a in manifest.get("assertions", []):
        if a.get("label", "").startswith("c2pa.actions"):
            for act in a.get("data", {}).get("actions", []):
                out.append({k: act[k] for k in ("action", "digitalSourceType", "description") if k in act})
    return out


def has_manifest_store(data: bytes) -> bool:
    """True when the bytes hold a C2PA manifest store, however damaged: its JUMBF superbox
    (box type ``jumb``) labelled ``c2pa`` (C2PA 2.x, section 11.1.4: JPEG APP11 segments, the PNG
    ``caBX`` chunk, the WebP ``C2PA`` chunk and the MP4 ``uuid`` box all carry that box)."""
    return b"jumb" in data and b"c2pa" in data


def _soft_binding(manifest: dict) -> dict | None:
    """The first ``c2pa.soft-binding`` assertion's ``{"alg", "value"}`` (its first block), or None
    (manifests made before issue 21 have none)."""
    data = next((a.get("data") for a in manifest.get("assertions", []) if a.get("label") == SOFT_BINDING), None)
    if not isinstance(data, dict):
        return None
    blocks = data.get("blocks") or [{}]
    return {"alg": data.get("alg"), "value": blocks[0].get("value") if isinstance(blocks[0], dict) else None}


def read_c2pa(data: bytes, fmt: str, trust_anchors: str | None = None) -> dict:
    """The C2PA part of ``verify``: present / valid / trusted / signer / actions / models /
    soft_binding / failures. Reads both forms of our manifests: the C2PA 2.2 one (edit
    ``compositeWithTrainedAlgorithmicMedia``, ``c2pa.watermarked``, a ``c2pa.soft-binding``) and the
    earlier one (edit ``compositeSynthetic``, no soft binding: ``soft_binding`` None).

    ``valid`` is the SDK's validation state "Valid" or "Trusted" (every hash and the signature
    check; ``signingCredential.untrusted`` alone still reads "Valid"); ``trusted`` is "Trusted",
    which needs the signer's CA among ``trust_anchors`` (PEM) or the SDK's trust list.
    """
    extra = {"trust": {"user_anchors": trust_anchors}} if trust_anchors else None
    out: dict = {"present": False, "valid": None, "trusted": None, "validation_state": None, "signer": None,
                 "claim_generator": None, "actions": [], "models": None, "soft_binding": None, "failures": []}
    try:
        reader = c2pa.Reader.try_create(_mime(fmt, data), io.BytesIO(data), None, sdk_context(extra))
    except c2pa.C2paError as exc:
        if not has_manifest_store(data):  # a damaged file that never had a manifest: no mark, not a bad one
            out["error"] = f"the file could not be parsed for C2PA ({exc}); it holds no manifest store"
            return out
        out.update(present=True, valid=False, trusted=False, error=str(exc))  # a store that cannot be parsed
        return out
    if reader is None:
        return out
    with reader:
        store = json.loads(reader.json())
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    failures = [f.get("code") for f in results.get("activeManifest", {}).get("failure", [])]
    sig = manifest.get("signature_info", {})
    ours = next((a.get("data") for a in manifest.get("assertions", []) if a.get("label") == MODELS_ASSERTION), None)
    out.update(
        present=True, valid=state in ("Valid", "Trusted"), trusted=state == "Trusted", validation_state=state,
        signer={"common_name": sig.get("common_name"), "issuer": sig.get("issuer"), "alg": sig.get("alg"),
                "time": sig.get("time")},
        claim_generator=(manifest.get("claim_generator_info") or [{}])[0].get("name"),
        actions=_actions(manifest), failures=failures, soft_binding=_soft_binding(manifest),
        models=(ours or {}).get("models"),
        result=({k: ours.get(k) for k in ("service_id", "result_id", "stand_in_models", "target_sha256")}
                if ours else None),
    )
    return out


def _image_for_watermark(data: bytes, fmt: str) -> np.ndarray | None:
    buf = np.frombuffer(data, np.uint8)
    flag = cv2.IMREAD_COLOR
    try:
        w, h = header_size(buf)
    except ImageError:
        return None
    if w * h > MAX_PIXELS:
        return None
    if fmt in ("jpeg", "png"):
        for reduced, factor in ((cv2.IMREAD_REDUCED_COLOR_4, 4), (cv2.IMREAD_REDUCED_COLOR_2, 2)):
            if min(w, h) // factor >= _FULL_DECODE_SIDE // 2:
                flag = reduced
                break
    try:
        return cv2.imdecode(buf, flag)
    except cv2.error:
        return None


def _video_scores(data: bytes) -> tuple[list[np.ndarray], str | None]:
    scores: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as c:
            if not c.streams.video:
                return scores, "no video stream"
            for i, frame in enumerate(c.decode(video=0)):
                if i % VIDEO_FRAME_STRIDE == 0:
                    bgr = frame.to_ndarray(format="bgr24")
                    if min(bgr.shape[:2]) >= watermark.MIN_SIDE:
                        scores.append(watermark.soft_bits(bgr))
                    if len(scores) >= VIDEO_FRAMES:
                        break
    except (av.error.FFmpegError, OSError) as exc:
        return scores, f"video could not be decoded: {exc}"
    return scores, None


def read_watermark(data: bytes, fmt: str) -> dict:
    """The watermark part of ``verify``: found / payload / confidence (+ frames read for video).

    A video's frames are combined by averaging their soft bits (stronger than any one frame).
    """
    if fmt == "mp4":
        scores, error = _video_scores(data)
        if not scores:
            return {"found": False, "payload": None, "confidence": 0.0, "frames_checked": 0,
                    **({"error": error} if error else {})}
        det = watermark.decide(np.mean(scores, axis=0))
        return {**det.as_dict(), "frames_checked": len(scores)}
    img = _image_for_watermark(data, fmt)
    if img is None:
        return {"found": False, "payload": None, "confidence": 0.0, "error": "image could not be decoded"}
    if min(img.shape[:2]) < watermark.MIN_SIDE:
        return {"found": False, "payload": None, "confidence": 0.0, "error": "image too small to carry a mark"}
    return watermark.detect(img).as_dict()


def verify(data: bytes, filename_hint: str | None = None, *, trust_anchors: str | None = None,
           service_id: int | None = None) -> dict:
    """Everything a file says about being AI-made by this (or another) service.

    Args:
        data: the file's bytes (JPEG, PNG, WebP, MP4/MOV; the format is judged from the bytes,
            ``filename_hint`` only when they say nothing).
        filename_hint: the uploaded name, or None.
        trust_anchors: PEM CA certificates to treat as trusted signers (e.g. the operator's CA).
        service_id: this service's id; when given, ``watermark.ours`` says whether the payload
            names it.

    Returns:
        ``{"format", "c2pa": {...}, "xmp": {"present", "digital_source_type", "ai_generated"},
        "watermark": {"found", "payload": {"service_id", "result_id", "hex"} | None, "confidence"},
        "marks_found": [...], "ai_generated": bool, "summary": str}``; see ``read_c2pa`` and
        ``read_watermark``. ``ai_generated`` is true when a *valid* manifest, the XMP or the
        watermark says so.

    Raises:
        ValueError: the format is not one of JPEG, PNG, WebP, MP4.
    """
    fmt = sniff(data, filename_hint)
    if fmt is None:
        raise ValueError("unsupported file: expected a JPEG, PNG, WebP or MP4")
    manifest = read_c2pa(data, fmt, trust_anchors)
    present, dst = read_digital_source_type(data, fmt)
    meta = {"present": present, "digital_source_type": dst, "ai_generated": dst in SYNTHETIC_TYPES}
    wm = read_watermark(data, fmt)
    if service_id is not None and wm.get("payload"):
        wm["ours"] = wm["payload"]["service_id"] == service_id
    binding = manifest.get("soft_binding")
    if wm.get("payload") and binding:  # the pixels' watermark is the one the manifest bound
        wm["matches_manifest"] = wm["payload"]["hex"] == binding.get("value")
    c2pa_ai = bool(manifest["valid"]) and any(a.get("digitalSourceType") in SYNTHETIC_TYPES
                                              for a in manifest["actions"])
    marks = [name for name, hit in (("c2pa", manifest["present"]), ("xmp", meta["ai_generated"]),
                                    ("watermark", wm["found"])) if hit]
    if not marks:
        summary = "no marks found"
    else:
        parts = []
        if manifest["present"]:
            parts.append("C2PA manifest " + ("valid" if manifest["valid"] else "INVALID (file changed after signing)"))
        if meta["ai_generated"]:
            parts.append("XMP says AI-generated")
        if wm["found"]:
            parts.append(f"watermark found (result {wm['payload']['result_id']})")
        summary = "; ".join(parts)
    return {"format": fmt, "c2pa": manifest, "xmp": meta, "watermark": wm, "marks_found": marks,
            "ai_generated": c2pa_ai or meta["ai_generated"] or wm["found"], "summary": summary}
