"""The contract of every Triton stage, in one place: its tensors and its typed parameters.

Each Python stage and each network has one description here:

- its **parameters** as a frozen dataclass (``DecoderParams``, ``AlignerParams``, ...): field
  name = the ``parameters`` key of its ``config.pbtxt``, field type = how the string is read,
  field default = the only place that default is written. ``repository.generate`` writes the
  config from an instance (``to_config``); the stage's ``model.py`` reads it back with
  ``from_config`` in ``initialize``. Names read from the ONNX graphs (``detector_input``,
  ``recognizer_output``, ...) have no default: the generator must say them;
- its **tensors** (``python_stages``, ``ensembles``), wired to the networks' tensor names,
  which ``repository.generate`` reads from the ONNX graphs (``NetTensors``).

Plain Python (no Triton, no ONNX import): the generator, the models and the tests share it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.codec import MAX_PIXELS
from pipeline.detection import DET_SIZE, DET_THRESH, HEAD_NAMES, MAX_FACES, NMS_THRESH
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
class DecoderParams(FrameParams):
    """``image_decoder``: encoded bytes -> SCRFD's letterboxed blob."""

    #: Side of SCRFD's square input, pixels (insightface ``FaceAnalysis.prepare(det_size=(640, 640))``).
    det_size: int = DET_SIZE


@params
class DetectorCall(Params):
    """How a stage decodes the detector's heads, and calls it again (BLS) on tiles for close-ups."""

    det_size: int = DET_SIZE
    #: Face score threshold, 0..1 (insightface ``FaceAnalysis`` default).
    det_thresh: float = DET_THRESH
    #: NMS IoU threshold, 0..1 (insightface SCRFD default).
    nms_thresh: float = NMS_THRESH
    #: Detect again on overlapping tiles when faces are small against the frame.
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
class AlignerParams(DetectorCall, RecognizerCall, FrameParams):
    """``face_aligner``: detections -> the selected faces' 128 x 128 crops for inswapper."""

    #: At most this many faces are swapped in one image (the rest are left alone: ``truncated``).
    max_faces: int = MAX_FACES


@params
class AnalyzerParams(DetectorCall, RecognizerCall, FrameParams):
    """``face_analyzer``: detections -> ArcFace embeddings and inswapper latents."""

    #: inswapper's emap (512 x 512 float32), written beside the repository by the generator.
    emap_file: str = "emap.npy"
    #: Manifest names of the networks that are stand-ins (logged; never hidden).
    stand_in_models: tuple[str, ...] = ()


@params
class PasterParams(RecognizerCall, FrameParams):
    """``face_paster``: inswapper (BLS) on the crops, paste-back, quality figures, encode."""

    swapper_model: str = "face_swapper"
    #: inswapper's inputs (target crop, source latent) and output (read from the ONNX graph).
    swapper_target: str
    swapper_source: str
    swapper_output: str
    swapper_max_batch: int = 0
    stand_in_models: tuple[str, ...] = ()
    #: What a gateway in front should admit: requests in work and waiting (read by the gateway at start).
    admission_in_flight: int = 1
    admission_waiting: int = 1


@params
class LandmarkAlignerParams(FrameParams):
    """``landmark_aligner``: the caller's key points -> crops (video frames, tracked faces)."""


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
    #: fp32 engine: ``onnxruntime`` or ``openvino`` (``pipeline.engines.ENGINES``).
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
    batch dim; -1: any), optional (an ensemble or stage input the caller may leave out)."""

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
_CROPS = [T("selected", "TYPE_INT32", [-1]), T("latent_index", "TYPE_INT32", [-1]),
          T("aligned_crops", "TYPE_UINT8", [-1, 128, 128, 3]), T("affines", "TYPE_FP32", [-1, 2, 3]),
          T("align_info", "TYPE_STRING", [1])]


def python_stages(nets: Mapping[str, NetTensors], stand_ins: Sequence[str],
                  admission: tuple[int, int] = (1, 1)) -> dict[str, Stage]:
    """The Python stages, wired to the networks' tensor names (``nets``: detector, recognizer,
    swapper); ``admission``: the profile's (in flight, waiting) for the gateway."""
    det, rec, swp = nets["detector"], nets["recognizer"], nets["swapper"]
    heads = [T(h, o.dtype, o.dims) for h, o in zip(HEAD_NAMES, det.outputs)]
    recognizer = {"recognizer_input": rec.inputs[0].name, "recognizer_output": rec.outputs[0].name,
                  "recognizer_max_batch": rec.max_batch_size}
    detector = {"detector_input": det.inputs[0].name, "detector_outputs": tuple(o.name for o in det.outputs)}
    stand = tuple(stand_ins)
    # Stages that need the full-resolution frame decode the encoded bytes themselves: only
    # bytes and small tensors cross stage boundaries (the Python backend's shared-memory
    # pools grow to the largest tensors in flight and never shrink).
    return {
        "image_decoder": Stage(
            [_IMAGE], [T("det_blob", "TYPE_FP32", [1, 3, -1, -1]), T("det_scale", "TYPE_FP32", [1])],
            DecoderParams(), instances=2),
        "face_aligner": Stage(
            [*heads, T("det_scale", "TYPE_FP32", [1]), _IMAGE, _OPTIONS,
             T("reference_embeddings", "TYPE_FP32", _VECTORS, optional=True)],
            [*_FACES, *_CROPS], AlignerParams(**detector, **recognizer), instances=2),
        "face_paster": Stage(
            [T("original", "TYPE_UINT8", [-1]), T("latent_index", "TYPE_INT32", [-1]),
             T("aligned_crops", "TYPE_UINT8", [-1, 128, 128, 3]), T("affines", "TYPE_FP32", [-1, 2, 3]),
             T("selected", "TYPE_INT32", [-1]), T("source_latents", "TYPE_FP32", _VECTORS), _OPTIONS,
             T("align_info", "TYPE_STRING", [1]),
             # quality figures (pipeline.quality): the key points of every face (indexed by
             # ``selected``) and, optionally, one source embedding per source latent
             T("kps", "TYPE_FP32", [-1, 5, 2]), _SOURCE_EMBEDDINGS],
            [T("output_image", "TYPE_UINT8", [-1]), T("result", "TYPE_STRING", [1])],
            PasterParams(swapper_target=swp.inputs[0].name, swapper_source=swp.inputs[1].name,
                         swapper_output=swp.outputs[0].name, swapper_max_batch=swp.max_batch_size,
                         stand_in_models=stand, admission_in_flight=admission[0], admission_waiting=admission[1],
                         **recognizer),
            instances=2),
        "landmark_aligner": Stage(
            [_IMAGE, T("face_kps", "TYPE_FP32", [-1, 5, 2])], list(_CROPS), LandmarkAlignerParams(), instances=2),
        "face_analyzer": Stage(
            [*heads, T("det_scale", "TYPE_FP32", [1]), _IMAGE],
            [*_FACES, T("embeddings", "TYPE_FP32", _VECTORS), T("latents", "TYPE_FP32", _VECTORS),
             T("aligned_faces", "TYPE_UINT8", [-1, 112, 112, 3]), T("info", "TYPE_STRING", [1])],
            AnalyzerParams(**detector, **recognizer, stand_in_models=stand), instances=1),
    }


