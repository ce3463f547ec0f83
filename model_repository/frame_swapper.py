"""The model of ``face_swap`` and ``face_swap_kps``: one encoded image in, one encoded image out
(``pipeline.frames.swap_frame``): decoded once; SCRFD, ArcFace (selection, quality figures) and
inswapper through BLS; paste-back, the invisible watermark and one encode. With ``face_kps``
(``face_swap_kps``: video, live) the caller's key points replace detection.

With ``pixels`` "device" (the ``torch`` profile) the frame stays on the torch device
(``pipeline.tensor_frames.swap_frame``) and the networks are called with tensors by DLPack."""

import numpy as np
import triton_python_backend_utils as pb_utils

from model_repository.glue import (
    bls_content,
    bls_detector,
    bls_memory,
    bls_recognizer,
    bls_swapper,
    bytes_tensor,
    cancelled_check,
    detect_settings,
    dlpack_networks,
    get,
    get_bytes,
    respond,
    tensor_input,
)
from pipeline.contracts import FrameSwapperParams
from pipeline.frames import Networks, swap_frame
from pipeline.selection import SwapOptions
from pipeline.stages import result_json

_NONE = np.zeros((0, 512), np.float32)


class FrameSwapper:
    def initialize(self, args):
        self.name = args["model_name"]
        self.p = p = FrameSwapperParams.from_config(args)
        self.nets = Networks(bls_detector(p), bls_recognizer(p), bls_swapper(p), p.recognizer_max_batch,
                             p.swapper_max_batch, bls_content(p))
        self.settings = detect_settings(p, p.max_faces)
        self.swap, self.get = swap_frame, get
        if p.pixels == "device":
            try:
                import torch
            except ImportError as exc:
                raise RuntimeError(
                    f"{self.name}: pixels=device keeps frames on the GPU with PyTorch, which this server's Python "
                    "lacks: pip install torch torchvision there (deploy/triton.Dockerfile: --build-arg "
                    "TORCH_PACKAGES=...), or build the repository with --pixels host") from exc

            from pipeline import tensor_frames
            from pipeline.engines import torch_device

            device = torch.device(torch_device())
            tnets = dlpack_networks(p, device)
            self.swap = lambda *a, **kw: tensor_frames.swap_frame(*a, **kw, device=device)
            self.nets, self.get = tnets, tensor_input
            pb_utils.Logger.log_info(f"{self.name}: frames on {device} (pipeline.tensor_frames), "
                                     f"networks called by DLPack in {bls_memory()} memory")
        elif p.pixels != "host":
            raise ValueError(f"{self.name}: pixels={p.pixels!r} is not host or device")
        self.stand_ins = list(p.stand_in_models)
        if self.stand_ins:
            pb_utils.Logger.log_warn(f"{self.name}: STAND-IN models in use: {self.stand_ins}; "
                                     "swapped faces are not real swaps")

    def _handle(self, request):
        opts = SwapOptions.from_json(get_bytes(request, "options"))
        given = pb_utils.get_input_tensor_by_name(request, "face_kps")  # face_swap_kps: no detection
        get = self.get
        ref = get(request, "reference_embeddings", _NONE) if given is None else _NONE
        kps = None if given is None else get(request, "face_kps")
        r = self.swap(get(request, "image"), opts, self.nets, self.settings, get(request, "source_latents"),
                      reference=ref, source_embeddings=get(request, "source_embeddings", _NONE), face_kps=kps,
                      check=cancelled_check(request))
        a = r.aligned
        outputs = [pb_utils.Tensor("output_image", np.frombuffer(r.data, np.uint8))]
        if kps is None:  # face_swap: the faces found and those swapped
            outputs += [pb_utils.Tensor("boxes", r.dets.boxes), pb_utils.Tensor("scores", r.dets.scores),
                        pb_utils.Tensor("kps", r.dets.kps), pb_utils.Tensor("selected", a.selected.astype(np.int32))]
        summary = result_json(faces_detected=len(r.dets), faces_swapped=int(a.crops.shape[0]), truncated=a.truncated,
                              no_match=a.no_match, selected=a.selected.tolist(), format=r.fmt,
                              face_quality=r.quality, width=r.width, height=r.height,
                              stand_in_models=self.stand_ins, watermarked=r.watermarked, stage_ms=r.stage_ms,
                              **r.content)
        return [*outputs, bytes_tensor("result", summary)]

    def execute(self, requests):
        return respond(requests, self._handle)
