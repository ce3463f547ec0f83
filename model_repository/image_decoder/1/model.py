"""image_decoder: encoded image bytes -> the SCRFD input (letterboxed blob) and its scale.

The full-resolution frame is not passed on: the stages that need it decode the bytes again
(see ``pipeline.stages.frame``), which keeps large tensors out of Triton's shared memory.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import get, respond
from pipeline.contracts import DecoderParams
from pipeline.stages import decode_stage


class TritonPythonModel:
    def initialize(self, args):
        self.p = DecoderParams.from_config(args)

    def _handle(self, request):
        d = decode_stage(get(request, "image"), self.p.det_size, self.p.max_pixels, alpha=False)
        return [
            pb_utils.Tensor("det_blob", d.det_blob),
            pb_utils.Tensor("det_scale", np.array([d.det_scale], np.float32)),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
