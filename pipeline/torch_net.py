"""ONNX graphs run with PyTorch ops, node by node: the networks of the GPU profile where the
server has no TensorRT (issue 20), and the GPU check (``bench.gpu_check``).

A small converter for the ops the three networks use (SCRFD det_2.5g/det_10g, ArcFace, the
inswapper stand-ins), no onnx2torch needed. Heavy ops (Conv, MatMul, Gemm) and their weights
run in the chosen dtype, channels-last; normalisation in fp32; the rest in their inputs' type.
Shapes computed inside the graph (``Shape`` -> ``Gather`` -> ``Concat``, as SCRFD's FPN sizes
its upsampling) are kept as Python integers, so a call has no host read of a device value
and can be captured in a CUDA graph.

Parity with onnxruntime in fp32 is tested on the CPU (tests/unit/test_torch_ops.py: the real
SCRFD's boxes within a pixel).
"""

from __future__ import annotations

import operator

import numpy as np

HEAVY = ("Conv", "MatMul", "Gemm")
FP32_OPS = ("InstanceNormalization",)
SUPPORTED = ("Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Sigmoid", "Cos", "Sin", "Conv", "MatMul", "Gemm",
             "InstanceNormalization", "Reshape", "Slice", "Unsqueeze", "Squeeze", "ReduceSum", "Gather", "Resize",
             "Clip", "Identity", "Flatten", "Transpose", "Concat", "MaxPool", "AveragePool", "Shape",
             "Cast", "Range", "ConstantOfShape", "Expand", "Softmax", "Split")


#: Add, Sub, Mul, Div on shape values (Python numbers; integer Div is handled apart).
_ARITHMETIC = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv}
#: ONNX TensorProto data types that are floating point (FLOAT, FLOAT16, DOUBLE, BFLOAT16).
_FLOAT_TYPES = (1, 10, 11, 16)


