"""face_analyzer: SCRFD heads -> faces, normed ArcFace embeddings and inswapper latents."""

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.detection import HEAD_NAMES
from pipeline.stages import analyze_stage, detect_stage, frame, result_json
from pipeline.triton_glue import bls_detector, bls_fn, bytes_tensor, get, parameters, require_finite, respond


class TritonPythonModel:
    def initialize(self, args):
        p = parameters(args)
        self.det_size = int(p.get("det_size", "640"))
        self.det_thresh = float(p.get("det_thresh", "0.5"))
        self.nms_thresh = float(p.get("nms_thresh", "0.4"))
        self.max_pixels = int(p.get("max_pixels", "40000000"))
        self.embed_batch = int(p.get("recognizer_max_batch", "0"))
        self.detect_fn = bls_detector(p)
        self.embed_fn = bls_fn(p.get("recognizer_model", "face_recognizer"), [p.get("recognizer_input", "input.1")],
                               p.get("recognizer_output", "683"))
        self.emap = np.load(f"{args['model_repository']}/{p.get('emap_file', 'emap.npy')}")
        self.stand_ins = [s for s in p.get("stand_in_models", "").split(",") if s]
        if self.stand_ins:
            pb_utils.Logger.log_warn(f"face_analyzer: STAND-IN models in use: {self.stand_ins}; "
                                     "embeddings and latents are not real")

    def _handle(self, request):
        heads = [get(request, n) for n in HEAD_NAMES]
        require_finite("face_detector", heads, list(HEAD_NAMES))
        image = frame(get(request, "image"), self.max_pixels).bgr
        det_scale = float(get(request, "det_scale").reshape(-1)[0])
        dets = detect_stage(heads, (self.det_size, self.det_size), det_scale, self.det_thresh, self.nms_thresh,
                            image, self.detect_fn)
        emb, lat, crops = analyze_stage(image, dets, self.embed_fn, self.embed_batch, self.emap)
        return [
            pb_utils.Tensor("boxes", dets.boxes),
            pb_utils.Tensor("scores", dets.scores),
            pb_utils.Tensor("kps", dets.kps),
            pb_utils.Tensor("embeddings", emb),
            pb_utils.Tensor("latents", lat),
            pb_utils.Tensor("aligned_faces", crops),
            bytes_tensor("info", result_json(faces_detected=len(dets), stand_in_models=self.stand_ins)),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
