"""face_analyzer: SCRFD heads -> faces, normed ArcFace embeddings and inswapper latents."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import bls_detector, bls_recognizer, bytes_tensor, get, require_finite, respond
from pipeline.contracts import AnalyzerParams
from pipeline.detection import HEAD_NAMES
from pipeline.stages import analyze_stage, detect_stage, frame, result_json


class TritonPythonModel:
    def initialize(self, args):
        self.p = p = AnalyzerParams.from_config(args)
        self.detect_fn = bls_detector(p)
        self.embed_fn = bls_recognizer(p)
        self.emap = np.load(f"{args['model_repository']}/{p.emap_file}")
        self.stand_ins = list(p.stand_in_models)
        if self.stand_ins:
            pb_utils.Logger.log_warn(f"face_analyzer: STAND-IN models in use: {self.stand_ins}; "
                                     "embeddings and latents are not real")

    def _handle(self, request):
        heads = [get(request, n) for n in HEAD_NAMES]
        require_finite("face_detector", heads, list(HEAD_NAMES))
        image = frame(get(request, "image"), self.p.max_pixels).bgr
        det_scale = float(get(request, "det_scale").reshape(-1)[0])
        dets = detect_stage(heads, (self.p.det_size, self.p.det_size), det_scale, self.p.det_thresh, self.p.nms_thresh,
                            image, self.detect_fn)
        emb, lat, crops = analyze_stage(image, dets, self.embed_fn, self.p.recognizer_max_batch, self.emap)
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