class OnnxModule:
    """An ONNX graph run with torch ops, node by node (capturable in a CUDA graph).

    Args:
        model: the ONNX model (opset 13+ forms of Slice/Unsqueeze/ReduceSum/Resize inputs).
        dtype: torch dtype of the heavy ops (Conv, MatMul, Gemm) and their weights.
        device: torch device.
        fp32_ops: op types computed in fp32 whatever ``dtype`` (normalisation).
        keep: names of intermediate tensors to return besides the graph outputs.

    Raises:
        NotImplementedError: the graph has ops this converter does not know (all listed).
    """

    def __init__(self, model, dtype, device, fp32_ops: tuple[str, ...] = FP32_OPS, keep: tuple[str, ...] = ()):
        import torch
        from onnx import helper, numpy_helper

        self.torch, self.dtype, self.device, self.fp32_ops = torch, dtype, device, fp32_ops
        self._numpy_helper = numpy_helper
        g = model.graph
        unknown = sorted({n.op_type for n in g.node} - set(SUPPORTED))
        if unknown:
            raise NotImplementedError(f"ops not supported by the converter: {unknown}")
        self.inputs = [i.name for i in g.input if i.name not in {x.name for x in g.initializer}]
        self.outputs = [o.name for o in g.output] + list(keep)
        heavy_weights = {n.input[i] for n in g.node if n.op_type in HEAVY for i in range(1, len(n.input))}
        self.consts: dict[str, object] = {}
        self.np_consts: dict[str, np.ndarray] = {}
        # Small constants as Python values, read in __call__ (torch.compile cannot trace numpy reads).
        self.small: dict[str, tuple[list, int]] = {}
        for init in g.initializer:
            arr = numpy_helper.to_array(init)
            self.np_consts[init.name] = arr
            if arr.size <= 64:
                self.small[init.name] = (arr.reshape(-1).tolist(), arr.ndim)
            t = torch.from_numpy(np.array(arr, copy=True)).to(device)
            if t.is_floating_point():
                t = t.to(dtype if init.name in heavy_weights else torch.float32)
                if t.dim() == 4:
                    t = t.contiguous(memory_format=torch.channels_last)
            self.consts[init.name] = t
        self._cast_cache: dict[tuple[str, object], object] = {}
        self.nodes = [(n.op_type, list(n.input), list(n.output), {a.name: helper.get_attribute_value(a)
                                                                   for a in n.attribute}) for n in g.node]
        last_use: dict[str, int] = {}
        for i, (_, ins, _, _) in enumerate(self.nodes):
            for name in ins:
                last_use[name] = i
        self.free_after = [[n for n in ins if last_use.get(n) == i and n not in self.consts and n not in self.outputs]
                           for i, (_, ins, _, _) in enumerate(self.nodes)]

    def _dtype(self, onnx_type: int):
        t = self.torch
        return {1: t.float32, 10: t.float16, 11: t.float64, 16: t.bfloat16, 6: t.int32, 7: t.int64, 9: t.bool,
                2: t.uint8, 3: t.int8}[onnx_type]

    def _number(self, name: str, value):
        """A shape value (a Python number) as it is; a one-element constant as its number; any
        other tensor as it is."""
        if isinstance(value, (int, float)) or len(self.small.get(name, ((), 0))[0]) != 1:
            return value
        return self.small[name][0][0]

    def _int_list(self, name: str) -> list[int]:
        return [int(v) for v in self.small[name][0]]

    def _const_like(self, name: str, other):
        """An initializer in the floating type of the tensor it meets (cached per type)."""
        t = self.consts[name]
        if not (t.is_floating_point() and other.is_floating_point()) or t.dtype == other.dtype:
            return t
        key = (name, other.dtype)
        if key not in self._cast_cache:
            self._cast_cache[key] = t.to(other.dtype)
        return self._cast_cache[key]

    def __call__(self, *args):
        torch = self.torch
        env: dict[str, object] = dict(zip(self.inputs, args))
        F = torch.nn.functional
        for (op, ins, outs, at), free in zip(self.nodes, self.free_after):
            v = [env[n] if n in env else self.consts.get(n) for n in ins]  # None for an empty optional input

            if op == "Shape":  # a shape value: Python integers, not a tensor
                y = list(v[0].shape)
            elif op == "Gather" and isinstance(v[0], list):
                y = v[0][self._int_list(ins[1])[0]]
            elif op == "Slice" and isinstance(v[0], list):  # of a shape value: one axis
                st = self._int_list(ins[4])[0] if len(ins) > 4 and ins[4] else 1
                y = v[0][self._int_list(ins[1])[0]:self._int_list(ins[2])[0]:st]
            elif op in ("Add", "Sub", "Mul", "Div") and any(isinstance(x, (int, float)) for x in v):
                a, b = (self._number(n, x) for n, x in zip(ins, v))
                if op == "Div" and isinstance(a, int) and isinstance(b, int):
                    y = a // b
                else:
                    y = _ARITHMETIC[op](a, b)
            elif op == "Cast" and isinstance(v[0], (int, float, list)):  # a shape value stays a number
                conv = float if at["to"] in _FLOAT_TYPES else int
                y = [conv(i) for i in v[0]] if isinstance(v[0], list) else conv(v[0])
            elif op == "Cast":
                y = v[0].to(self._dtype(at["to"]))
            elif op == "Range":  # of shape values: anchors made inside the graph (YOLO heads)
                start, limit, delta = (self._number(n, x) for n, x in zip(ins, v))
                kind = torch.float32 if any(isinstance(x, float) for x in (start, limit, delta)) else torch.int64
                y = torch.arange(start, limit, delta, dtype=kind, device=self.device)
            elif op == "ConstantOfShape":
                shape = v[0] if isinstance(v[0], list) else self._int_list(ins[0])
                value = at.get("value")
                fill = self._numpy_helper.to_array(value).reshape(-1)[0] if value is not None else np.float32(0)
                y = torch.full(shape, fill.item(), dtype=torch.from_numpy(np.array(fill)).dtype, device=self.device)
            elif op == "Expand":
                shape = v[1] if isinstance(v[1], list) else self._int_list(ins[1])
                y = v[0].expand(torch.broadcast_shapes(tuple(v[0].shape), tuple(shape)))
            elif op == "Softmax":
                y = torch.softmax(v[0], dim=at.get("axis", -1))
            elif op == "Split":
                axis = at.get("axis", 0)
                sizes = (self._int_list(ins[1]) if len(ins) > 1 and ins[1] else at.get("split")) or \
                    [v[0].shape[axis] // len(outs)] * len(outs)
                y = tuple(torch.split(v[0], list(sizes), dim=axis))
            elif op == "Unsqueeze" and isinstance(v[0], int):
                y = [v[0]]
            elif op == "Concat" and any(isinstance(x, list) for x in v):
                y = [i for n, x in zip(ins, v) for i in (x if isinstance(x, list) else self._int_list(n))]
            elif op in ("Add", "Sub", "Mul", "Div"):
                a, b = v[0], v[1]
                if ins[0] in self.consts and ins[1] not in self.consts:
                    a = self._const_like(ins[0], b)
                elif ins[1] in self.consts and ins[0] not in self.consts:
                    b = self._const_like(ins[1], a)
                y = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op](a, b)
            elif op in ("Relu", "Tanh", "Sigmoid", "Cos", "Sin"):
                y = {"Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Cos": torch.cos,
                     "Sin": torch.sin}[op](v[0])
            elif op == "Conv":
                if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise NotImplementedError("Conv auto_pad")
                x = v[0].to(self.dtype).contiguous(memory_format=torch.channels_last)
                pads = at.get("pads", [0, 0, 0, 0])
                if pads[:2] != pads[2:]:
                    x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
                    pads = [0, 0, 0, 0]
                y = F.conv2d(x, v[1], v[2] if len(ins) > 2 and ins[2] else None, at.get("strides", [1, 1]),
                             pads[:2], at.get("dilations", [1, 1]), at.get("group", 1))
            elif op == "MatMul":
                y = torch.matmul(v[0].to(self.dtype), v[1].to(self.dtype))
            elif op == "Gemm":
                a, b = v[0].to(self.dtype), v[1].to(self.dtype)
                a = a.t() if at.get("transA", 0) else a
                b = b.t() if at.get("transB", 0) else b
                y = at.get("alpha", 1.0) * (a @ b)
                if len(ins) > 2 and ins[2]:
                    y = y + at.get("beta", 1.0) * v[2].to(y.dtype)
            elif op == "InstanceNormalization":
                x = v[0]
                work = x.float() if "InstanceNormalization" in self.fp32_ops else x
                var, mean = torch.var_mean(work, dim=tuple(range(2, work.dim())), keepdim=True, correction=0)
                shape = (1, -1) + (1,) * (work.dim() - 2)
                scale, bias = v[1].to(work.dtype).reshape(shape), v[2].to(work.dtype).reshape(shape)
                y = ((work - mean) * torch.rsqrt(var + at.get("epsilon", 1e-5)) * scale + bias).to(x.dtype)
            elif op == "Reshape":
                x, shape = v[0], (v[1] if isinstance(v[1], list) else self._int_list(ins[1]))
                if not at.get("allowzero", 0):
                    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
                y = x.reshape(shape)
            elif op == "Slice":
                x = v[0]
                starts, ends = self._int_list(ins[1]), self._int_list(ins[2])
                axes = self._int_list(ins[3]) if len(ins) > 3 and ins[3] else list(range(len(starts)))
                steps = self._int_list(ins[4]) if len(ins) > 4 and ins[4] else [1] * len(starts)
                index = [slice(None)] * x.dim()
                for s, e, a, st in zip(starts, ends, axes, steps):
                    n = x.shape[a]
                    s, e = max(min(s, n), -n), max(min(e, n), -n - 1)
                    index[a] = slice(s, e, st)
                y = x[tuple(index)]
            elif op in ("Unsqueeze", "Squeeze"):
                x = v[0]
                axes = self._int_list(ins[1]) if len(ins) > 1 and ins[1] else list(at.get("axes", []))
                if op == "Unsqueeze":
                    rank = x.dim() + len(axes)
                    for a in sorted(a % rank for a in axes):
                        x = x.unsqueeze(a)
                else:
                    axes = axes or [i for i, d in enumerate(x.shape) if d == 1]
                    for a in sorted((a % x.dim() for a in axes), reverse=True):
                        x = x.squeeze(a)
                y = x
            elif op == "ReduceSum":
                x = v[0]
                axes = self._int_list(ins[1]) if len(ins) > 1 and ins[1] else list(at.get("axes", []))
                if not axes:
                    axes = [] if at.get("noop_with_empty_axes", 0) else list(range(x.dim()))
                y = x.sum(dim=tuple(axes), keepdim=bool(at.get("keepdims", 1))) if axes else x
            elif op in ("MaxPool", "AveragePool"):
                k = at["kernel_shape"]
                pads = at.get("pads", [0] * 2 * len(k))
                if pads[:len(k)] != pads[len(k):] or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                    raise NotImplementedError(f"{op} with uneven or automatic padding")
                kw = dict(kernel_size=k, stride=at.get("strides", [1] * len(k)), padding=pads[:len(k)],
                          ceil_mode=bool(at.get("ceil_mode", 0)))
                if op == "MaxPool":
                    y = F.max_pool2d(v[0], dilation=at.get("dilations", [1] * len(k)), **kw)
                else:
                    y = F.avg_pool2d(v[0], count_include_pad=bool(at.get("count_include_pad", 0)), **kw)
            elif op == "Gather":
                x, axis = v[0], at.get("axis", 0)
                idx = v[1]
                if ins[1] in self.small and self.small[ins[1]][1] == 0:
                    y = x.select(axis, int(self.small[ins[1]][0][0]))
                else:
                    y = x.index_select(axis, idx.long().reshape(-1))
                    y = y.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis % x.dim() + 1:]))
            elif op == "Resize":
                mode = at.get("mode", b"nearest")
                mode = mode.decode() if isinstance(mode, bytes) else mode
                ctm = at.get("coordinate_transformation_mode", b"half_pixel")
                ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
                sizes = v[3] if len(ins) > 3 and ins[3] else None
                if sizes is not None:  # output sizes: a shape value, or a constant
                    sizes = sizes if isinstance(sizes, list) else self._int_list(ins[3])
                    if mode != "nearest" or ctm != "asymmetric" or at.get("nearest_mode", b"floor") not in (
                            b"floor", "floor"):
                        raise NotImplementedError(f"Resize to sizes: mode {mode} / {ctm}")
                    env[outs[0]] = F.interpolate(v[0], size=tuple(sizes[2:]), mode="nearest")  # floor(x * in / out)
                    for name in free:
                        env.pop(name, None)
                    continue
                scales = list(self.small[ins[2]][0]) if len(ins) > 2 and ins[2] else None
                if scales is None or scales[:2] != [1.0, 1.0] or any(s != int(s) for s in scales):
                    raise NotImplementedError("Resize: only integer spatial scales given as a constant")
                if mode == "nearest":  # integer upscaling: every ONNX nearest mode picks floor(x / s)
                    y = F.interpolate(v[0], scale_factor=tuple(scales[2:]), mode="nearest")
                elif mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel"):
                    y = F.interpolate(v[0], scale_factor=tuple(scales[2:]), mode="bilinear", align_corners=False)
                else:
                    raise NotImplementedError(f"Resize mode {mode} / {ctm}")
            elif op == "Clip":  # bounds from constants (a host read of a device value would break capture)
                lo, hi = (float(self.small[ins[i]][0][0]) if len(ins) > i and ins[i] else None
                          for i in (1, 2))
                y = torch.clamp(v[0], lo, hi)
            elif op == "Identity":
                y = v[0]
            elif op == "Flatten":
                x, axis = v[0], at.get("axis", 1)
                y = x.reshape(int(np.prod(x.shape[:axis])), -1)
            elif op == "Transpose":
                x = v[0]
                y = x.permute(*(at.get("perm") or list(range(x.dim()))[::-1]))
            elif op == "Concat":
                parts = [v[i] for i in range(len(ins))]
                y = torch.cat([p.to(parts[0].dtype) for p in parts], dim=at.get("axis", 0))
            else:  # pragma: no cover - rejected in __init__
                raise NotImplementedError(op)
            if isinstance(y, tuple):
                env.update(zip(outs, y))
            else:
                env[outs[0]] = y
            for name in free:
                env.pop(name, None)
        return [env[o] for o in self.outputs]


