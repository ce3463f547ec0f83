"""Triton Python model that serves one ONNX network with a CPU inference engine.

Used by the embedded (CPU, no ONNX Runtime backend) profile for ``face_detector``, ``content_detector``,
``face_recognizer`` and ``face_swapper``. The fp32 engine is named by the ``engine`` parameter
in config.pbtxt (``onnxruntime``, the default, or ``openvino``); ``precision`` is ``auto`` (the
parity self-check of ``pipeline.precision`` picks f32, bf16 or int8 at load) or forces one.
With ``max_batch_size > 0`` Triton's dynamic batcher hands several requests at once; they are
concatenated, run in one call and split.

What serves is reported in the startup log (one line per network with the probe's figures)
and on Triton's ``/metrics`` (``faceswap_network_precision{model,precision,engine,chosen_by}``
= 1, ``faceswap_precision_probe{model,precision,engine,figure}``,
``faceswap_precision_probe_seconds``), which the gateway reads for /readyz (Triton 2.51's Python
backend cannot attach parameters to responses).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from pipeline import precision as prec
from pipeline.contracts import OnnxNetworkParams
from pipeline.engines import OutputNotFinite, checked, load

#: Figures of the probe exported as metrics (where present).
FIGURES = ("ms", "speedup", "psnr_db", "cosine", "box_px", "score_diff")


class OnnxModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        p = OnnxNetworkParams.from_config(args)
        self.name = cfg["name"]
        self.batching = int(cfg.get("max_batch_size", 0)) > 0
        self.input_names = [i["name"] for i in cfg["input"]]
        self.output_names = [o["name"] for o in cfg["output"]]
        engine, setting = p.engine, p.precision
        path = p.onnx_path
        if not os.path.isabs(path):
            path = os.path.join(args["model_repository"], path)
        threads = p.intra_op_threads
        batch_dim = 1 if self.batching else 0
        ranks = [len(i["dims"]) + batch_dim for i in cfg["input"]]
        probe = os.path.join(os.path.dirname(os.path.abspath(args["model_repository"])), prec.PROBE_FILE)
        choice = prec.choose(self.name, setting, path, engine, p.model_sha256,
                             os.environ.get("FACESWAP_CACHE_DIR") or p.cache_dir
                             or os.path.join(os.path.dirname(probe), ".cache"), probe,
                             self.input_names, ranks, self.output_names,
                             lambda f, outs, e, pr: load(f, outs, e, pr, threads))
        self.choice = choice
        run = load(choice.path, self.output_names, choice.engine, choice.precision, threads)
        self.run = checked(run, self.output_names, self.name, choice.precision,
                           lambda: load(path, self.output_names, engine, "f32", threads), pb_utils.Logger.log_warn)
        # engine torch: requests are served on tensors, taken and given by DLPack where they are
        # (a GPU caller's blob stays on the GPU; the torch profile's entry points)
        self.run_tensors = None if not hasattr(run, "tensors") else checked(
            run.tensors, self.output_names, self.name, choice.precision,
            lambda: load(path, self.output_names, engine, "f32", threads).tensors, pb_utils.Logger.log_warn)
        label = " (STAND-IN: random weights)" if p.stand_in else ""
        pb_utils.Logger.log_info(f"{choice.summary()}; serving {choice.path}{label}")
        self._metrics = self._export(choice)
        self._warm_graphs(run, cfg)

    def _warm_graphs(self, run, cfg: dict) -> None:
        """Engine torch on CUDA: the CUDA graphs of every batch size this network's dynamic
        batching can form, captured at load (inputs of fixed shape only; the detector's
        letterbox size varies and is captured on first use)."""
        dims = [[int(d) for d in i["dims"]] for i in cfg["input"]]
        if not hasattr(run, "warm") or not self.batching or any(d <= 0 for ds in dims for d in ds):
            return
        t0 = time.perf_counter()
        batches = run.warm([tuple(ds) for ds in dims], int(cfg["max_batch_size"]))
        if batches:
            pb_utils.Logger.log_info(f"{self.name}: CUDA graphs captured for batches {batches} in "
                                     f"{time.perf_counter() - t0:.1f} s")

    def _export(self, choice) -> list:
        """Triton custom metrics (kept referenced: a dropped Metric disappears from /metrics)."""
        if not hasattr(pb_utils, "MetricFamily"):
            return []
        gauge = pb_utils.MetricFamily.GAUGE
        fams = [pb_utils.MetricFamily(name="faceswap_network_precision", kind=gauge,
                                      description="1 for the precision each network serves in (chosen_by: "
                                                  "self-check, cache, setting, no probe)"),
                pb_utils.MetricFamily(name="faceswap_precision_probe", kind=gauge,
                                      description="load-time parity probe per precision: ms per probe call, "
                                                  "speedup over f32, psnr_db / cosine / box_px against f32, "
                                                  "passed (1/0)"),
                pb_utils.MetricFamily(name="faceswap_precision_probe_seconds", kind=gauge,
                                      description="seconds the load-time precision probe took (0: not run)")]
        metrics = [fams[0].Metric(labels={"model": self.name, "precision": choice.precision,
                                          "engine": choice.engine, "chosen_by": choice.chosen_by})]
        metrics[0].set(1)
        for row in choice.results:
            figs = {**row, **row.get("figures", {}), "passed": 1.0 if row.get("passed") else 0.0}
            for fig in FIGURES + ("passed",):
                value = figs.get(fig)
                if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
                    m = fams[1].Metric(labels={"model": self.name, "precision": row["precision"],
                                               "engine": row["engine"], "figure": fig})
                    m.set(float(value))
                    metrics.append(m)
        m = fams[2].Metric(labels={"model": self.name})
        m.set(float(choice.probe_seconds))
        return fams + metrics + [m]

    def execute(self, requests):
        try:
            return self._execute(requests)
        except OutputNotFinite as exc:  # every request of the batch shares the failed run
            err = pb_utils.TritonError(str(exc), pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=err) for _ in requests]

    def _execute(self, requests):
        if self.run_tensors is not None:
            from torch import cat
            from torch.utils.dlpack import from_dlpack

            feeds = [[from_dlpack(pb_utils.get_input_tensor_by_name(r, n).to_dlpack()) for n in self.input_names]
                     for r in requests]
            return self._batched(feeds, self.run_tensors, cat, self._respond_tensors)
        feeds = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names] for r in requests]
        return self._batched(feeds, self.run, np.concatenate, self._respond)

    def _batched(self, feeds, run, concat, respond):
        """One run per request, or with dynamic batching one run on the requests' rows merged
        (``concat``), split back into one response each."""
        if not self.batching:
            return [respond(run(dict(zip(self.input_names, f)))) for f in feeds]
        sizes = [f[0].shape[0] for f in feeds]
        merged = [concat([f[i] for f in feeds]) for i in range(len(self.input_names))]
        outs = run(dict(zip(self.input_names, merged)))
        responses, start = [], 0
        for n in sizes:
            responses.append(respond([o[start:start + n] for o in outs]))
            start += n
        return responses

    def _respond(self, outs):
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(o))
                                                          for n, o in zip(self.output_names, outs)])

    def _respond_tensors(self, outs):
        from torch.utils.dlpack import to_dlpack

        outs = [o.contiguous() for o in outs]
        if any(o.is_cuda for o in outs):  # the caller's process reads them: their kernels must be done
            import torch

            torch.cuda.current_stream(outs[0].device).synchronize()
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack(n, to_dlpack(o))
                                                          for n, o in zip(self.output_names, outs)])
