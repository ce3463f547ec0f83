"""Build a Triton model repository from one description of every model, for four profiles.

- ``cpu`` (embedded default): the networks are Python models running ONNX Runtime
  (the ``tritonserver`` in the nvidia-pytriton wheel has only the Python backend).
- ``torch``: the same Python models for a server without TensorRT (the wheel's, on a GPU):
  the networks as torch modules (engine ``torch``, on CUDA where there is a GPU) and the swap
  entry points keeping each frame on that device (``pipeline.tensor_frames``), tensors passed
  to and from the networks by DLPack (``FORCE_CPU_ONLY_INPUT_TENSORS`` "no"). It runs on a
  CPU too, which is how the tests serve it.
- ``gpu`` : the networks on Triton's ``onnxruntime`` backend (TensorRT execution provider)
  with dynamic batching and GPU instance groups; ``gpu-trt``: ``tensorrt_plan`` engines built
  by ``repository/build_engines.sh``. The Python entry points (``face_swap``, ``face_swap_kps``,
  ``face_embed``, which call the networks through BLS) are the same in all.

The tensor names of the networks come from the resolved ONNX graphs (the real SCRFD
exports name their outputs with numbers that differ between det_10g and det_2.5g).
Configs are written with Triton's own ModelConfig protobuf, so they always parse.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import text_format
from onnx import numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from pipeline import precision as prec
from pipeline.contracts import (
    NET_MODEL,
    NetworkIdentity,
    OnnxNetworkParams,
    Stage,
    T,
    python_stages,
)
from pipeline.engines import ENGINES
from repository.layout import ROOT, SOURCE, cache_dir, default_images, env_int
from repository.layout import cached_sha256 as _file_sha256
from repository.onnx_graph import graph_io
from repository.quantize import ensure_int8
from repository.resolve import ResolvedModel, resolve

log = logging.getLogger(__name__)
PROFILES = ("cpu", "torch", "gpu", "gpu-trt")
#: Profiles whose networks are Python models (``model_repository/onnx_model.py``).
PYTHON_PROFILES = ("cpu", "torch")
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8"}


@dataclass
class Net:
    """A network as read from its ONNX graph."""

    role: str
    model: ResolvedModel
    inputs: list[T]
    outputs: list[T]
    max_batch_size: int


#: Batch limit given to networks whose graph has a symbolic batch dimension. The content detector
#: batches like the swapper: video frames and live streams send it one frame per request.
NET_MAX_BATCH = {"detector": 0, "recognizer": 32, "swapper": 8, "content": 8}
#: Queue policy of every model (Triton ``ModelQueuePolicy``): at most this many
#: requests wait per model, then Triton answers UNAVAILABLE at once; a request that waited
#: longer than its timeout (the caller's, sent with the request, else the default below) is
#: rejected, not computed. The entry points ``face_swap``, ``face_swap_kps`` and ``face_embed``
#: get the tightest queue: they are where callers are turned away before any pixels are decoded.
QUEUE_TIMEOUT_US = 30_000_000
#: Admission bounds a gateway should use in front of this repository, per profile (face_swap
#: parameters ``admission_in_flight`` / ``admission_waiting``, read by the gateway at start).
#: Embedded CPU: one request already keeps every core busy (the networks use all cores), so a
#: second one in work only splits the CPU; one in work plus one waiting in the gateway gave the
#: best goodput and tail (2-core machine, tiny stand-ins, 2x overload: 90% of saturation, p99
#: 2.5x the unloaded p50; 2+2 gave 103% but 4.5x; 2+0 76% and 4.3x). GPU: one per face_swap
#: instance in work and as many waiting (not measured yet).
ADMISSION = {"cpu": (1, 1), "torch": (4, 4), "gpu": (4, 4), "gpu-trt": (4, 4)}
MAX_QUEUE = {"face_swap": 8, "face_swap_kps": 8, "face_embed": 8, "default": 32}
#: Operator settings for a bigger machine (a GPU whose networks wait on the host's pixel work:
#: bench.gpu_run): instances of every entry point, the entry points' queue, the swapper's batch.
STAGE_INSTANCES_ENV, STAGE_QUEUE_ENV, SWAPPER_BATCH_ENV = (
    "FACESWAP_STAGE_INSTANCES", "FACESWAP_STAGE_QUEUE", "FACESWAP_SWAPPER_MAX_BATCH")


def _content_dims(model: ResolvedModel, ins, outs) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The content detector's tensors must fit ``pipeline.content``'s contract (one float input
    [N, 3, H, W] that takes 320 x 320, one float output [N, 22, A]); returns the contract's dims
    (``INPUT_DIMS``, ``OUTPUT_DIMS``) for the config.

    Raises:
        ValueError: another detector's tensors (named with the file).
    """
    from pipeline.content import INPUT_DIMS, OUTPUT_DIMS

    def fits(dims, want) -> bool:
        return len(dims) == len(want) + 1 and all(d in (-1, w) for d, w in zip(dims[1:], want))

    if (len(ins) != 1 or len(outs) != 1 or ins[0].elem_type != 1 or outs[0].elem_type != 1
            or not fits(ins[0].dims, INPUT_DIMS) or not fits(outs[0].dims, OUTPUT_DIMS)):
        raise ValueError(f"{model.path}: not a content detector of pipeline.content's contract (one float input "
                         f"[N, {', '.join(map(str, INPUT_DIMS))}], one float output "
                         f"[N, {', '.join(map(str, OUTPUT_DIMS))}]); it has inputs "
                         f"{[(i.name, i.dims) for i in ins]} and outputs {[(o.name, o.dims) for o in outs]}")
    return INPUT_DIMS, OUTPUT_DIMS


