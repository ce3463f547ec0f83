"""face_aligner: SCRFD heads -> faces (NMS), selection, 128x128 crops for inswapper."""

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.detection import HEAD_NAMES
from pipeline.selection import SwapOptions
from pipeline.stages import align_stage, detect_stage, frame, result_json
from pipeline.triton_glue import bls_detector, bls_fn, bytes_tensor, get, get_bytes, parameters, require_finite, respond


class TritonPythonModel:
    def initialize(self, args):
        p = parameters(args)
        self.det_thresh = float(p.get("det_thresh", "0.5"))
        self.nms_thresh = float(p.get("nms_thresh", "0.4"))
        self.det_size = int(p.get("det_size", "640"))
        self.cap = int(p.get("max_faces", "64"))
        self.max_pixels = int(p.get("max_pixels", "40000000"))
        self.embed_batch = int(p.get("recognizer_max_batch", "0"))
        self.detect_fn = bls_detector(p)
        self.embed_fn = bls_fn(p.get("recognizer_model", "face_recognizer"), [p.get("recognizer_input", "input.1")],
                               p.get("recognizer_output", "683"))

    def _handle(self, request):
        opts = SwapOptions.from_json(get_bytes(request, "options"))
        image = frame(get(request, "image"), self.max_pixels).bgr
        heads = [get(request, n) for n in HEAD_NAMES]
        require_finite("face_detector", heads, list(HEAD_NAMES))
        det_scale = float(get(request, "det_scale").reshape(-1)[0])
        thresh = opts.det_thresh or self.det_thresh
        dets = detect_stage(heads, (self.det_size, self.det_size), det_scale, thresh, self.nms_thresh,
                            image, self.detect_fn)
        ref = get(request, "reference_embeddings", np.zeros((0, 512), np.float32))
        a = align_stage(image, dets, opts, self.cap, self.embed_fn, self.embed_batch,
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
