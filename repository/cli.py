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
import tempfile
from collections.abc import Sequence
from pathlib import Path

from repository import download, generate, quantize, standins
from repository.resolve import resolve


def _quantize(args: argparse.Namespace) -> int:
    """``quantize`` on ``--repository``, or on one built now from ``--models`` in a temporary folder."""
    if args.repository is not None:
        return quantize.run(args)
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        args.repository = Path(tmp) / "repo"
        generate.build(args.repository, "cpu", resolve(args.models))
        return quantize.run(args)


#: command -> (add its arguments, run it, one line of help)
COMMANDS = {
    "models": (download.add_arguments, download.run,
               "download the real insightface models (size and SHA-256 checked); offline, say how to provide "
               "each one"),
    "standins": (standins.add_arguments, standins.run,
                 "generate the stand-in ONNX models (random weights: NOT real face models)"),
    "build": (generate.add_arguments, generate.run,
              "write a Triton model repository (config.pbtxt of every model, the networks, the precision probe "
              "and int8 files)"),
    "quantize": (quantize.add_arguments, _quantize,
                 "int8 post-training quantization (cached by model hash) and a report of speed and parity against "
                 "fp32 and bf16"),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="faceswap-repository",
                                 description="Everything the product needs before Triton can serve: the models, "
                                             "stand-ins, the model repository and its int8 files.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (add_arguments, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        add_arguments(p)
        p.set_defaults(run=run)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.run(args)
