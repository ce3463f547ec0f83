"""The build: what turns model files into a servable Triton model repository.

- ``resolve``: which file serves each network (downloaded, the shared detector, or a stand-in);
- ``download``: the real models of ``models.json`` (size and SHA-256 checked);
- ``standins``: labelled stand-in networks with the real contracts and random weights;
- ``generate``: the model repository of a profile (``cpu``, ``gpu``, ``gpu-trt``), configs included;
- ``quantize``: int8 files for the precision self-check, and its report;
- ``layout``: where all of it reads and writes.

One command line: ``faceswap-repository`` (``repository.cli``).
"""
