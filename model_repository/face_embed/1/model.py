"""face_embed: one encoded image -> its faces, normed ArcFace embeddings and inswapper latents
(``pipeline.frames.analyze_frame``: decoded once; SCRFD and ArcFace through BLS)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import bls_detector, bls_recognizer, bytes_tensor, detect_settings, get, get_bytes, respond
from pipeline.contracts import AnalyzerParams
from pipeline.frames import Networks, analyze_frame, embed_options
from pipeline.stages import result_json


class TritonPythonModel:
    def initialize(self, args):
        self.p = p = AnalyzerParams.from_config(args)
        self.nets = Networks(bls_detector(p), bls_recognizer(p), None, p.recognizer_max_batch)
        self.settings = detect_settings(p)
        self.emap = np.load(f"{args['model_repository']}/{p.emap_file}")
        self.stand_ins = list(p.stand_in_models)
        if self.stand_ins:
            pb_utils.Logger.log_warn(f"face_embed: STAND-IN models in use: {self.stand_ins}; "
                                     "embeddings and latents are not real")

    def _handle(self, request):
        a = analyze_frame(get(request, "image"), self.nets, self.settings, self.emap,
                          embeddings=embed_options(get_bytes(request, "options")))
        return [
            pb_utils.Tensor("boxes", a.dets.boxes),
            pb_utils.Tensor("scores", a.dets.scores),
            pb_utils.Tensor("kps", a.dets.kps),
            pb_utils.Tensor("embeddings", a.embeddings),
            pb_utils.Tensor("latents", a.latents),
            pb_utils.Tensor("aligned_faces", a.crops),
            bytes_tensor("info", result_json(faces_detected=len(a.dets), stand_in_models=self.stand_ins,
                                             stage_ms=a.stage_ms)),
        ]

    def execute(self, requests):
        return respond(requests, self._handle)
