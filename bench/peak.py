"""The machine's measured peak in fp32, bf16 and int8, with the engines the product uses.

One short run (about 20 s on 2 cores): a matrix product (2048 x 2048 x 2048) and a stack of
two 3x3 convolutions with 1024 channels at 32x32 (the shape of inswapper's heavy blocks), each
built with ``onnx.helper`` and timed on

- onnxruntime, fp32 (``MatMul``, ``Conv``) and int8 (``MatMulInteger``, ``QLinearConv``: u8 x s8);
- OpenVINO, fp32, bf16 (``INFERENCE_PRECISION_HINT=bf16``, as ``FACESWAP_PRECISION=bf16``) and
  int8 (a QuantizeLinear/DequantizeLinear graph, which OpenVINO runs as u8 x i8 kernels).

Each engine runs with its default thread count (all physical cores, as the product's engines)
and ``PERFORMANCE_HINT=LATENCY`` for OpenVINO. Figures are the median of timed calls after
warm-up: GFLOP/s (2 x multiply-adds; GOP/s for int8). The peak of a precision is its best
probe. A precision this CPU has no native instructions for (bf16: AVX512_BF16 or AMX-BF16;
int8: AVX512-VNNI, AVX-VNNI or AMX-INT8; read from /proc/cpuinfo, never assumed) is reported
as not native, without a figure; so is an OpenVINO probe whose heavy layers the plugin ran in
another precision than asked (read back from its runtime model).

``graph_flops`` counts a network's Conv/ConvTranspose/MatMul/Gemm FLOPs from its ONNX graph
(shapes by ONNX shape inference): ``bench.vs_insightface`` divides it by the swapper's time per face.

    python -m bench.peak [--seconds 1.0] [--json out/bench_peak.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench import summary
from pipeline.precision import NATIVE_FLAGS, REPORTED_FLAGS, cpu_info, native_support  # noqa: F401 (re-exported)

PRECISIONS = ("f32", "bf16", "int8")
#: OpenVINO runtime precisions that count as the precision asked for (heavy layers).
OV_RUNTIME = {"f32": ("f32",), "bf16": ("bf16",), "int8": ("u8", "i8")}
OV_HEAVY = ("Convolution", "FullyConnected", "MatMul")
OPSET = 17


# ---------------------------------------------------------------------------- FLOP counting


def _shape_only(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None, batch: int) -> onnx.ModelProto:
    """A copy without the large initializers (declared as inputs of their shape instead) and with
    every symbolic input dimension fixed, ready for shape inference."""
    g = model.graph
    small, big = [], []
    for init in g.initializer:
        (small if int(np.prod(init.dims, dtype=np.int64)) <= 4096 else big).append(init)
    inputs = []
    init_names = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name in init_names:
            continue
        t = inp.type.tensor_type
        dims = list((input_shapes or {}).get(inp.name) or
                    [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim])
        inputs.append(helper.make_tensor_value_info(inp.name, t.elem_type, dims))
    inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in big]
    graph = helper.make_graph(list(g.node), g.name, inputs, list(g.output), small)
    m = helper.make_model(graph, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "QLinearConv", "QLinearMatMul")


def _node_flops(op: str, attrs: dict, x: list, w: list, y: list) -> float:
    if op in ("Conv", "QLinearConv"):  # W [Cout, Cin/group, kh, kw]; Y [N, Cout, *spatial]
        return 2.0 * float(np.prod(y, dtype=np.float64)) * float(np.prod(w[1:], dtype=np.float64))
    if op == "ConvTranspose":  # X [N, Cin, *spatial]; W [Cin, Cout/group, kh, kw]
        return 2.0 * float(np.prod(x, dtype=np.float64)) * float(np.prod(w[1:], dtype=np.float64))
    if op == "Gemm":
        return 2.0 * float(np.prod(y, dtype=np.float64)) * (x[0] if attrs.get("transA", 0) else x[-1])
    return 2.0 * float(np.prod(y, dtype=np.float64)) * x[-1]  # MatMul family: Y [..., M, N], K = A's last


def _shapes_by_running(model: onnx.ModelProto, names: set[str], input_shapes: dict[str, list[int]]) -> dict:
    """Shapes of the tensors ``names``, read from one onnxruntime run on zero inputs (for graphs
    whose shapes depend on computed values, which shape inference cannot follow)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - present))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np_types = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
                "tensor(int64)": np.int64, "tensor(float16)": np.float16}
    feeds = {i.name: np.zeros(input_shapes[i.name], np_types.get(i.type, np.float32)) for i in session.get_inputs()}
    outs = [o.name for o in session.get_outputs()]
    return {n: list(v.shape) for n, v in zip(outs, session.run(outs, feeds)) if n in names}