class CudaGraphed:
    """A module (``OnnxModule``) replayed from CUDA graphs: one graph per input shape, the batch
    (first) dimension padded up to a power of two with copies of the last row, so a network
    with dynamic batching keeps a handful of graphs (1, 2, 4, ... up to its batch limit). A call
    copies its inputs into the graph's static buffers, replays, and returns copies of the
    outputs' first rows (the next replay overwrites the buffers). Graphs share one memory pool
    (their replays never overlap: a Triton instance runs one call at a time).

    A shape whose capture fails (an op that reads a device value on the host cannot be
    captured) runs eagerly from then on, and ``on_fallback(message)`` is told once.

    Capture needs CUDA; ``_record`` is the one place that touches it.
    """

    def __init__(self, module, on_fallback=None) -> None:
        self.module, self.torch = module, module.torch
        self.inputs, self.outputs = module.inputs, module.outputs
        self.on_fallback = on_fallback
        self._graphs: dict = {}
        self._eager: set = set()
        self._pool = None

    def __call__(self, *xs):
        n = int(xs[0].shape[0])
        if n == 0 or any(int(x.shape[0]) != n for x in xs):
            return self.module(*xs)
        b = 1 << (n - 1).bit_length()
        key = tuple((b, *x.shape[1:], x.dtype, str(x.device)) for x in xs)
        if key in self._eager:
            return self.module(*xs)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, xs, b)
            if entry is None:
                return self.module(*xs)
        replay, static_in, static_out = entry
        self._fill(static_in, xs, n, b)
        replay()
        return [o[:n].clone() for o in static_out]

    def warm(self, item_shapes: list[tuple[int, ...]], max_batch: int, device) -> list[int]:
        """Capture now the graph of every batch a call of up to ``max_batch`` rows pads to (1, 2,
        4, ... up to the power of two at or above it), for float32 inputs of per-row shapes
        ``item_shapes`` on ``device``: a served network does this at load, so the first request
        of each batch size does not wait for a capture (a few hundred ms each). Returns the
        batch sizes that replay from a graph (a failed capture is told as in ``__call__``)."""
        torch, sizes, b = self.torch, [], 1
        while True:
            sizes.append(b)
            if b >= max_batch:
                break
            b *= 2
        with torch.no_grad():  # not inference_mode: its buffers could not be filled by a later call outside it
            for b in sizes:
                self(*[torch.full((b, *s), 0.5, dtype=torch.float32, device=device) for s in item_shapes])
        return [b for b in sizes if any(key[0][0] == b for key in self._graphs)]

    @staticmethod
    def _fill(static_in, xs, n: int, b: int) -> None:
        for s, x in zip(static_in, xs):
            s[:n].copy_(x)
            if b > n:
                s[n:].copy_(x[-1:].expand(b - n, *x.shape[1:]))

    def _capture(self, key, xs, b: int):
        torch = self.torch
        try:
            static_in = [torch.empty((b, *x.shape[1:]), dtype=x.dtype, device=x.device) for x in xs]
            self._fill(static_in, xs, int(xs[0].shape[0]), b)
            replay, static_out = self._record(static_in)
            entry = (replay, static_in, static_out)
        except Exception as exc:  # noqa: BLE001 - this shape runs eagerly; the caller is told
            self._eager.add(key)
            if self.on_fallback is not None:
                self.on_fallback(f"CUDA graph capture failed for inputs {[tuple(x.shape) for x in xs]} "
                                 f"(padded to {b}): {type(exc).__name__}: {exc}; that shape runs eagerly")
            return None
        self._graphs[key] = entry
        return entry

    def _record(self, static_in):
        """(replay, static outputs) of one captured call on ``static_in`` (warm-up on a side
        stream first: cuDNN's autotuning must not be captured)."""
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.module(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.module(*static_in)
        return graph.replay, static_out
