"""The contract of every Triton stage, in one place: its tensors and its typed parameters.

Each Python stage and each network has one description here:

- its **parameters** as a frozen dataclass (``FrameSwapperParams``, ``AnalyzerParams``, ...): field
  name = the ``parameters`` key of its ``config.pbtxt``, field type = how the string is read,
  field default = the only place that default is written. ``repository.generate`` writes the
  config from an instance (``to_config``); the stage's ``model.py`` reads it back with
  ``from_config`` in ``initialize``. Names read from the ONNX graphs (``detector_input``,
  ``recognizer_output``, ...) have no default: the generator must say them;
- its **tensors** (``python_stages``), wired to the networks' tensor names,
  which ``repository.generate`` reads from the ONNX graphs (``NetTensors``).

Plain Python (no Triton, no ONNX import): the generator, the models and the tests share it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeline.codec import MAX_PIXELS
from pipeline.detection import DET_SIZE, DET_THRESH, MAX_FACES, NMS_THRESH
from pipeline.embedding import EMBED_DIM

# --- parameters ----------------------------------------------------------------------------------


class Params:
    """Base of a stage's parameters (a frozen, keyword-only dataclass of str, int, float, bool
    and ``tuple[str, ...]`` fields; a tuple is written comma-separated, a bool ``true``/``false``)."""

    def to_config(self) -> dict[str, str]:
        """The ``config.pbtxt`` ``parameters`` (every field, as strings)."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = (",".join(v) if isinstance(v, tuple) else str(v).lower() if isinstance(v, bool) else str(v))
        return out

    @classmethod
    def from_strings(cls, values: Mapping[str, str]):
        """Read the fields from string ``values`` (other keys are ignored); absent -> the default.

        Raises:
            ValueError: a value that does not parse, or a field without a default that is absent.
        """
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in values:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{cls.__name__}: parameter {f.name!r} is missing from config.pbtxt")
                continue
            raw, kind = values[f.name], hints[f.name]
            try:
                if kind is bool:
                    if raw not in ("true", "false"):
                        raise ValueError("expected true or false")
                    kwargs[f.name] = raw == "true"
                elif kind in (int, float, str):
                    kwargs[f.name] = kind(raw)
                else:  # tuple[str, ...]
                    kwargs[f.name] = tuple(s for s in raw.split(",") if s)
            except ValueError as exc:
                raise ValueError(f"{cls.__name__}: parameter {f.name}={raw!r}: {exc}") from None
        return cls(**kwargs)

    @classmethod
    def from_config(cls, args: Mapping[str, str]):
        """Read the parameters from the ``args`` Triton passes to ``initialize`` (its ``model_config``)."""
        cfg = json.loads(args["model_config"])
        return cls.from_strings({k: v["string_value"] for k, v in cfg.get("parameters", {}).items()})


params = dataclass(frozen=True, kw_only=True)


@params
class FrameParams(Params):
    #: Largest decoded image, in pixels (a bigger one is refused with INVALID_ARG).
    max_pixels: int = MAX_PIXELS


@params
class DetectorCall(Params):
    """How a stage runs SCRFD through BLS and decodes its heads (letterbox, tiles, close-ups)."""

    #: Side of SCRFD's square input, pixels (insightface ``FaceAnalysis.prepare(det_size=(640, 640))``).
    det_size: int = DET_SIZE
    #: Face score threshold, 0..1 (insightface ``FaceAnalysis`` default).
    det_thresh: float = DET_THRESH
    #: NMS IoU threshold, 0..1 (insightface SCRFD default).
    nms_thresh: float = NMS_THRESH
    #: Detect again on overlapping tiles when faces are small against the frame, and on a
    #: padded frame when a face fills it (``pipeline.stages.detect_stage``).
    close_up_retry: bool = True
    detector_model: str = "face_detector"
    #: The detector's input and its 9 outputs in graph order (read from the ONNX graph).
    detector_input: str
    detector_outputs: tuple[str, ...]


@params
class RecognizerCall(Params):
    """How a stage calls ArcFace through BLS."""

    recognizer_model: str = "face_recognizer"
    #: ArcFace's input and output names (read from the ONNX graph).
    recognizer_input: str
    recognizer_output: str
    #: Rows per call (the network's max_batch_size; 0: one at a time).
    recognizer_max_batch: int = 0


