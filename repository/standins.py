"""Stand-in ONNX models with the exact interface of insightface's real ones, seeded weights.

The real ``det_10g``, ``w600k_r50`` and ``inswapper_128`` cannot be fetched on every machine.
A stand-in has the same input and output names, shapes and dtypes (SCRFD's nine heads,
ArcFace's 512-d output, inswapper's ``target``/``source`` and its 512x512 ``emap`` as last
initializer) and, in the ``full`` size, about the same compute (FLOPs counted as 2 x MACs of
the convolutions and matrix products). The ``tiny`` size keeps unit tests fast.

Their outputs are not meaningful: the stand-in detector scores every anchor near zero (it
finds no faces), the stand-in ArcFace returns a seeded projection, and the stand-in
inswapper returns the target crop's luminance coloured by a two-colour stripe pattern whose
hues, angle and period depend on the source latent, so on a stand-in run every swapped face
visibly shows where it was cropped, how it was rotated and where it was blended back, and is
plainly *not a face swap*. The content detector's two stand-ins (``content_flag_all``,
``content_flag_none``; tests only) have the content gate's contract (``pipeline.content``:
``images`` [N, 3, 320, 320] -> ``output0`` [N, 22, 2100]) and score every class 1.0 or 0.0 on
every anchor whatever the image: the first refuses everything, which is how the refusal path is
tested without any intimate image. Everything computed with a stand-in is labelled so (see
``repository.resolve``). Generated files carry a version in their name (``VERSIONS``) so a cache
written by an older builder is not reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)

OPSET = 17
#: Real output names of det_10g.onnx (insightface buffalo_l), graph order.
DET10G_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
#: Real output name of w600k_r50.onnx.
ARCFACE_OUTPUT = "683"
#: Published compute of the real models, GFLOP (insightface model zoo figures).
PUBLISHED_GFLOP = {"det_10g": 10.0, "w600k_r50": 6.3, "inswapper_128": 174.7,
                   # YOLOv8n: 8.7 GFLOP at 640 x 640 (Ultralytics), so about a quarter at 320 x 320
                   "content_flag_all": 2.2, "content_flag_none": 2.2}


@dataclass
class _Graph:
    """A tiny ONNX graph builder that also counts FLOPs for a reference input size."""

    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    flops: float = 0.0
    n: int = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, arr: np.ndarray, prefix: str = "w") -> str:
        nm = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs) -> str:
        out = self.name(prefix or op_type.lower())
        # Node names avoid "Sub"/"Mul" prefixes: insightface would take such an ArcFace
        # for an MXNet export and change its input normalisation.
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.n}_{op_type.lower()}", **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, hw: tuple[int, int], act: bool = True,
             bias: float = 0.0) -> tuple[str, tuple[int, int]]:
        std = np.sqrt(2.0 / (cin * k * k))
        w = self.const((self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32))
        b = self.const(np.full((cout,), bias, np.float32))
        y = self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        out_hw = ((hw[0] + 2 * (k // 2) - k) // stride + 1, (hw[1] + 2 * (k // 2) - k) // stride + 1)
        self.flops += 2.0 * cin * cout * k * k * out_hw[0] * out_hw[1]
        if act:
            y = self.op("Relu", [y])
        return y, out_hw

    def model(self, inputs: list, outputs: list, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="faceswap-standin")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _sizes(size: str) -> dict:
    if size == "full":
        return dict(det=(32, 64, 128, 256, 4), arc=((64, 6), (128, 8), (256, 8), (512, 5)), swap=(1024, 8, 256))
    if size == "tiny":
        return dict(det=(8, 8, 8, 8, 1), arc=((8, 1), (8, 1), (8, 1), (16, 1)), swap=(16, 2, 8))
    raise ValueError(f"stand-in size must be 'tiny' or 'full', got {size!r}")


def make_scrfd(size: str = "tiny", seed: int = 10) -> tuple[onnx.ModelProto, float]:
    """SCRFD stand-in: input ``input.1`` [1, 3, ?, ?]; nine unbatched heads named as det_10g's.

    Returns:
        (model, GFLOP at 640x640).
    """
    c0, c1, c2, c3, depth = _sizes(size)["det"]
    g = _Graph(np.random.default_rng(seed))
    hw = (640, 640)
    x, hw = g.conv("input.1", 3, c0, 3, 2, hw)
    x, hw = g.conv(x, c0, c1, 3, 2, hw)
    x, hw = g.conv(x, c1, c1, 3, 2, hw)
    feats = []
    chans = [c1, c2, c3]
    for level, c in enumerate(chans):
        if level > 0:
            x, hw = g.conv(x, chans[level - 1], c, 3, 2, hw)
        for _ in range(depth):
            x, hw = g.conv(x, c, c, 3, 1, hw)
        feats.append((x, c, hw))
    heads: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for f, c, fhw in feats:
        for kind, per_anchor, bias in (("score", 1, -12.0), ("bbox", 4, 1.0), ("kps", 10, 0.0)):
            y, _ = g.conv(f, c, per_anchor * 2, 1, 1, fhw, act=False, bias=bias)
            if kind == "score":
                y = g.op("Sigmoid", [y])
            y = g.op("Transpose", [y], perm=[0, 2, 3, 1])
            heads[kind].append(g.op("Reshape", [y, g.const(np.array([-1, per_anchor], np.int64), "shape")]))
    order = heads["score"] + heads["bbox"] + heads["kps"]
    for src, dst in zip(order, DET10G_OUTPUTS):
        g.nodes.append(helper.make_node("Identity", [src], [dst], name=f"out_{dst}"))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])]
    outputs = [
        helper.make_tensor_value_info(nm, TensorProto.FLOAT, [None, w])
        for nm, w in zip(DET10G_OUTPUTS, [1] * 3 + [4] * 3 + [10] * 3)
    ]
    return g.model(inputs, outputs, "scrfd_standin"), g.flops / 1e9


def make_arcface(size: str = "tiny", seed: int = 50) -> tuple[onnx.ModelProto, float]:
    """ArcFace stand-in: input ``input.1`` [N, 3, 112, 112] -> ``683`` [N, 512]."""
    stages = _sizes(size)["arc"]
    g = _Graph(np.random.default_rng(seed))
    x, hw = g.conv("input.1", 3, stages[0][0], 3, 1, (112, 112))
    cin = stages[0][0]
    for c, depth in stages:
        x, hw = g.conv(x, cin, c, 3, 2, hw)
        for _ in range(depth - 1):
            x, hw = g.conv(x, c, c, 3, 1, hw)
        cin = c
    x = g.op("Flatten", [x], axis=1)
    feat = cin * hw[0] * hw[1]
    w = g.const((g.rng.standard_normal((feat, 512)) / np.sqrt(feat)).astype(np.float32))
    g.flops += 2.0 * feat * 512
    y = g.op("MatMul", [x, w])
    g.nodes.append(helper.make_node("Identity", [y], [ARCFACE_OUTPUT], name="out_emb"))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info(ARCFACE_OUTPUT, TensorProto.FLOAT, ["None", 512])]
    return g.model(inputs, outputs, "arcface_standin"), g.flops / 1e9


def _latent_look(g: _Graph, rng: np.random.Generator) -> str:
    """The stand-in's visible mark: a two-colour stripe pattern chosen by ``source``, mixed
    with the target crop's luminance. Returns the name of the [N, 3, 128, 128] look.

    From five seeded projections of the latent: the hue of the two (complementary) colours, the
    stripes' angle, period (9-19 px on the 128 crop) and phase. The projections are Mul +
    ReduceSum, not MatMul, and everything after them is elementwise: OpenVINO's CPU plugin keeps
    such a graph tail in f32 under a bf16 precision hint, so bf16 stays at f32 parity.
    """
    k = 5
    w = (rng.standard_normal((1, 512, k))).astype(np.float32)
    lat = g.op("Unsqueeze", ["source", g.const(np.array([2], np.int64), "axes")])
    proj = g.op("ReduceSum", [g.op("Mul", [lat, g.const(w, "look_w")], "proj"),
                              g.const(np.array([1], np.int64), "axes")], keepdims=0)  # [N, k]

    def param(i: int) -> str:  # column i as [N, 1, 1, 1]
        col = g.op("Gather", [proj, g.const(np.array(i, np.int64), "idx")], axis=1)
        return g.op("Reshape", [col, g.const(np.array([-1, 1, 1, 1], np.int64), "shape")])

    def scaled(x: str, a: float, b: float = 0.0) -> str:
        y = g.op("Mul", [x, g.const(np.array([a], np.float32), "k")], "scale")
        return g.op("Add", [y, g.const(np.array([b], np.float32), "k")], "shift") if b else y

    # Colour A: a saturated hue 0.5 + 0.5 cos(theta - 2 pi c / 3) for c = R, G, B; B = 1 - A.
    theta = scaled(param(0), 3.0 * np.pi)
    offsets = g.const((-2.0 * np.pi / 3.0 * np.arange(3, dtype=np.float32)).reshape(1, 3, 1, 1), "hue")
    col_a = scaled(g.op("Cos", [g.op("Add", [theta, offsets])]), 0.5, 0.5)  # [N, 3, 1, 1]
    col_b = scaled(col_a, -1.0, 1.0)
    # Stripes along angle phi with period T: s = 0.5 + 0.5 tanh(2.5 cos(f (x cos phi + y sin phi) + p)).
    phi = scaled(param(1), np.pi)
    freq = g.op("Div", [g.const(np.array([2.0 * np.pi], np.float32), "k"),
                        scaled(g.op("Sigmoid", [param(2)]), 10.0, 9.0)])
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    phase = g.op("Add", [
        g.op("Mul", [g.op("Mul", [freq, g.op("Cos", [phi])]), g.const(xx.reshape(1, 1, 128, 128), "grid")]),
        g.op("Mul", [g.op("Mul", [freq, g.op("Sin", [phi])]), g.const(yy.reshape(1, 1, 128, 128), "grid")])])
    phase = g.op("Add", [phase, scaled(param(3), 2.0 * np.pi)])
    stripes = scaled(g.op("Tanh", [scaled(g.op("Cos", [phase]), 2.5)]), 0.5, 0.5)  # [N, 1, 128, 128]
    colour = g.op("Add", [col_b, g.op("Mul", [stripes, g.op("Sub", [col_a, col_b], "d")])])  # [N, 3, 128, 128]
    # Luminance of the target keeps the face readable under the colour.
    lum = g.op("ReduceSum", [g.op("Mul", ["target", g.const(np.array([0.299, 0.587, 0.114], np.float32)
                                                                .reshape(1, 3, 1, 1), "luma")], "lw"),
                             g.const(np.array([1], np.int64), "axes")], keepdims=1)
    return g.op("Mul", [colour, scaled(lum, 1.0, 0.3)], "tint")


def make_inswapper(size: str = "tiny", seed: int = 128) -> tuple[onnx.ModelProto, float]:
    """inswapper stand-in: ``target`` [N, 3, 128, 128] + ``source`` [N, 512] -> ``output``.

    The heavy part mirrors inswapper's: residual 3x3 blocks at 32x32 whose instance-normed
    features are modulated by scale/shift computed from the 512-d latent (AdaIN). ``output``
    (RGB in [0, 1], as inswapper's) = clip(0.4 target + 0.6 look + 0.08 tanh(decoder), 0, 1),
    where ``look`` (``_latent_look``) is the target's luminance coloured by a two-colour stripe
    pattern whose hues, angle and period depend on the latent: a stand-in swap is plainly
    visible (where the crop was taken, how it was rotated and blended back) and two sources
    look different, while the face stays recognisable. The 512x512 ``emap`` is the graph's
    last initializer, as in the real file.
    """
    c, blocks, cdec = _sizes(size)["swap"]
    g = _Graph(np.random.default_rng(seed))
    x, hw = g.conv("target", 3, max(c // 16, 8), 3, 1, (128, 128))
    c_a = max(c // 16, 8)
    x, hw = g.conv(x, c_a, max(c // 8, 8), 3, 2, hw)
    c_b = max(c // 8, 8)
    x, hw = g.conv(x, c_b, cdec, 3, 2, hw)
    x, hw = g.conv(x, cdec, c, 3, 1, hw)
    for _ in range(blocks):
        y, _ = g.conv(x, c, c, 3, 1, hw, act=False)
        y = g.op("InstanceNormalization", [y, g.const(np.ones(c, np.float32)), g.const(np.zeros(c, np.float32))])
        wss = g.const((g.rng.standard_normal((512, 2 * c)) * 0.02).astype(np.float32))
        g.flops += 2.0 * 512 * 2 * c
        style = g.op("MatMul", ["source", wss])
        gamma = g.op("Slice", [style, g.const(np.array([0], np.int64)), g.const(np.array([c], np.int64)),
                                g.const(np.array([1], np.int64))])
        beta = g.op("Slice", [style, g.const(np.array([c], np.int64)), g.const(np.array([2 * c], np.int64)),
                               g.const(np.array([1], np.int64))])
        shape4 = g.const(np.array([-1, c, 1, 1], np.int64), "shape")
        gamma = g.op("Reshape", [g.op("Add", [gamma, g.const(np.ones((1,), np.float32))]), shape4])
        beta = g.op("Reshape", [beta, shape4])
        y = g.op("Add", [g.op("Mul", [y, gamma], "scale"), beta])
        y = g.op("Relu", [y])
        x = g.op("Add", [x, y], "res")
    x, hw = g.conv(x, c, cdec, 3, 1, hw)
    x = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    x, hw = g.conv(x, cdec, c_b, 3, 1, (hw[0] * 2, hw[1] * 2))
    x = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    x, hw = g.conv(x, c_b, c_a, 3, 1, (hw[0] * 2, hw[1] * 2))
    x, hw = g.conv(x, c_a, 3, 3, 1, hw, act=False)
    x = g.op("Tanh", [g.op("Mul", [x, g.const(np.array([0.05], np.float32))], "damp")])
    x = g.op("Mul", [x, g.const(np.array([0.08], np.float32))], "amp")
    # A separate generator: the heavy weights and the emap stay those of version 1.
    look = _latent_look(g, np.random.default_rng(seed + 1))
    base = g.op("Mul", ["target", g.const(np.array([0.4], np.float32), "k")], "keep")
    look = g.op("Mul", [look, g.const(np.array([0.6], np.float32), "k")], "mix")
    x = g.op("Add", [g.op("Add", [base, look], "blend"), x], "resid")
    g.nodes.append(helper.make_node("Clip", [x, g.const(np.array(0.0, np.float32)), g.const(np.array(1.0, np.float32))],
                                    ["output"], name="out_clip"))
    emap = g.rng.standard_normal((512, 512)).astype(np.float32) / np.sqrt(512)
    g.inits.append(numpy_helper.from_array(emap, "emap"))
    inputs = [
        helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", 3, 128, 128]),
        helper.make_tensor_value_info("source", TensorProto.FLOAT, ["N", 512]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 128, 128])]
    return g.model(inputs, outputs, "inswapper_standin"), g.flops / 1e9


def make_content(score: float) -> tuple[onnx.ModelProto, float]:
    """Content detector stand-in (``pipeline.content`` contract): ``images`` float32 [N, 3, 320, 320]
    -> ``output0`` float32 [N, 22, 2100], every anchor a box over the whole input and every class
    scored ``score``, whatever the image (its pixels only set N). Not a detector: a test device.

    Returns:
        (model, GFLOP: 0.0, it computes nothing worth counting).
    """
    from pipeline.content import ANCHORS, INPUT_SIZE, OUTPUT_ROWS

    g = _Graph(np.random.default_rng(0))
    head = np.full((1, OUTPUT_ROWS, ANCHORS), score, np.float32)
    head[0, :4] = np.array([INPUT_SIZE / 2, INPUT_SIZE / 2, INPUT_SIZE, INPUT_SIZE], np.float32)[:, None]
    # [N, 1, 1] zeros from the input (so N follows the batch), plus the fixed head
    zeros = g.op("Mul", [g.op("ReduceMean", ["images"], axes=[1, 2, 3], keepdims=0),
                         g.const(np.array(0.0, np.float32))])
    col = g.op("Unsqueeze", [zeros, g.const(np.array([1, 2], np.int64))])
    g.nodes.append(helper.make_node("Add", [col, g.const(head)], ["output0"], name="out_add"))
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", OUTPUT_ROWS, ANCHORS])]
    return g.model(inputs, outputs, f"content_standin_{score:g}"), 0.0


def make_content_flag_all(size: str = "tiny") -> tuple[onnx.ModelProto, float]:
    """The content stand-in that scores every class 1.0 (the gate refuses every image); ``size`` ignored."""
    return make_content(1.0)


def make_content_flag_none(size: str = "tiny") -> tuple[onnx.ModelProto, float]:
    """The content stand-in that scores every class 0.0 (the gate lets every image through); ``size`` ignored."""
    return make_content(0.0)


BUILDERS = {"det_10g": make_scrfd, "w600k_r50": make_arcface, "inswapper_128": make_inswapper,
            "content_flag_all": make_content_flag_all, "content_flag_none": make_content_flag_none}
#: Version of each builder's output, part of the file name (``standin_path``). Bump it whenever
#: a builder's graph or weights change (tests/unit/test_standins.py holds a fingerprint per version).
#: inswapper_128 v2: a latent-dependent colour/stripe look instead of a near-identity output.
VERSIONS = {"det_10g": 1, "w600k_r50": 1, "inswapper_128": 2, "content_flag_all": 1, "content_flag_none": 1}


def standin_path(out_dir: Path, name: str) -> Path:
    """``<out_dir>/<name>.v<version>.onnx``: the version is in the name, so a file cached by
    an older builder is never taken for the current one."""
    return out_dir / f"{name}.v{VERSIONS[name]}.onnx"


def generate(out_dir: Path, size: str = "tiny", names: tuple[str, ...] = tuple(BUILDERS)) -> dict[str, dict]:
    """Write stand-ins ``standin_path(out_dir, name)`` with a ``.json`` beside each (name, size,
    version, GFLOP), skipping a file already there whose ``.json`` says the same size and
    version. Files of older versions are left alone (a model repository may link to them).

    Returns:
        {name: {"path": str, "gflop": float, "published_gflop": float}}.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in names:
        path = standin_path(out_dir, name)
        meta_path = path.with_suffix(".json")
        meta = None
        if path.exists() and meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError:
                meta = None
        if meta and meta.get("size") == size and meta.get("version") == VERSIONS[name]:
            gflop = meta["gflop"]
        else:
            model, gflop = BUILDERS[name](size)
            # Unique temporary names: concurrent generators (parallel test sessions) must not
            # move each other's half-written files.
            tag = f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            tmp = path.with_name(path.name + tag)
            onnx.save(model, str(tmp))
            tmp.replace(path)
            tmp_meta = meta_path.with_name(meta_path.name + tag)
            tmp_meta.write_text(json.dumps({"name": name, "size": size, "version": VERSIONS[name], "gflop": gflop,
                                            "stand_in": True}))
            tmp_meta.replace(meta_path)
            log.info("stand-in %s v%d (%s, %.1f GFLOP) written to %s", name, VERSIONS[name], size, gflop, path)
        report[name] = {"path": str(path), "gflop": round(gflop, 2), "published_gflop": PUBLISHED_GFLOP[name]}
    return report


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default models/standin/<size>)")


def run(args: argparse.Namespace) -> int:
    """``faceswap-repository standins``: generate (or reuse) the stand-ins and print their FLOPs."""
    from repository.layout import MODELS_DIR

    out = args.out or MODELS_DIR / "standin" / args.size
    for name, info in generate(out, args.size).items():
        ratio = info["gflop"] / info["published_gflop"]
        print(f"{name:14s} {info['gflop']:8.2f} GFLOP (published {info['published_gflop']}, "
              f"ratio {ratio:.2f})  {info['path']}")
    return 0
