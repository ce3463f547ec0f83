"""face_recognizer (embedded CPU profile): the ONNX network run by the engine named in config.pbtxt."""

from model_repository.onnx_model import OnnxModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