def read_net(role: str, model: ResolvedModel) -> Net:
    """Read tensor names/shapes from the ONNX graph (``onnx_graph.graph_io``); batching when
    dim 0 is symbolic. The content detector's dims are its contract's (``_content_dims``).

    Raises:
        ValueError: a content detector whose tensors do not fit the contract.
    """
    ins, outs = graph_io(model.path)
    limit = env_int(SWAPPER_BATCH_ENV, NET_MAX_BATCH[role]) if role == "swapper" else NET_MAX_BATCH[role]
    batchable = all(i.dims[0] == -1 for i in ins) and limit > 0
    mbs = limit if batchable else 0
    fixed = _content_dims(model, ins, outs) if role == "content" else None

    def conv(tensors, which: int) -> list[T]:
        return [T(t.name, ONNX_TO_TRITON[t.elem_type],
                  list(fixed[which]) if fixed and mbs else [1, *fixed[which]] if fixed else
                  list(t.dims[1:] if mbs else t.dims)) for t in tensors]

    return Net(role, model, conv(ins, 0), conv(outs, 1), mbs)


def extract_emap(swapper_path: str) -> np.ndarray:
    """inswapper's emap: the graph's last initializer, float32 [512, 512] (insightface inswapper.py)."""
    g = onnx.load(swapper_path).graph
    emap = numpy_helper.to_array(g.initializer[-1]).astype(np.float32)
    if emap.shape != (512, 512):
        raise ValueError(f"{swapper_path}: last initializer is {emap.shape}, expected the 512x512 emap")
    return emap


def _tensors(field_, tensors: list[T]) -> None:
    for t in tensors:
        msg = field_.add(name=t.name, data_type=getattr(mc.DataType, t.dtype), dims=t.dims)
        if t.optional:
            msg.optional = True


def queue_policy(cfg: mc.ModelConfig, name: str) -> None:
    """Dynamic-batching queue with a bounded size and timeouts that reject (see QUEUE_TIMEOUT_US)."""
    pol = cfg.dynamic_batching.default_queue_policy
    pol.timeout_action = mc.ModelQueuePolicy.REJECT
    pol.default_timeout_microseconds = QUEUE_TIMEOUT_US
    pol.allow_timeout_override = True
    pol.max_queue_size = (env_int(STAGE_QUEUE_ENV, MAX_QUEUE[name]) if name in MAX_QUEUE
                          else MAX_QUEUE["default"])


def _params(cfg: mc.ModelConfig, params: dict[str, str]) -> None:
    for k, v in params.items():
        cfg.parameters[k].string_value = v