@params
class SwapperCall(Params):
    """How a stage calls inswapper through BLS."""

    swapper_model: str = "face_swapper"
    #: inswapper's inputs (target crop, source latent) and output (read from the ONNX graph).
    swapper_target: str
    swapper_source: str
    swapper_output: str
    swapper_max_batch: int = 0


@params
class ContentCall(Params):
    """How a stage calls the content gate's detector through BLS (``pipeline.content``)."""

    content_model: str = "content_detector"
    #: The detector's input (float32 [1, 3, 320, 320]) and output ([1, 22, anchors]), read from its graph.
    content_input: str
    content_output: str


@params
class FrameSwapperParams(DetectorCall, RecognizerCall, SwapperCall, ContentCall, FrameParams):
    """``face_swap`` and ``face_swap_kps``: one encoded image in, one out (``pipeline.frames``):
    decode once, the content gate, SCRFD, selection, alignment, inswapper, paste-back, quality
    figures, the visible badge when asked, the invisible watermark, one encode; the networks
    through BLS."""

    #: At most this many faces are swapped in one image (the rest are left alone: ``truncated``).
    max_faces: int = MAX_FACES
    #: Manifest names of the networks that are stand-ins (logged; never hidden).
    stand_in_models: tuple[str, ...] = ()
    #: What a gateway in front should admit: requests in work and waiting (read by the gateway at start).
    admission_in_flight: int = 1
    admission_waiting: int = 1
    #: Where the frame's pixels live: ``host`` (NumPy and OpenCV, ``pipeline.frames``) or
    #: ``device`` (PyTorch on the networks' device, ``pipeline.tensor_frames``; tensors to and
    #: from the networks by DLPack: the ``torch`` profile).
    pixels: str = "host"


@params
class AnalyzerParams(DetectorCall, RecognizerCall, FrameParams):
    """``face_embed``: one encoded image -> its faces, ArcFace embeddings and inswapper latents."""

    #: inswapper's emap (512 x 512 float32), written beside the repository by the generator.
    emap_file: str = "emap.npy"
    #: Manifest names of the networks that are stand-ins (logged; never hidden).
    stand_in_models: tuple[str, ...] = ()


@params
class NetworkIdentity(Params):
    """Every network, every profile: what the gateway names in each output's C2PA manifest."""

    #: Random weights: results are not real (logged, shown in /readyz and the manifest).
    stand_in: bool = False
    #: The ONNX file's name and SHA-256 (hex), empty when unknown.
    model_name: str = ""
    model_sha256: str = ""


@params
class OnnxNetworkParams(NetworkIdentity):
    """A network served by the Python backend (``model_repository/onnx_model.py``, CPU profile)."""

    #: The ONNX file, absolute or relative to the model repository.
    onnx_path: str
    #: fp32 engine: ``onnxruntime``, ``openvino`` or ``torch`` (``pipeline.engines.ENGINES``).
    engine: str = "onnxruntime"
    #: ``auto`` (the parity self-check of ``pipeline.precision`` picks) or ``f32``, ``bf16``, ``int8``.
    precision: str = "auto"
    #: Threads per inference call (0: the engine's default, every core).
    intra_op_threads: int = 0
    #: int8 files and the self-check's decisions (``FACESWAP_CACHE_DIR`` wins when set).
    cache_dir: str = ""


# --- tensors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T:
    """A tensor in a model config: name, Triton data type (``TYPE_FP32``...), dims (without the
    batch dim; -1: any), optional (an input the caller may leave out)."""

    name: str
    dtype: str
    dims: tuple[int, ...] | list[int]
    optional: bool = False


class NetTensors(Protocol):
    """A network's tensors as the generator read them from its ONNX graph."""

    inputs: Sequence[T]
    outputs: Sequence[T]
    max_batch_size: int


@dataclass
class Stage:
    """A Python-backend stage: tensors, instances (CPU profile) and typed parameters."""

    inputs: list[T]
    outputs: list[T]
    params: Params
    instances: int = 1


#: The Triton model that serves each network (``content``: the content gate's detector, ``pipeline.content``).
NET_MODEL = {"detector": "face_detector", "recognizer": "face_recognizer", "swapper": "face_swapper",
             "content": "content_detector"}

