"""face_swap: one encoded image in, one encoded image out (``model_repository/frame_swapper.py``)."""

from model_repository.frame_swapper import FrameSwapper as TritonPythonModel

__all__ = ["TritonPythonModel"]
