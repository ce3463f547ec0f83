"""Every output says it is AI-made (issue 12): the gateway's and job workers' use of the
``provenance`` library.

Each image, video and stream frame the service returns gets three independent marks: a signed
C2PA manifest (C2PA 2.2: action ``c2pa.edited``, digitalSourceType
compositeWithTrainedAlgorithmicMedia, ``c2pa.watermarked`` with the watermark as a soft binding,
the target as ingredient, the models used with their SHA-256), IPTC/XMP ``DigitalSourceType`` and an
invisible watermark carrying (service id, result id). Marking is on by default; only the
server setting ``marking`` turns it off (logged at start); no request can. Result ids are
remembered (:class:`gateway.storage.faces.ResultLog`) so that ``/v1/verify`` can say when a
marked file was made.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np

from client import AsyncFaceSwapClient, FaceSwapError

log = logging.getLogger("gateway.marking")
#: The networks every swap runs, named in each output's C2PA manifest (the content gate's detector too).
NETWORKS = ("face_detector", "face_recognizer", "face_swapper", "content_detector")
#: sha256 field of a model whose file hash Triton did not report (an older repository).
UNKNOWN_SHA256 = "0" * 64


class Marker:
    """Marks outputs. ``signer`` None: marking is off (``enabled`` False, outputs unchanged).

    Args:
        signer: ``provenance.ProvenanceSigner`` or None.
        results: a ``ResultLog`` / ``RedisResultLog`` (result ids given out).
        models: ``[{"name", "sha256", "stand_in"}]`` of the networks Triton serves.
    """

    def __init__(self, signer, results, models: list[dict]) -> None:
        self.signer, self.results, self.models = signer, results, models

    @property
    def enabled(self) -> bool:
        return self.signer is not None

    @property
    def service_id(self) -> int | None:
        return None if self.signer is None else self.signer.service_id

    @classmethod
    async def start(cls, settings, triton: AsyncFaceSwapClient, results) -> Marker:
        """The marker of a process: the operator's certificate chain and key (settings
        ``c2pa_cert_chain`` / ``c2pa_private_key``), else a development chain made in
        ``c2pa_dev_dir`` (logged as such); the models read from Triton's configs.

        Raises:
            ValueError, c2pa.C2paError: the operator's credentials cannot sign (at start, not later).
        """
        if not settings.marking:
            log.warning("OUTPUT MARKING IS OFF (FACESWAP_GATEWAY_MARKING=false): outputs carry no C2PA manifest, "
                        "no XMP DigitalSourceType and no watermark")
            return cls(None, results, [])
        from provenance import ProvenanceSigner

        if settings.c2pa_cert_chain and settings.c2pa_private_key:
            signer = await asyncio.to_thread(ProvenanceSigner.from_files, settings.c2pa_cert_chain,
                                             settings.c2pa_private_key, service_id=settings.service_id)
            log.info("outputs are marked and signed as %r (service id %d)", signer.subject, signer.service_id)
        else:
            signer = await asyncio.to_thread(ProvenanceSigner.development, settings.c2pa_dev_dir,
                                             service_id=settings.service_id)
            log.warning("outputs are signed with a DEVELOPMENT certificate (%s, in %s): verifiers report the signer as "
                        "untrusted; set FACESWAP_GATEWAY_C2PA_CERT_CHAIN and _C2PA_PRIVATE_KEY in production",
                        signer.subject, settings.c2pa_dev_dir)
        return cls(signer, results, await read_models(triton))

    def new_result(self, kind: str) -> int:
        """A fresh 32-bit result id, remembered (``kind``: image, video, batch or stream)."""
        rid = secrets.randbits(32)
        self.results.remember(rid, kind)
        return rid

    def _models(self, stand_ins: list[str]) -> list[dict]:
        if self.models:
            return self.models
        return [{"name": n, "sha256": UNKNOWN_SHA256, "stand_in": True} for n in stand_ins]

    def payload(self) -> tuple[int | None, str]:
        """(result id, the watermark payload as 16 hex digits) for the swap's ``watermark``
        option, so that ``face_swap`` marks the pixels before its one encode; (None, "")
        when marking is off. The id is remembered by :meth:`swapped_image`, once it is used."""
        if self.signer is None:
            return None, ""
        from provenance import Payload

        rid = secrets.randbits(32)
        return rid, Payload(self.signer.service_id, rid).to_bytes().hex()

    def swapped_image(self, res, target: bytes | None, result_id: int | None, kind: str = "image",
                      quality: int = 95) -> bytes:
        """The marked output of a swap that swapped a face (blocking: run it in a thread).

        ``res`` (``client.SwapResult``) came back with its pixels watermarked with ``result_id``
        (``res.watermarked``): XMP and C2PA go onto its bytes, nothing is decoded or encoded
        again. Otherwise (an image under the watermark's 64 px, or a server that did not mark)
        the bytes get all three marks as before (one more decode and encode where a
        watermark fits). Unchanged when marking is off.
        """
        if self.signer is None:
            return res.image
        from pipeline.watermark import MIN_SIDE
        from provenance import mark_encoded, mark_image

        rid = result_id if result_id is not None else secrets.randbits(32)
        self.results.remember(rid, kind)
        models = self._models(list(res.stand_in_models))
        if res.watermarked or min(res.width, res.height) < MIN_SIDE:
            return mark_encoded(res.image, res.format, target, models, rid, self.signer)
        return mark_image(res.image, res.format, target, models, rid, self.signer, quality=quality)

    def video_marks(self) -> tuple[int | None, Callable[[np.ndarray], np.ndarray] | None]:
        """(result id, the per-frame watermark hook) of a new video; (None, None) when off."""
        if self.signer is None:
            return None, None
        from provenance import Payload, watermark_frame

        rid = self.new_result("video")
        payload = Payload(self.signer.service_id, rid)
        return rid, lambda bgr: watermark_frame(bgr, payload)

    def video_file(self, path: Path, target_path: Path | None, result_id: int | None,
                   stand_ins: list[str] = ()) -> None:
        """XMP and the C2PA manifest on a finished MP4 whose frames went through the hook."""
        if self.signer is None or result_id is None:
            return
        from provenance import mark_video_file

        mark_video_file(path, target_path, self._models(list(stand_ins)), result_id, self.signer)


async def read_models(triton: AsyncFaceSwapClient) -> list[dict]:
    """The networks Triton serves, from their configs (``model_name``, ``model_sha256``,
    ``stand_in`` parameters written by repository/generate.py); [] when Triton cannot tell."""
    models = []
    try:
        for net in NETWORKS:
            p = await asyncio.wait_for(triton.model_parameters(net), 5)
            models.append({"name": p.get("model_name") or net, "sha256": p.get("model_sha256") or UNKNOWN_SHA256,
                           "stand_in": p.get("stand_in") == "true", "role": net})
    except (asyncio.TimeoutError, FaceSwapError) as exc:
        log.warning("could not read the models from Triton (%s): manifests will name the stand-ins only", exc)
        return []
    return models