def cpu_engine(profile: str = "cpu") -> tuple[str, str]:
    """(fp32 engine, precision setting) of the networks in a Python profile.

    ``FACESWAP_ENGINE`` (onnxruntime | openvino | torch, default onnxruntime; the ``torch``
    profile's is torch, and another setting is refused) runs fp32;
    ``FACESWAP_PRECISION`` is ``auto`` (default: the load-time self-check of
    ``pipeline.precision`` picks the fastest precision that keeps parity) or forces ``f32``,
    ``bf16`` or ``int8`` (both on OpenVINO, or bf16 on torch) or ``fp16`` (torch only).

    Raises:
        ValueError: an unknown engine or precision.
    """
    engine = os.environ.get("FACESWAP_ENGINE", "torch" if profile == "torch" else "onnxruntime")
    precision = os.environ.get("FACESWAP_PRECISION", "auto")
    if engine not in ENGINES:
        raise ValueError(f"FACESWAP_ENGINE={engine!r} is not one of {', '.join(ENGINES)}")
    if profile == "torch" and engine != "torch":
        raise ValueError(f"the torch profile runs its networks on engine torch, not FACESWAP_ENGINE={engine}")
    if precision not in prec.SETTINGS:
        hint = " (f32 is written f32)" if precision in ("fp32", "float32") else ""
        raise ValueError(f"FACESWAP_PRECISION={precision!r} is not one of {', '.join(prec.SETTINGS)}{hint}")
    if (precision == "fp16") != (engine == "torch") and precision in ("fp16", "int8"):
        raise ValueError(f"FACESWAP_PRECISION={precision} does not run on FACESWAP_ENGINE={engine} "
                         "(fp16: torch only; int8: onnxruntime or openvino)")
    return engine, precision


def _identity(net: Net, onnx_path: str) -> dict:
    """``stand_in``, ``model_name`` (the file's name) and ``model_sha256`` (of the ONNX file
    served): what the gateway names in every output's C2PA manifest (read from Triton at start)."""
    path = Path(onnx_path)
    return {"stand_in": net.model.stand_in, "model_name": path.stem,
            "model_sha256": _file_sha256(str(path.resolve())) if path.is_file() else ""}


def net_config(net: Net, profile: str, onnx_path: str) -> mc.ModelConfig:
    """Config of one network for the given profile."""
    cfg = mc.ModelConfig(name=NET_MODEL[net.role], max_batch_size=net.max_batch_size)
    _tensors(cfg.input, net.inputs)
    _tensors(cfg.output, net.outputs)
    if profile in PYTHON_PROFILES:
        cfg.backend = "python"
        # two detector instances: every frame of a video job and a live stream is detected, and
        # one instance serialised them behind each other's letterbox and decoding (video job,
        # 2-core Xeon, tiny stand-ins: 13.1 -> 17.1 frames/s; one frame alone is no slower)
        cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=2 if net.role == "detector" else 1)
        engine, precision = cpu_engine(profile)
        _params(cfg, OnnxNetworkParams(engine=engine, precision=precision, onnx_path=onnx_path,
                                       cache_dir=str(cache_dir()), **_identity(net, onnx_path)).to_config())
        if profile == "torch":
            device_tensors(cfg)
    else:
        cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
        if profile == "gpu":
            cfg.platform = "onnxruntime_onnx"
            cfg.default_model_filename = "model.onnx"
            acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            # fp16 for the detector and ArcFace; the swapper stays fp32 (fp16 inswapper users
            # report noisy faces; a parity test must pass before switching it), and so does the
            # content gate (its scores against a threshold have not been checked in fp16).
            acc.parameters["precision_mode"] = "FP32" if net.role in ("swapper", "content") else "FP16"
            acc.parameters["max_workspace_size_bytes"] = str(4 << 30)
            acc.parameters["trt_engine_cache_enable"] = "1"
            acc.parameters["trt_engine_cache_path"] = "/engine_cache"
        else:
            cfg.platform = "tensorrt_plan"
            cfg.default_model_filename = "model.plan"
        _params(cfg, NetworkIdentity(**_identity(net, onnx_path)).to_config())
    if net.max_batch_size > 0:
        cfg.dynamic_batching.max_queue_delay_microseconds = 2000
    queue_policy(cfg, cfg.name)
    return cfg