_FACES = [T("boxes", "TYPE_FP32", [-1, 4]), T("scores", "TYPE_FP32", [-1]), T("kps", "TYPE_FP32", [-1, 5, 2])]
_IMAGE = T("image", "TYPE_UINT8", [-1])
_OPTIONS = T("options", "TYPE_STRING", [1])
_VECTORS = [-1, EMBED_DIM]
#: optional: the source identity for the quality figures (pipeline.quality); absent, the
#: identity transfer figure is null
_SOURCE_EMBEDDINGS = T("source_embeddings", "TYPE_FP32", _VECTORS, optional=True)
def python_stages(nets: Mapping[str, NetTensors], stand_ins: Sequence[str],
                  admission: tuple[int, int] = (1, 1), pixels: str = "host") -> dict[str, Stage]:
    """The public entry points, each one Python-backend model, wired to the networks' tensor
    names (``nets``: detector, recognizer, swapper, content); ``admission``: the profile's (in flight,
    waiting) for the gateway; ``pixels``: where the swap entry points keep a frame
    (``FrameSwapperParams.pixels``). Their names and tensors are the API clients use (and
    ``perf_analyzer`` targets):

    - ``face_swap``: an encoded image and source latents -> the encoded swapped image, every
      face found, those swapped, a ``result`` JSON (``pipeline.frames.swap_frame``);
    - ``face_swap_kps``: the same code with the caller's key points instead of detection
      (video and live: tracked and smoothed);
    - ``face_embed``: an encoded image -> its faces, embeddings and latents
      (``pipeline.frames.analyze_frame``).

    Each decodes a request's image once and keeps the frame to itself: only encoded bytes and
    small tensors cross Triton's boundaries (the Python backend's shared-memory pools grow to
    the largest tensors in flight and never shrink), and the networks are called through BLS
    with the blobs and crops they need. They are not ensembles: Triton cancels an ensemble only
    between its steps, and a one-step ensemble would add a hop and could not stop a request
    whose caller has gone; a Python model sees the cancellation (``request.is_cancelled()``)
    and Triton drops a cancelled request still in its queue."""
    det, rec, swp = nets["detector"], nets["recognizer"], nets["swapper"]
    recognizer = {"recognizer_input": rec.inputs[0].name, "recognizer_output": rec.outputs[0].name,
                  "recognizer_max_batch": rec.max_batch_size}
    detector = {"detector_input": det.inputs[0].name, "detector_outputs": tuple(o.name for o in det.outputs)}
    swapper = {"swapper_target": swp.inputs[0].name, "swapper_source": swp.inputs[1].name,
               "swapper_output": swp.outputs[0].name, "swapper_max_batch": swp.max_batch_size}
    stand = tuple(stand_ins)
    gate = nets["content"]
    content = {"content_input": gate.inputs[0].name, "content_output": gate.outputs[0].name}
    swap_params = FrameSwapperParams(**detector, **recognizer, **swapper, **content, stand_in_models=stand,
                                     admission_in_flight=admission[0], admission_waiting=admission[1],
                                     pixels=pixels)
    latents = T("source_latents", "TYPE_FP32", _VECTORS)
    swapped = [T("output_image", "TYPE_UINT8", [-1]), T("result", "TYPE_STRING", [1])]
    return {
        "face_swap": Stage(
            [_IMAGE, latents, T("reference_embeddings", "TYPE_FP32", _VECTORS), _OPTIONS, _SOURCE_EMBEDDINGS],
            [swapped[0], *_FACES, T("selected", "TYPE_INT32", [-1]), swapped[1]], swap_params, instances=2),
        "face_swap_kps": Stage(
            # the caller's key points (video, live: tracked and smoothed): no detection
            [_IMAGE, latents, T("face_kps", "TYPE_FP32", [-1, 5, 2]), _OPTIONS, _SOURCE_EMBEDDINGS],
            swapped, swap_params, instances=2),
        "face_embed": Stage(
            # options: {"embeddings": false} finds the faces only (no ArcFace call; tracking);
            # two instances, so one frame's decode overlaps another's detection (video jobs)
            [_IMAGE, T("options", "TYPE_STRING", [1], optional=True)],
            [*_FACES, T("embeddings", "TYPE_FP32", _VECTORS), T("latents", "TYPE_FP32", _VECTORS),
             T("aligned_faces", "TYPE_UINT8", [-1, 112, 112, 3]), T("info", "TYPE_STRING", [1])],
            AnalyzerParams(**detector, **recognizer, stand_in_models=stand), instances=2),
    }
