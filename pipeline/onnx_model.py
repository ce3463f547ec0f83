"""Triton Python model that serves one ONNX network with a CPU inference engine.

Used by the embedded (CPU, no ONNX Runtime backend) profile for ``face_detector``,
``face_recognizer`` and ``face_swapper``. The engine is named by the ``engine`` parameter
in config.pbtxt (``onnxruntime``, the default, or ``openvino``) with its ``precision``
(``f32``; ``bf16`` with openvino); see ``pipeline.engines``. With ``max_batch_size > 0`` Triton's dynamic
batcher hands several requests at once; they are concatenated, run in one call and split.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline.engines import OutputNotFinite, checked, load
from pipeline.triton_glue import parameters


class OnnxModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        p = parameters(args)
        self.name = cfg["name"]
        self.batching = int(cfg.get("max_batch_size", 0)) > 0
        self.input_names = [i["name"] for i in cfg["input"]]
        self.output_names = [o["name"] for o in cfg["output"]]
        engine, precision = p.get("engine", "onnxruntime"), p.get("precision", "f32")
        path = p["onnx_path"]
        if not os.path.isabs(path):
            path = os.path.join(args["model_repository"], path)
        threads = int(p.get("intra_op_threads", "0"))
        self.run = checked(load(path, self.output_names, engine, precision, threads), self.output_names, self.name,
                           precision, lambda: load(path, self.output_names, engine, "f32", threads),
                           pb_utils.Logger.log_warn)
        label = " (STAND-IN: random weights)" if p.get("stand_in", "false") == "true" else ""
        pb_utils.Logger.log_info(f"{self.name}: {engine} {precision} serving {path}{label}")

    def execute(self, requests):
        try:
            return self._execute(requests)
        except OutputNotFinite as exc:  # every request of the batch shares the failed run
            err = pb_utils.TritonError(str(exc), pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=err) for _ in requests]

    def _execute(self, requests):
        feeds = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests]
        if not self.batching:
            return [self._respond(self.run(dict(zip(self.input_names, f)))) for f in feeds]
        sizes = [f[0].shape[0] for f in feeds]
        merged = [np.concatenate([f[i] for f in feeds]) for i in range(len(self.input_names))]
        outs = self.run(dict(zip(self.input_names, merged)))
        responses, start = [], 0
        for n in sizes:
            responses.append(self._respond([o[start:start + n] for o in outs]))
            start += n
        return responses

    def _respond(self, outs):
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(o))
                                                          for n, o in zip(self.output_names, outs)])
