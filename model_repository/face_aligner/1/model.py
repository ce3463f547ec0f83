"""face_aligner: SCRFD heads -> faces (NMS), selection, 128x128 crops for inswapper."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import bls_detector, bls_recognizer, bytes_tensor, get, get_bytes, require_finite, respond
from pipeline.contracts import AlignerParams
from pipeline.detection import HEAD_NAMES
from pipeline.selection import SwapOptions
from pipeline.stages import align_stage, detect_stage, frame, result_json


class TritonPythonModel:
    def initialize(self, args):
        self.p = AlignerParams.from_config(args)
        self.detect_fn = bls_detector(self.p)
        self.embed_fn = bls_recognizer(self.p)

    def _handle(self, request):
        opts = SwapOptions.from_json(get_bytes(request, "options"))
        image = frame(get(request, "image"), self.p.max_pixels).bgr
        heads = [get(request, n) for n in HEAD_NAMES]
        require_finite("face_detector", heads, list(HEAD_NAMES))
        det_scale = float(get(request, "det_scale").reshape(-1)[0])
        thresh = opts.det_thresh or self.p.det_thresh
        dets = detect_stage(heads, (self.p.det_size, self.p.det_size), det_scale, thresh, self.p.nms_thresh,
                            image, self.detect_fn)
        ref = get(request, "reference_embeddings", np.zeros((0, 512), np.float32))
        a = align_stage(image, dets, opts, self.p.max_faces, self.embed_fn, self.p.recognizer_max_batch,
                        ref if ref.size else None)
        return [
            pb_utils.Tensor("boxes", dets.boxes),
            pb_utils.Tensor("scores", dets.scores),
            pb_utils.Tensor("kps", dets.kps),
            pb_utils.Tensor("selected", a.selected.astype(np.int32)),
            pb_utils.Tensor("latent_index", a.latent_index.astype(np.int32)),
            pb_utils.Tensor("aligned_crops", a.crops),
            pb_utils.Tensor("affines", a.affines),
            bytes_tensor("align_info", result_json(faces_detected=len(dets), truncated=a.truncated,
                                                   no_match=a.no_match)),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
