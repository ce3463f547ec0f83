"""content_detector (embedded CPU profile): the content gate's ONNX detector (``pipeline.content``'s
contract) run by the engine named in config.pbtxt, its precision chosen by the load-time self-check."""

from model_repository.onnx_model import OnnxModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