def stage_config(name: str, stage: Stage, profile: str, pixels: str = "host") -> mc.ModelConfig:
    """Config of one Python stage (``pipeline.contracts``): its tensors, instances and parameters
    (``pixels`` "device": inputs taken where they are, ``device_tensors``)."""
    cfg = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    _tensors(cfg.input, stage.inputs)
    _tensors(cfg.output, stage.outputs)
    count = env_int(STAGE_INSTANCES_ENV, stage.instances if profile == "cpu" else 4)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=count)
    _params(cfg, stage.params.to_config())
    if pixels == "device":
        device_tensors(cfg)
    queue_policy(cfg, name)
    return cfg


def device_tensors(cfg: mc.ModelConfig) -> None:
    """A Python model that takes its inputs where the caller left them (a GPU tensor stays on
    the GPU: Python backend ``FORCE_CPU_ONLY_INPUT_TENSORS`` "no"): the ``torch`` profile's
    networks, and the stages of a repository whose frames stay on the device."""
    cfg.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value = "no"


def pixels_for(profile: str, pixels: str | None = None) -> str:
    """Where a profile's swap entry points keep a frame (``FrameSwapperParams.pixels``): ``pixels``
    if given, else "device" for ``torch`` and "host" for the rest. "device" is offered where
    the networks are on a GPU: ``torch``, and ``gpu`` / ``gpu-trt`` (the Triton image then needs
    PyTorch and torchvision: ``deploy/triton.Dockerfile``'s ``TORCH_PACKAGES``).

    Raises:
        ValueError: ``pixels`` is neither host nor device, or device for the ``cpu`` profile.
    """
    chosen = pixels or ("device" if profile == "torch" else "host")
    if chosen not in ("host", "device"):
        raise ValueError(f"pixels must be host or device, got {chosen!r}")
    if chosen == "device" and profile == "cpu":
        raise ValueError("pixels=device keeps frames on the networks' GPU: use profile torch, gpu or gpu-trt "
                         "(the cpu profile's networks run on onnxruntime/OpenVINO on the host)")
    return chosen


