"""``POST /v1/swap``: which identity goes where, one ensemble call, the marks on the output."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from client import AsyncFaceSwapClient
from client.core import SwapResult
from gateway.api.forms import SwapForm
from gateway.core.admission import Admission
from gateway.core.config import Settings
from gateway.core.content import ContentGate
from gateway.core.errors import APIError
from gateway.core.marking import Marker
from gateway.core.metrics import Metrics
from gateway.services.common import face_or_404, read_image, source_face, triton_call
from gateway.storage.faces import FaceStore


class Pair(BaseModel):
    """Target faces most similar to ``reference_face_id`` get the identity of ``source_face_id``."""

    reference_face_id: str
    source_face_id: str


@dataclass
class Sources:
    """The identities to swap in: inswapper latents and normed ArcFace embeddings, float32
    [N, 512] each (None: a source photo, embedded once admitted); ``reference``: the pairs'
    reference embeddings [N, 512], else None."""

    latents: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    reference: np.ndarray | None = None


@dataclass
class SwapOutcome:
    """The ensemble's answer, the image to send (marked when a face was swapped) and one dict
    per detected face: ``box``, ``score``, ``swapped``, ``identity_transfer``, ``identity_leakage``."""

    result: SwapResult
    image: bytes
    faces: list[dict]


def swap_options(form: SwapForm) -> dict:
    """face_swap's options from the form (422 ``invalid_option`` when face_index contradicts selection)."""
    if form.face_index is not None and form.selection not in ("all", "index"):
        raise APIError(422, "invalid_option", f"face_index goes with selection=index, not selection={form.selection}.")
    return {"selection": "index" if form.face_index is not None else form.selection,
            "face_index": form.face_index or 0, "max_faces": form.max_faces, "output_format": form.output_format,
            "quality": form.quality, "pixel_boost": form.pixel_boost, "badge": form.badge}


def registered_sources(form: SwapForm, store: FaceStore, opts: dict) -> Sources:
    """The identities named by ``source_face_id`` or ``pairs`` (updating ``opts`` for pairs);
    empty for a source photo. 422 ``missing_source`` unless exactly one kind is sent,
    ``invalid_option`` for malformed pairs; 404 ``face_not_found``."""
    if sum(x is not None for x in (form.source, form.source_face_id, form.pairs)) != 1:
        raise APIError(422, "missing_source", "Send exactly one of: a source image, source_face_id, or pairs.")
    if form.source_face_id is not None:
        face = face_or_404(store, form.source_face_id)
        return Sources(face.latent[None], face.embedding[None])
    if form.pairs is None:
        return Sources()
    try:
        raw = json.loads(form.pairs)
        if not isinstance(raw, list):
            raise TypeError
        plist = [Pair.model_validate(p) for p in raw]
    except (ValueError, TypeError, ValidationError):
        raise APIError(422, "invalid_option", 'pairs must be a JSON list of objects like '
                       '{"reference_face_id": "...", "source_face_id": "..."}.') from None
    if not plist:
        raise APIError(422, "invalid_option", "pairs is empty.")
    faces = [face_or_404(store, p.source_face_id) for p in plist]
    opts.update(selection="pairs", threshold=form.threshold)
    return Sources(np.stack([f.latent for f in faces]), np.stack([f.embedding for f in faces]),
                   np.stack([face_or_404(store, p.reference_face_id).embedding for p in plist]))


def face_rows(res: SwapResult) -> list[dict]:
    """One dict per detected face, with the quality figures of the swapped ones."""
    chosen, quality = set(res.selected), {q.face: q for q in res.face_quality or []}
    return [{"box": [round(float(v), 2) for v in f.box], "score": round(f.score, 4), "swapped": i in chosen,
             "identity_transfer": quality[i].identity_transfer if i in quality else None,
             "identity_leakage": quality[i].identity_leakage if i in quality else None}
            for i, f in enumerate(res.faces)]


async def swap(request: Request, form: SwapForm, triton: AsyncFaceSwapClient, store: FaceStore,
               settings: Settings, metrics: Metrics, admission: Admission, marker: Marker,
               gate: ContentGate | None = None) -> SwapOutcome:
    """Swap the target's faces: read and check the uploads (their headers only), resolve the
    source, run ``face_swap`` within the request's pixel budget and deadline, mark the output.

    Raises:
        APIError: 400/413/415 for the uploads, 404/422 for the source or options, 422
            content_refused for a target the content gate refuses.
        client.FaceSwapError: Triton's errors (mapped to their status by gateway.core.errors).
    """
    target_bytes, pixels = await read_image(form.target, settings, "target")
    source_bytes = None
    if form.source is not None:
        source_bytes, source_pixels = await read_image(form.source, settings, "source")
        pixels += source_pixels
    opts = swap_options(form)
    if gate is not None:  # the content gate runs inside face_swap, on the decoded target
        opts.update(gate.options())
    src = registered_sources(form, store, opts)
    # every output with a swapped face says it is AI-made (gateway.core.marking): the watermark
    # goes into the pixels inside Triton, before the one encode; XMP and C2PA onto the bytes here.
    # An image where nothing was swapped comes back as it was.
    rid, watermark = marker.payload()
    with admission.pixels_reserved(pixels):
        if source_bytes is not None:
            face = await source_face(request, source_bytes, triton)
            src.latents, src.embeddings = face.latent[None], face.embedding[None]
        # the source embeddings let face_swap report identity transfer per swapped face
        res = await triton_call(request, triton.swap, target_bytes, src.latents, reference_embedding=src.reference,
                                source_embedding=src.embeddings, watermark=watermark, **opts)
    if gate is not None:  # 422 content_refused: nothing was swapped or kept
        gate.check({"content_refused": res.content_refused, "content_policy": res.content_policy}, "/v1/swap")
    metrics.faces_swapped.inc(res.faces_swapped)
    image = res.image if not res.faces_swapped else await asyncio.to_thread(
        marker.swapped_image, res, target_bytes, rid, "image", int(opts["quality"] or 95))
    return SwapOutcome(res, image, face_rows(res))
