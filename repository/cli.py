"""``faceswap-repository``: everything the product needs before Triton can serve.

    faceswap-repository models    [NAMES...] [--dest models] [--retries 3] [--timeout 20]
    faceswap-repository standins  [--size tiny|full] [--out DIR]
    faceswap-repository build     [--profile cpu|gpu|gpu-trt] [--out DIR] [--standin-size tiny|full]
    faceswap-repository quantize  [--repository DIR | --models tiny|full] [--json FILE]

(``python -m repository ...`` is the same.) ``make models``, ``make standins`` and
``make repository`` are thin wrappers over these; ``make serve`` runs ``build`` itself.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from repository import download, generate, quantize, standins

COMMANDS = {
    "models": (download, "download the real insightface models (size and SHA-256 checked); "
                         "offline, say how to provide each one"),
    "standins": (standins, "generate the stand-in ONNX models (random weights: NOT real face models)"),
    "build": (generate, "write a Triton model repository (config.pbtxt of every model, the networks, "
                        "the precision probe and int8 files)"),
    "quantize": (quantize, "int8 post-training quantization (cached by model hash) and a report of speed "
                           "and parity against fp32 and bf16"),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="faceswap-repository",
                                 description="Everything the product needs before Triton can serve: the models, "
                                             "stand-ins, the model repository and its int8 files.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args)
