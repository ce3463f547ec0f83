"""landmark_aligner: 128x128 crops for key points given by the caller (video: smoothed across frames)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import bytes_tensor, get, respond
from pipeline.contracts import LandmarkAlignerParams
from pipeline.stages import frame, place_stage, result_json


class TritonPythonModel:
    def initialize(self, args):
        self.p = LandmarkAlignerParams.from_config(args)

    def _handle(self, request):
        a = place_stage(frame(get(request, "image"), self.p.max_pixels).bgr, get(request, "face_kps"))
        return [
            pb_utils.Tensor("selected", a.selected.astype(np.int32)),
            pb_utils.Tensor("latent_index", a.latent_index.astype(np.int32)),
            pb_utils.Tensor("aligned_crops", a.crops),
            pb_utils.Tensor("affines", a.affines),
            bytes_tensor("align_info", result_json(faces_detected=len(a.dets), truncated=False)),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