def to_text(cfg: mc.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def _place(src: Path, dst: Path, link: bool) -> None:
    """Symlink (embedded profile, same machine) or copy (GPU profiles, mounted into a container)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link:
        try:
            os.symlink(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def build(out_dir: Path, profile: str = "cpu", models: dict[str, ResolvedModel] | None = None,
          pixels: str | None = None) -> dict:
    """Write the repository for ``profile`` into ``out_dir`` (replaced); return a summary dict.
    ``pixels``: where the swap entry points keep a frame (``pixels_for``; default device for
    ``torch``, host for the rest).

    Raises:
        ValueError: an unknown profile, a ``pixels`` ``pixels_for`` refuses, or a swapper
            without a 512x512 emap.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    pixels = pixels_for(profile, pixels)
    models = models or resolve()
    nets = {role: read_net(role, m) for role, m in models.items()}
    stand_ins = [m.name for m in models.values() if m.stand_in]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    link = profile in PYTHON_PROFILES
    configs: dict[str, mc.ModelConfig] = {}
    for role, net in nets.items():
        name = NET_MODEL[role]
        configs[name] = net_config(net, profile, net.model.path)
        if profile in PYTHON_PROFILES:
            _place(SOURCE / name / "1" / "model.py", out_dir / name / "1" / "model.py", link)
        elif profile == "gpu":
            _place(Path(net.model.path), out_dir / name / "1" / "model.onnx", link)
        else:
            (out_dir / name / "1").mkdir(parents=True, exist_ok=True)
    stages = python_stages(nets, stand_ins, ADMISSION[profile], pixels)
    for name, stage in stages.items():
        configs[name] = stage_config(name, stage, profile, pixels)
        _place(SOURCE / name / "1" / "model.py", out_dir / name / "1" / "model.py", link)
    for name, cfg in configs.items():
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        (out_dir / name / "config.pbtxt").write_text(to_text(cfg))
    emap = extract_emap(models["swapper"].path)
    np.save(out_dir / "face_embed" / stages["face_embed"].params.emap_file, emap)
    summary = {"profile": profile, "pixels": pixels, "models": {r: vars(m) for r, m in models.items()},
               "stand_ins": stand_ins}
    if profile in PYTHON_PROFILES:
        summary["precision"] = prepare_precision(out_dir, models, emap, profile)
    (out_dir / "repository.json").write_text(json.dumps(summary, indent=2))
    log.info("model repository (%s) written to %s", profile, out_dir)
    return summary


def write_probe(out_dir: Path, models: dict[str, ResolvedModel], emap: np.ndarray) -> Path | None:
    """``precision_probe.npz`` (``pipeline.precision.make_probe``) from our test photos
    (``repository.layout.default_images``: the shared portrait and group photo, else insightface's own),
    cut with the fp32 detector and recognizer; None (and a warning) when there is no photo."""
    import cv2
    import onnxruntime as ort

    try:
        photos = [cv2.imread(str(p)) for p in default_images()]
    except ImportError:
        photos = []
    photos = [p for p in photos if p is not None]
    if not photos:
        log.warning("no test photo for the precision probe: the networks will serve fp32")
        return None

    def session(path: str):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    det, rec = session(models["detector"].path), session(models["recognizer"].path)
    det_in, rec_in = det.get_inputs()[0].name, rec.get_inputs()[0].name
    try:
        arrays = prec.make_probe(photos, lambda blob: det.run(None, {det_in: blob}),
                                 lambda blob: rec.run(None, {rec_in: blob})[0], emap)
    except ValueError as exc:
        log.warning("precision probe not made (%s): the networks will serve fp32", exc)
        return None
    path = out_dir / prec.PROBE_FILE
    np.savez_compressed(path, **arrays)
    return path


def prepare_precision(out_dir: Path, models: dict[str, ResolvedModel], emap: np.ndarray,
                      profile: str = "cpu") -> dict:
    """The probe, and the int8 files (cached by hash) where int8 is native and may be chosen."""
    engine, setting = cpu_engine(profile)
    probe = write_probe(out_dir, models, emap)
    out: dict = {"setting": setting, "probe": str(probe) if probe else None, "int8": {}}
    native = prec.native_support(prec.cpu_info()["all_flags"])["int8"]["native"]
    if probe is None or setting not in ("auto", "int8") or not native or engine == "torch":
        return out  # (engine torch runs no int8: bf16/fp16 on a GPU)
    for role, m in models.items():
        if role == "content":  # no int8 for the gate: quantization would move scores near its threshold
            continue
        name = NET_MODEL[role]
        try:
            out["int8"][name] = str(ensure_int8(name, m.path, _file_sha256(str(Path(m.path).resolve())), probe,
                                                cache_dir()))
        except Exception as exc:  # a network that does not quantize simply has no int8 candidate
            log.warning("%s: no int8 model (%s: %s)", name, type(exc).__name__, exc)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--profile", choices=PROFILES, default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="default: .run/model_repository (cpu) or build/<profile>")
    ap.add_argument("--standin-size", choices=["tiny", "full"], default=None,
                    help="stand-in size where a real model is missing (default: FACESWAP_STANDIN_SIZE or tiny)")
    ap.add_argument("--pixels", choices=["host", "device"], default=None,
                    help="where the swap entry points keep a frame: device (decode to encode on the networks' "
                         "GPU, pipeline.tensor_frames; default for torch; for gpu and gpu-trt the Triton image needs "
                         "PyTorch and torchvision) or host (NumPy and OpenCV; default for cpu, gpu, gpu-trt)")


def run(args: argparse.Namespace) -> int:
    """``faceswap-repository build``: write the repository and print its summary (JSON)."""
    out = args.out or (ROOT / ".run" / "model_repository" if args.profile == "cpu" else ROOT / "build" / args.profile)
    summary = build(out, args.profile, resolve(args.standin_size), args.pixels)
    print(json.dumps(summary, indent=2))
    return 0