def graph_flops(model: onnx.ModelProto, input_shapes: dict[str, list[int]] | None = None, batch: int = 1,
                run_missing: bool = True) -> dict:
    """FLOPs (2 x multiply-adds) of the Conv, ConvTranspose, MatMul and Gemm nodes of ``model``
    (and their integer forms), from the shapes ONNX shape inference gives.

    Args:
        model: the ONNX model (weights may be inline; they are not copied for inference).
        input_shapes: concrete shapes for inputs with symbolic dimensions (e.g. a detector's
            ``{"input.1": [1, 3, 640, 640]}``); otherwise a symbolic dimension becomes ``batch``.
        batch: the value given to symbolic input dimensions.
        run_missing: where shape inference cannot give a node's shapes (sizes computed at run
            time), read them from one onnxruntime run on zero inputs.

    Returns:
        {"gflop": total, "by_op": {op type: GFLOP}, "nodes": number counted, "uncounted": [nodes
        whose shapes stayed unknown]}.
    """
    shape_model = _shape_only(model, input_shapes, batch)
    inferred = onnx.shape_inference.infer_shapes(shape_model)
    shapes: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    def known(name: str) -> bool:
        s = shapes.get(name)
        return bool(s) and None not in s

    heavy = [n for n in inferred.graph.node if n.op_type in HEAVY_OPS]

    def operands(node) -> tuple[str, str, str]:
        w_idx = 3 if node.op_type in ("QLinearConv", "QLinearMatMul") else 1
        return node.input[0], node.input[w_idx], node.output[0]

    missing = {t for n in heavy for t in operands(n) if not known(t)}
    error = ""
    if missing and run_missing:
        feeds = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
                 for i in shape_model.graph.input if i.name in {x.name for x in model.graph.input}}
        try:
            shapes.update(_shapes_by_running(model, missing, feeds))
        except Exception as exc:  # noqa: BLE001 - the count stays partial and says why
            error = f"{type(exc).__name__}: {exc}"
    by_op: dict[str, float] = {}
    uncounted = []
    for node in heavy:
        x, w, y = operands(node)
        if not (known(x) and known(w) and known(y)):
            uncounted.append(node.name or y)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + _node_flops(node.op_type, attrs, shapes[x], shapes[w],
                                                                         shapes[y]) / 1e9
    out = {"gflop": sum(by_op.values()), "by_op": by_op, "nodes": len(heavy) - len(uncounted), "uncounted": uncounted}
    if error:
        out["error"] = error
    return out


# ---------------------------------------------------------------------------- probe graphs


def _model(nodes: list, inputs: list, outputs: list, inits: list, name: str) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceswap-peak-probe")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _vi(name: str, dtype: int, shape: list[int]):
    return helper.make_tensor_value_info(name, dtype, shape)


def gemm_f32(n: int, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:
    """x [n, n] @ W [n, n] (W an initializer), fp32."""
    w = numpy_helper.from_array((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", TensorProto.FLOAT, [n, n])],
               [_vi("y", TensorProto.FLOAT, [n, n])], [w], "gemm_f32")
    return m, {"x": rng.standard_normal((n, n)).astype(np.float32)}


def conv_f32(c: int, hw: int, layers: int, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:
    """``layers`` 3x3 convolutions c -> c at hw x hw, batch 1, fp32."""
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * np.sqrt(1.0 / (9 * c)))
                                             .astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"y{i}"], kernel_shape=[3, 3], pads=[1] * 4))
        x = f"y{i}"
    m = _model(nodes, [_vi("x", TensorProto.FLOAT, [1, c, hw, hw])], [_vi(x, TensorProto.FLOAT, [1, c, hw, hw])],
               inits, "conv_f32")
    return m, {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}


