"""What the build reads from an ONNX graph: its tensors, in one place (``graph_io``).

The networks' tensor names are never assumed: the real SCRFD exports name their outputs with
numbers that differ between det_10g and det_2.5g, and ArcFace's output is ``683`` in one
export and ``fc1`` in another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GraphTensor:
    """A graph input or output: name, ONNX element type (``onnx.TensorProto``: 1 float, 2
    uint8, 6 int32, 7 int64, 10 float16) and dims (-1 where symbolic)."""

    name: str
    elem_type: int
    dims: tuple[int, ...]


def graph_io(path: str) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """(inputs, outputs) of the ONNX file at ``path``, in graph order; inputs that are
    initializers (weights) left out. Reads the graph only (no external weights)."""
    import onnx

    g = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in g.initializer}

    def tensor(v) -> GraphTensor:
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
        return GraphTensor(v.name, v.type.tensor_type.elem_type, dims)

    return [tensor(i) for i in g.input if i.name not in inits], [tensor(o) for o in g.output]


def io_names(path: str) -> tuple[list[str], list[int], list[str]]:
    """(input names, input ranks, output names) of the ONNX file at ``path`` (``graph_io``)."""
    ins, outs = graph_io(path)
    return [i.name for i in ins], [len(i.dims) for i in ins], [o.name for o in outs]