@dataclass
class Ensemble:
    """An ensemble: its public tensors and its steps ``(model, input_map, output_map)``."""

    inputs: list[T]
    outputs: list[T]
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)


def ensembles(nets: Mapping[str, NetTensors]) -> dict[str, Ensemble]:
    """face_embed, face_swap and face_swap_kps (key points given by the caller, for video)."""
    det = nets["detector"]
    head_map = {o.name: f"head_{h}" for o, h in zip(det.outputs, HEAD_NAMES)}
    head_in = {h: f"head_{h}" for h in HEAD_NAMES}
    decode = ("image_decoder", {"image": "image"}, {"det_blob": "det_blob", "det_scale": "det_scale"})
    detect = (NET_MODEL["detector"], {det.inputs[0].name: "det_blob"}, head_map)
    paste_in = {"original": "image", "latent_index": "latent_index", "aligned_crops": "aligned_crops",
                "affines": "affines", "selected": "selected", "source_latents": "source_latents", "options": "options",
                "align_info": "align_info", "source_embeddings": "source_embeddings"}
    crops_map = {t.name: t.name for t in _CROPS}
    faces_map = {t.name: t.name for t in _FACES}

    def paste(kps: str) -> tuple:
        """The face_paster step, given the ensemble tensor holding the faces' key points."""
        return ("face_paster", {**paste_in, "kps": kps}, {"output_image": "output_image", "result": "result"})

    latents = T("source_latents", "TYPE_FP32", _VECTORS)
    return {
        "face_embed": Ensemble(
            [_IMAGE],
            [*_FACES, T("embeddings", "TYPE_FP32", _VECTORS), T("latents", "TYPE_FP32", _VECTORS),
             T("aligned_faces", "TYPE_UINT8", [-1, 112, 112, 3]), T("info", "TYPE_STRING", [1])],
            [decode, detect,
             ("face_analyzer", {**head_in, "det_scale": "det_scale", "image": "image"},
              {**faces_map, "embeddings": "embeddings", "latents": "latents", "aligned_faces": "aligned_faces",
               "info": "info"})]),
        "face_swap": Ensemble(
            [_IMAGE, latents, T("reference_embeddings", "TYPE_FP32", _VECTORS), _OPTIONS, _SOURCE_EMBEDDINGS],
            [T("output_image", "TYPE_UINT8", [-1]), *_FACES, T("selected", "TYPE_INT32", [-1]),
             T("result", "TYPE_STRING", [1])],
            [decode, detect,
             ("face_aligner", {**head_in, "det_scale": "det_scale", "image": "image", "options": "options",
                               "reference_embeddings": "reference_embeddings"}, {**faces_map, **crops_map}),
             paste("kps")]),
        "face_swap_kps": Ensemble(
            [_IMAGE, latents, T("face_kps", "TYPE_FP32", [-1, 5, 2]), _OPTIONS, _SOURCE_EMBEDDINGS],
            [T("output_image", "TYPE_UINT8", [-1]), T("result", "TYPE_STRING", [1])],
            [("landmark_aligner", {"image": "image", "face_kps": "face_kps"}, crops_map), paste("face_kps")]),
    }