def _quant_consts() -> list:
    """Activation scale ``s`` / zero point ``z`` (u8) and weight scale ``ws`` / zero point ``wz`` (s8)."""
    values = {"s": np.array(0.02, np.float32), "z": np.array(128, np.uint8), "ws": np.array(1e-3, np.float32),
              "wz": np.array(0, np.int8)}
    return [numpy_helper.from_array(v, k) for k, v in values.items()]


def gemm_int8(n: int, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:
    """MatMulInteger: x uint8 [n, n] @ W int8 [n, n] -> int32 (onnxruntime's u8 x s8 kernel)."""
    inits = [i for i in _quant_consts() if i.name in ("z", "wz")]
    inits.append(numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "w"))
    m = _model([helper.make_node("MatMulInteger", ["x", "w", "z", "wz"], ["y"])],
               [_vi("x", TensorProto.UINT8, [n, n])], [_vi("y", TensorProto.INT32, [n, n])], inits, "gemm_int8")
    return m, {"x": rng.integers(0, 256, (n, n)).astype(np.uint8)}


def conv_int8(c: int, hw: int, layers: int, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:
    """QLinearConv chain: u8 activations x s8 weights, requantized to u8 after each layer."""
    inits = _quant_consts()
    nodes, x = [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(rng.integers(-127, 128, (c, c, 3, 3)).astype(np.int8), f"w{i}"))
        nodes.append(helper.make_node("QLinearConv", [x, "s", "z", f"w{i}", "ws", "wz", "s", "z"], [f"y{i}"],
                                      kernel_shape=[3, 3], pads=[1] * 4))
        x = f"y{i}"
    m = _model(nodes, [_vi("x", TensorProto.UINT8, [1, c, hw, hw])], [_vi(x, TensorProto.UINT8, [1, c, hw, hw])],
               inits, "conv_int8")
    return m, {"x": rng.integers(0, 256, (1, c, hw, hw)).astype(np.uint8)}


def _qdq(x: str, tag: str, nodes: list) -> str:
    nodes.append(helper.make_node("QuantizeLinear", [x, "s", "z"], [f"q{tag}"]))
    nodes.append(helper.make_node("DequantizeLinear", [f"q{tag}", "s", "z"], [f"dq{tag}"]))
    return f"dq{tag}"


def qdq_int8(kind: str, n: int, hw: int, layers: int, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict]:
    """The fp32 ``gemm`` (n x n x n) or ``conv`` (n channels at hw x hw) probe with QuantizeLinear /
    DequantizeLinear around every activation and int8 weights: what OpenVINO runs as int8."""
    inits = _quant_consts()
    nodes, x = [], "x"
    count = 1 if kind == "gemm" else layers
    for i in range(count):
        shape = (n, n) if kind == "gemm" else (n, n, 3, 3)
        inits.append(numpy_helper.from_array(rng.integers(-127, 128, shape).astype(np.int8), f"wq{i}"))
        nodes.append(helper.make_node("DequantizeLinear", [f"wq{i}", "ws", "wz"], [f"w{i}"]))
        xi = _qdq(x, str(i), nodes)
        if kind == "gemm":
            nodes.append(helper.make_node("MatMul", [xi, f"w{i}"], [f"y{i}"]))
        else:
            nodes.append(helper.make_node("Conv", [xi, f"w{i}"], [f"y{i}"], kernel_shape=[3, 3], pads=[1] * 4))
        x = f"y{i}"
    x = _qdq(x, "out", nodes)
    shape = [n, n] if kind == "gemm" else [1, n, hw, hw]
    m = _model(nodes, [_vi("x", TensorProto.FLOAT, shape)], [_vi(x, TensorProto.FLOAT, shape)], inits, f"{kind}_qdq")
    return m, {"x": rng.standard_normal(shape).astype(np.float32)}


# ---------------------------------------------------------------------------- engines and timing


@dataclass
class Probe:
    """One timed graph on one engine."""

    name: str
    kind: str  # "gemm" or "conv"
    precision: str
    engine: str
    shape: str
    gflop: float  # per call
    median_ms: float | None = None
    best_ms: float | None = None
    calls: int = 0
    gflops: float | None = None  # per second, from the median
    runtime_precision: str | None = None  # what OpenVINO's heavy layers ran in
    native: bool = True
    note: str = ""


def time_calls(fn: Callable[[], object], seconds: float, min_calls: int = 3, warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn`` over at least ``min_calls`` calls and ``seconds`` s, after warm-up."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def ort_runner(model: onnx.ModelProto, feeds: dict) -> Callable[[], object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 0  # onnxruntime's default: one thread per physical core (as the product)
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def ov_runner(model: onnx.ModelProto, feeds: dict, hint: str) -> tuple[Callable[[], object], str]:
    """An OpenVINO call and the runtime precision(s) of its heavy layers (e.g. "bf16", "u8")."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
    seen = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" in rt and rt["layerType"].astype(str) in OV_HEAVY:
            seen.add(rt["runtimePrecision"].astype(str))
    request = compiled.create_infer_request()
    return (lambda: request.infer(feeds)), ",".join(sorted(seen)) or "unknown"


def probe_specs(scale: str = "full") -> dict:
    """Problem sizes: ``full`` (the real probe) or ``test`` (tiny, for unit tests)."""
    if scale == "full":
        return {"n": 2048, "c": 1024, "hw": 32, "layers": 2}
    if scale == "test":
        return {"n": 64, "c": 16, "hw": 8, "layers": 2}
    raise ValueError(f"scale must be 'full' or 'test', got {scale!r}")


def run_probes(seconds: float = 1.0, scale: str = "full", precisions: tuple[str, ...] = PRECISIONS,
               flags: list[str] | None = None, force: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Time every probe; returns {"cpu", "support", "probes": [...], "peak": {precision: {...}}}.

    Args:
        seconds: timed seconds per probe (after two warm-up calls; at least 3 calls).
        scale: see ``probe_specs``.
        precisions: the precisions to measure.
        flags: CPU flags to decide native support (default: this machine's).
        force: measure a precision even where it is not native (its figures are then marked
            ``native: false`` and never count as a peak).
        log: called with one line per probe as it finishes.
    """
    cpu = cpu_info()
    support = native_support(flags if flags is not None else cpu["all_flags"])
    spec = probe_specs(scale)
    n, c, hw, layers = spec["n"], spec["c"], spec["hw"], spec["layers"]
    gemm_gflop = 2.0 * n * n * n / 1e9
    conv_gflop = 2.0 * c * c * 9 * hw * hw * layers / 1e9
    gemm_shape, conv_shape = f"{n}x{n}x{n}", f"{layers}x conv3x3 {c}->{c} @{hw}x{hw}"
    rng = np.random.default_rng(0)
    try:
        import openvino  # noqa: F401

        have_ov = True
    except ImportError:
        have_ov = False
    plans: list[tuple[Probe, Callable[[], tuple[Callable[[], object], str | None]]]] = []

    def ort_plan(build):  # graphs are built when their probe runs: one probe's weights in memory at a time
        return lambda: (ort_runner(*build()), None)

    def ov_plan(build, hint):
        return lambda: ov_runner(*build(), hint)

    if "f32" in precisions:
        plans.append((Probe("ort_gemm_f32", "gemm", "f32", "onnxruntime", gemm_shape, gemm_gflop),
                      ort_plan(lambda: gemm_f32(n, rng))))
        plans.append((Probe("ort_conv_f32", "conv", "f32", "onnxruntime", conv_shape, conv_gflop),
                      ort_plan(lambda: conv_f32(c, hw, layers, rng))))
        if have_ov:
            plans.append((Probe("ov_gemm_f32", "gemm", "f32", "openvino", gemm_shape, gemm_gflop),
                          ov_plan(lambda: gemm_f32(n, rng), "f32")))
            plans.append((Probe("ov_conv_f32", "conv", "f32", "openvino", conv_shape, conv_gflop),
                          ov_plan(lambda: conv_f32(c, hw, layers, rng), "f32")))
    if "bf16" in precisions and have_ov:
        plans.append((Probe("ov_gemm_bf16", "gemm", "bf16", "openvino", gemm_shape, gemm_gflop),
                      ov_plan(lambda: gemm_f32(n, rng), "bf16")))
        plans.append((Probe("ov_conv_bf16", "conv", "bf16", "openvino", conv_shape, conv_gflop),
                      ov_plan(lambda: conv_f32(c, hw, layers, rng), "bf16")))
    if "int8" in precisions:
        plans.append((Probe("ort_gemm_int8", "gemm", "int8", "onnxruntime", gemm_shape, gemm_gflop),
                      ort_plan(lambda: gemm_int8(n, rng))))
        plans.append((Probe("ort_conv_int8", "conv", "int8", "onnxruntime", conv_shape, conv_gflop),
                      ort_plan(lambda: conv_int8(c, hw, layers, rng))))
        if have_ov:
            plans.append((Probe("ov_gemm_int8", "gemm", "int8", "openvino", gemm_shape, gemm_gflop),
                          ov_plan(lambda: qdq_int8("gemm", n, hw, layers, rng), "f32")))
            plans.append((Probe("ov_conv_int8", "conv", "int8", "openvino", conv_shape, conv_gflop),
                          ov_plan(lambda: qdq_int8("conv", c, hw, layers, rng), "f32")))

    probes: list[Probe] = []
    for probe, plan in plans:
        sup = support[probe.precision]
        if not sup["native"] and not force:
            probe.native = False
            probe.note = f"not measured: {sup['reason']}"
        else:
            fn, runtime = plan()
            probe.runtime_precision = runtime
            if runtime is not None and not any(p in runtime.split(",") for p in OV_RUNTIME[probe.precision]):
                probe.native = False
                probe.note = f"OpenVINO ran the heavy layers in {runtime}, not {probe.precision}: no figure"
            else:
                times = time_calls(fn, seconds)
                probe.calls = len(times)
                probe.median_ms = 1000 * statistics.median(times)
                probe.best_ms = 1000 * min(times)
                probe.gflops = probe.gflop / (probe.median_ms / 1000)
                if not sup["native"]:
                    probe.native = False
                    probe.note = f"forced, not native ({sup['reason']}): not a peak"
            del fn
        probes.append(probe)
        if log:
            log(format_probe(probe))
    peak = {}
    for prec in precisions:
        best = max((p for p in probes if p.precision == prec and p.native and p.gflops), key=lambda p: p.gflops,
                   default=None)
        if best is None:
            why = support[prec]["reason"] or "no probe of this precision ran natively (see probes)"
            if prec == "bf16" and not have_ov:
                why = "openvino is not installed"
            peak[prec] = {"gflops": None, "native": support[prec]["native"], "reason": why}
        else:
            peak[prec] = {"gflops": best.gflops, "probe": best.name, "engine": best.engine, "native": True,
                          "isa": support[prec]["isa"]}
    engines = {"onnxruntime": _version("onnxruntime"), "openvino": _version("openvino")}
    return {"cpu": {k: v for k, v in cpu.items() if k != "all_flags"}, "engines": engines, "support": support,
            "seconds_per_probe": seconds, "scale": scale, "probes": [p.__dict__ for p in probes], "peak": peak}


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return getattr(mod, "__version__", None) or getattr(mod, "get_version", lambda: None)()


def format_probe(p: Probe) -> str:
    unit = "GOP/s " if p.precision == "int8" else "GFLOP/s"
    head = f"{p.name:14s} {p.engine:11s} {p.precision:4s} {p.shape:30s}"
    if p.gflops is None:
        return f"{head} {'-':>9s}          {p.note}"
    rt = f" (ran {p.runtime_precision})" if p.runtime_precision else ""
    note = f"  {p.note}" if p.note else ""
    return f"{head} {p.gflops:9.1f} {unit} median {p.median_ms:7.1f} ms x{p.calls}{rt}{note}"


def format_peaks(result: dict) -> list[str]:
    lines = []
    for prec, pk in result["peak"].items():
        unit = "GOP/s" if prec == "int8" else "GFLOP/s"
        if pk["gflops"] is None:
            lines.append(f"peak {prec:4s}: not native here ({pk['reason']})")
        else:
            lines.append(f"peak {prec:4s}: {pk['gflops']:8.1f} {unit} ({pk['probe']}, {'/'.join(pk['isa'])})")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description="Measured fp32/bf16/int8 peak of this CPU with the product's engines.")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per probe")
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--force", action="store_true", help="also time precisions this CPU has no native support for")
    ap.add_argument("--json", type=Path, default=summary.out_path("peak"))
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"CPU {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags']) or '(none of interest)'}")
    result = run_probes(args.seconds, precisions=tuple(args.precisions), force=args.force,
                        log=lambda line: print(line, flush=True))
    for line in format_peaks(result):
        print(line)
    summary.write("peak", result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
