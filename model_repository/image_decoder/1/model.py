"""image_decoder: encoded image bytes -> BGR frame + SCRFD input (letterboxed blob)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.stages import decode_stage
from pipeline.triton_glue import bytes_tensor, get, parameters, respond


class TritonPythonModel:
    def initialize(self, args):
        p = parameters(args)
        self.det_size = int(p.get("det_size", "640"))
        self.max_pixels = int(p.get("max_pixels", "40000000"))

    def _handle(self, request):
        d = decode_stage(get(request, "image"), self.det_size, self.max_pixels)
        return [
            pb_utils.Tensor("image_bgr", d.image),
            pb_utils.Tensor("det_blob", d.det_blob),
            pb_utils.Tensor("det_scale", np.array([d.det_scale], np.float32)),
            bytes_tensor("image_info", json.dumps(d.info).encode()),
            pb_utils.Tensor("alpha", d.alpha),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
