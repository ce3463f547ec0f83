"""face_paster: inswapper on the aligned crops (BLS, chunked; option pixel_boost: N x N sub-crops of each
face at 128 N, all faces' in the same chunks), paste-back blending, quality figures
(one ArcFace call through BLS on the original and the pasted faces), encoding."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import bls_recognizer, bls_swapper, bytes_tensor, cancelled_check, get, get_bytes, respond
from pipeline.contracts import PasterParams
from pipeline.quality import face_quality, source_rows
from pipeline.selection import SwapOptions
from pipeline.stages import encode_stage, frame, latents_for, pasted_frame, result_json


class TritonPythonModel:
    def initialize(self, args):
        self.p = p = PasterParams.from_config(args)
        self.swap_batch, self.embed_batch = p.swapper_max_batch, p.recognizer_max_batch
        self.swap_fn = bls_swapper(p)
        self.embed_fn = bls_recognizer(p)
        self.stand_ins = list(p.stand_in_models)
        if self.stand_ins:
            pb_utils.Logger.log_warn(f"face_paster: STAND-IN models in use: {self.stand_ins}; "
                                     "swapped faces are not real swaps")

    def _handle(self, request):
        opts = SwapOptions.from_json(get_bytes(request, "options"))
        info = json.loads(get_bytes(request, "align_info", b"{}"))
        crops = get(request, "aligned_crops")
        selected = get(request, "selected").reshape(-1)
        latent_index = get(request, "latent_index").reshape(-1)
        source_latents = get(request, "source_latents")
        latents = latents_for(latent_index, source_latents) if crops.shape[0] else np.zeros((0, 512), np.float32)
        sources = source_rows(get(request, "source_embeddings", np.zeros((0, 512), np.float32)),
                              np.asarray(source_latents).reshape(-1, 512).shape[0])
        original = get(request, "original")
        d = frame(original, self.p.max_pixels, alpha=True)
        image = d.bgr
        check = cancelled_check(request)

        def swap_fn(blob, lat):  # a caller who has gone is not computed for: checked before every chunk
            check()
            return self.swap_fn(blob, lat)

        def embed_fn(blob):
            check()
            return self.embed_fn(blob)

        info_d = {"format": d.fmt, "grey": d.grey}
        pasted = pasted_frame(image, info_d, crops, get(request, "affines"), latents, swap_fn, self.swap_batch,
                              opts.pixel_boost)
        quality = None
        if opts.face_quality:
            kps = get(request, "kps").reshape(-1, 5, 2)[selected]  # the swapped faces' key points
            quality = (face_quality(image, pasted, kps, selected, latent_index, embed_fn, self.embed_batch, sources)
                       if pasted is not None else [])
        data, fmt = encode_stage(image, original.tobytes(), info_d, pasted, opts, d.alpha)
        summary = result_json(faces_detected=info.get("faces_detected", 0), faces_swapped=int(crops.shape[0]),
                              truncated=info.get("truncated", False), no_match=info.get("no_match", False),
                              selected=selected.tolist(), format=fmt, face_quality=quality,
                              width=int(image.shape[1]), height=int(image.shape[0]), stand_in_models=self.stand_ins)
        return [pb_utils.Tensor("output_image", np.frombuffer(data, np.uint8)), bytes_tensor("result", summary)]

    def execute(self, requests):
        return respond(requests, self._handle)
