"""image_decoder: encoded image bytes -> the SCRFD input (letterboxed blob) and its scale.

The full-resolution frame is not passed on: the stages that need it decode the bytes again
(see ``pipeline.stages.frame``), which keeps large tensors out of Triton's shared memory.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.stages import decode_stage
from pipeline.triton_glue import get, parameters, respond


class TritonPythonModel:
    def initialize(self, args):
        p = parameters(args)
        self.det_size = int(p.get("det_size", "640"))
        self.max_pixels = int(p.get("max_pixels", "40000000"))

    def _handle(self, request):
        d = decode_stage(get(request, "image"), self.det_size, self.max_pixels, alpha=False)
        return [
            pb_utils.Tensor("det_blob", d.det_blob),
            pb_utils.Tensor("det_scale", np.array([d.det_scale], np.float32)),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
