"""Which target faces to swap: options of the ``face_swap`` ensemble and their validation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.codec import OUTPUT_FORMATS
from pipeline.content import policy_from_options
from pipeline.detection import Detections, box_areas
from pipeline.embedding import cosine
from pipeline.pixel_boost import PIXEL_BOOSTS

SELECTIONS = ("all", "largest", "index", "similar", "pairs")
#: Default cosine similarity a target face needs to its reference for selections "similar" and
#: "pairs" (ArcFace embeddings of one person are usually above it, of two people below).
MATCH_THRESHOLD = 0.3
PAIR_THRESHOLD = MATCH_THRESHOLD  # the earlier name


def _is_hex(value: str, digits: int) -> bool:
    try:
        return len(value) == digits and len(bytes.fromhex(value)) == digits // 2
    except ValueError:
        return False


class OptionsError(ValueError):
    """Invalid swap options; the message names the option and the valid values."""


@dataclass
class SwapOptions:
    """Options of one swap request (the ``options`` JSON tensor of ``face_swap``).

    Attributes:
        selection: "all" faces, the "largest" box, the face at "index" (detection order:
            score descending, insightface's order), the face most "similar" to the
            (first) reference embedding if its cosine is >= ``threshold`` (else no face is
            swapped, and the result says ``no_match``), or "pairs": each face whose
            best-matching reference embedding k has cosine >= ``threshold`` gets source latent
            k (many-to-many); faces that match no reference are left alone.
        face_index: with selection "index", 0-based.
        max_faces: at most this many faces are swapped (largest boxes first when capping);
            the response's ``truncated`` flag says when faces were dropped. 0 = server cap.
        output_format: "auto" (same as the input for jpeg/png/webp, else png), "jpeg",
            "png" or "webp".
        quality: 1-100, for jpeg and webp.
        det_thresh: detection score threshold in (0, 1); 0 = the server's configured value.
        threshold: float in [-1, 1], default 0.3 (``MATCH_THRESHOLD``): the minimum cosine
            similarity between a face's normed embedding and its reference for selections
            "similar" and "pairs"; -1 accepts any face (the most similar one, for "similar").
        face_quality: compute the quality figures of each swapped face (``result``
            ``face_quality``, see ``pipeline.quality``: one recognizer call on 2M crops); false
            leaves them out (``null``), e.g. for a live stream that does not show them.
        pixel_boost: 128 (default: inswapper's 128x128 crop), 256, 384 or 512: each face is
            aligned at that size and swapped as (pixel_boost / 128)^2 sub-pixel-shifted 128x128
            crops, interleaved back (``pipeline.pixel_boost``); more detail, (n^2)x the swapper work.
        watermark: "" (none) or the invisible mark's payload as 16 hex digits (service id and
            result id, 32 bits each, big-endian: ``pipeline.watermark.Payload.to_bytes``),
            embedded in the swapped frame's pixels before its one encode (``pipeline.frames``).
            The gateway sets it; a frame with no face swapped is not marked.
        badge: burn the visible "AI-generated" badge (``pipeline.badge``) into a frame with a
            swapped face, before the watermark and the encode.
        content_policy: the content gate (``pipeline.content``): None (absent) applies the
            default policy, "off" none (the gateway's explicit setting, or a video frame not
            sampled), ``{"name", "classes", "threshold"}`` that policy. A refused target is not
            swapped (``result``: ``content_refused``).
        track: a live stream's target track (``pipeline.follow.TrackHint``: its box, the IoU
            threshold, the frame's time, its One-Euro state): instead of ``selection``, the one
            face overlapping that box most is swapped, with its key points smoothed, or none.
    """

    selection: str = "all"
    face_index: int = 0
    max_faces: int = 0
    output_format: str = "auto"
    quality: int = 95
    det_thresh: float = 0.0
    threshold: float = MATCH_THRESHOLD
    face_quality: bool = True
    pixel_boost: int = 128
    watermark: str = ""
    badge: bool = False
    content_policy: dict | str | None = None
    track: dict | None = None

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> "SwapOptions":
        """Parse and validate; unknown keys and bad values raise :class:`OptionsError`."""
        if raw is None or (isinstance(raw, (bytes, str)) and len(raw) == 0):
            return cls()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OptionsError(f"options must be a JSON object: {exc}") from None
        if not isinstance(data, dict):
            raise OptionsError("options must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionsError(f"unknown option(s) {unknown}: valid options are {sorted(known)}")
        try:
            opts = cls(**data)
            opts.face_index, opts.max_faces, opts.quality = int(opts.face_index), int(opts.max_faces), int(opts.quality)
            opts.det_thresh, opts.threshold = float(opts.det_thresh), float(opts.threshold)
            if isinstance(opts.pixel_boost, bool) or opts.pixel_boost != int(opts.pixel_boost):
                raise ValueError(f"pixel_boost {opts.pixel_boost!r} is not an integer")
            opts.pixel_boost = int(opts.pixel_boost)
        except (TypeError, ValueError) as exc:
            raise OptionsError(f"bad option value: {exc}") from None
        opts.validate()
        return opts

    def validate(self) -> None:
        if self.selection not in SELECTIONS:
            raise OptionsError(f"selection {self.selection!r} is not one of {', '.join(SELECTIONS)}")
        if self.output_format not in ("auto", *OUTPUT_FORMATS):
            raise OptionsError(f"output_format {self.output_format!r} is not one of auto, {', '.join(OUTPUT_FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise OptionsError(f"quality {self.quality} is outside 1..100")
        if self.max_faces < 0:
            raise OptionsError(f"max_faces {self.max_faces} must be >= 0")
        if self.face_index < 0:
            raise OptionsError(f"face_index {self.face_index} must be >= 0")
        if not 0.0 <= self.det_thresh < 1.0:
            raise OptionsError(f"det_thresh {self.det_thresh} is outside [0, 1)")
        if not -1.0 <= self.threshold <= 1.0:
            raise OptionsError(f"threshold {self.threshold} is outside [-1, 1]")
        if self.pixel_boost not in PIXEL_BOOSTS:
            raise OptionsError(f"pixel_boost {self.pixel_boost!r} is not one of {', '.join(map(str, PIXEL_BOOSTS))}")
        if not isinstance(self.watermark, str) or (self.watermark and not _is_hex(self.watermark, 16)):
            raise OptionsError(f"watermark {self.watermark!r} must be empty or 16 hex digits")
        if self.content_policy is not None:
            try:
                policy_from_options({"content_policy": self.content_policy})
            except (ValueError, TypeError) as exc:
                raise OptionsError(f"content_policy: {exc}") from None
        if not isinstance(self.badge, bool):
            raise OptionsError(f"badge {self.badge!r} must be true or false")
        if self.track is not None:
            from pipeline.follow import TrackHint

            try:
                TrackHint.parse(self.track)
            except (ValueError, TypeError, KeyError) as exc:
                raise OptionsError(f"track: {exc}") from None
        if not isinstance(self.face_quality, bool):
            raise OptionsError(f"face_quality {self.face_quality!r} must be true or false")

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass
class Selection:
    """Faces chosen for swapping.

    Attributes:
        indices: int64 [M] indices into the detections, in swap order.
        latent_index: int64 [M] which source latent each chosen face gets (0 unless "pairs").
        truncated: True when faces beyond the cap were left alone.
        no_match: True when "similar" or "pairs" found faces but none reached ``threshold``
            (then ``indices`` is empty and nothing is swapped).
    """

    indices: np.ndarray
    latent_index: np.ndarray
    truncated: bool = False
    no_match: bool = False

    @staticmethod
    def of(indices, truncated: bool = False, latent_index=None, no_match: bool = False) -> "Selection":
        idx = np.asarray(indices, np.int64).reshape(-1)
        lat = np.zeros_like(idx) if latent_index is None else np.asarray(latent_index, np.int64).reshape(-1)
        return Selection(idx, lat, truncated, no_match)


def select_faces(
    dets: Detections,
    opts: SwapOptions,
    cap: int,
    embeddings: np.ndarray | None = None,
    reference: np.ndarray | None = None,
) -> Selection:
    """Choose the faces to swap (see :class:`SwapOptions` for the policies).

    Args:
        dets: all faces found in the target.
        opts: validated options.
        cap: the server's maximum number of faces per image (``max_faces`` config parameter).
        embeddings: float32 [N, 512] normed target embeddings, for "similar" and "pairs".
        reference: float32 [K, 512] reference embeddings, for "similar" and "pairs".

    Raises:
        OptionsError: face_index out of range (the message gives the valid range),
            "similar"/"pairs" without reference embeddings, or with NaN, infinite or zero ones.
    """
    n = len(dets)
    if n == 0:
        return Selection.of([])
    if opts.selection == "largest":
        return Selection.of([int(np.argmax(box_areas(dets.boxes)))])
    if opts.selection == "index":
        if opts.face_index >= n:
            raise OptionsError(
                f"face_index {opts.face_index} is out of range: the target has {n} face(s), valid 0..{n - 1}"
            )
        return Selection.of([opts.face_index])
    if opts.selection in ("similar", "pairs"):
        if reference is None or np.asarray(reference).size == 0 or embeddings is None:
            raise OptionsError(f"selection {opts.selection!r} needs reference embeddings (reference_embeddings input)")
        ref = np.asarray(reference, np.float32).reshape(-1, embeddings.shape[1])
        if not np.isfinite(ref).all() or not np.linalg.norm(ref, axis=1).all():
            raise OptionsError("reference_embeddings holds NaN, infinite or all-zero rows")
        sims = cosine(embeddings, ref)
        if opts.selection == "similar":
            face = int(np.argmax(sims[:, 0]))
            if sims[face, 0] < opts.threshold:
                return Selection.of([], no_match=True)
            return Selection.of([face])
        best = sims.argmax(axis=1)
        matched = np.where(sims[np.arange(n), best] >= opts.threshold)[0]
        limit = min(opts.max_faces or cap, cap)
        return Selection.of(matched[:limit], matched.size > limit, best[matched[:limit]], no_match=matched.size == 0)
    limit = min(opts.max_faces or cap, cap)
    if n <= limit:
        return Selection.of(np.arange(n))
    largest = np.argsort(-box_areas(dets.boxes), kind="stable")[:limit]
    return Selection.of(np.sort(largest), True)
