"""The Triton models' sources: one folder per model (``<name>/1/model.py``, Python backend), and
the glue they share (``glue``: parameters, tensors, BLS calls, error answers; ``onnx_model``:
a network served by a CPU engine). Only the Python backend stub imports this package
(``triton_python_backend_utils``); the work itself is plain functions in ``pipeline``.

``repository.generate`` (``faceswap-repository build``) writes the servable repository of a
profile from these sources and ``pipeline.contracts``, ``config.pbtxt`` included.
"""
