"""face_paster: inswapper on the aligned crops (BLS, chunked), paste-back blending, encoding."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.selection import SwapOptions
from pipeline.stages import frame, latents_for, paste_stage, result_json
from pipeline.triton_glue import bls_fn, bytes_tensor, cancelled_check, get, get_bytes, parameters, respond


class TritonPythonModel:
    def initialize(self, args):
        p = parameters(args)
        self.swap_batch = int(p.get("swapper_max_batch", "0"))
        self.swap_fn = bls_fn(p.get("swapper_model", "face_swapper"),
                              [p.get("swapper_target", "target"), p.get("swapper_source", "source")],
                              p.get("swapper_output", "output"))
        self.stand_ins = [s for s in p.get("stand_in_models", "").split(",") if s]
        self.max_pixels = int(p.get("max_pixels", "40000000"))
        if self.stand_ins:
            pb_utils.Logger.log_warn(f"face_paster: STAND-IN models in use: {self.stand_ins}; "
                                     "swapped faces are not real swaps")

    def _handle(self, request):
        opts = SwapOptions.from_json(get_bytes(request, "options"))
        info = json.loads(get_bytes(request, "align_info", b"{}"))
        crops = get(request, "aligned_crops")
        selected = get(request, "selected").reshape(-1)
        latents = (latents_for(get(request, "latent_index"), get(request, "source_latents")) if crops.shape[0]
                   else np.zeros((0, 512), np.float32))
        original = get(request, "original")
        d = frame(original, self.max_pixels, alpha=True)
        image = d.bgr
        check = cancelled_check(request)

        def swap_fn(blob, lat):  # a caller who has gone is not computed for: checked before every chunk
            check()
            return self.swap_fn(blob, lat)

        data, fmt, n = paste_stage(image, original.tobytes(), {"format": d.fmt, "grey": d.grey}, crops,
                                   get(request, "affines"), latents, opts, swap_fn, self.swap_batch, d.alpha)
        summary = result_json(faces_detected=info.get("faces_detected", 0), faces_swapped=n,
                              truncated=info.get("truncated", False), no_match=info.get("no_match", False),
                              selected=selected.tolist(), format=fmt,
                              width=int(image.shape[1]), height=int(image.shape[0]), stand_in_models=self.stand_ins)
        return [pb_utils.Tensor("output_image", np.frombuffer(data, np.uint8)), bytes_tensor("result", summary)]

    def execute(self, requests):
        return respond(requests, self._handle)
