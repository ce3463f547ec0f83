"""Broken networks for the model-failure tests (a real Triton serves them)."""

from __future__ import annotations

import onnx
from onnx import helper


def nan_swapper(src: str, dst: str) -> None:
    """Write to ``dst`` the swapper ``src`` with its output multiplied by a NaN constant (the emap
    initializer stays last): every swap it computes is NaN."""
    m = onnx.load(src)
    out = m.graph.output[0].name
    for node in m.graph.node:
        node.output[:] = [f"{o}_pre" if o == out else o for o in node.output]
    nan = helper.make_tensor("nan_value", onnx.TensorProto.FLOAT, [], [float("nan")])
    m.graph.node.extend([helper.make_node("Constant", [], ["nan_const"], value=nan),
                         helper.make_node("Mul", [f"{out}_pre", "nan_const"], [out])])
    onnx.save(m, dst)
