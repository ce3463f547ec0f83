"""Which model file serves each network: real downloads, then ../shared/models, then stand-ins.

Resolution order per role (detector, recognizer, swapper):
1. ``models/<file>`` downloaded by ``repository.download`` (size and SHA-256 checked there);
2. for the detector, the real SCRFD exports in the shared folder (``FACESWAP_SHARED_MODELS``,
   default ``../shared/models``): ``det_2.5g.onnx``, then ``det_500m.onnx``;
3. a stand-in from ``repository.standins`` (size from ``FACESWAP_STANDIN_SIZE``: tiny or full),
   generated on demand and always labelled as such.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from repository import standins
from repository.download import load_manifest
from repository.layout import MODELS_DIR, ROLES, shared_models_dir

log = logging.getLogger(__name__)
__all__ = ["ROLES", "ResolvedModel", "as_dict", "resolve"]


@dataclass(frozen=True)
class ResolvedModel:
    """The file chosen for one role and where it came from.

    Attributes:
        role: "detector", "recognizer" or "swapper".
        name: manifest name of the real model (det_10g, w600k_r50, inswapper_128).
        path: absolute path of the ONNX file.
        source: "downloaded", "shared" or "stand-in".
        stand_in: True when the file is a stand-in with random weights.
        detail: e.g. the shared file's name or the stand-in size.
    """

    role: str
    name: str
    path: str
    source: str
    stand_in: bool
    detail: str = ""

    def describe(self) -> str:
        kind = "STAND-IN (random weights, not a real face model)" if self.stand_in else "real"
        return f"{self.role:10s} {self.name:14s} {kind:48s} {self.source} {self.detail} {self.path}"


def resolve(standin_size: str | None = None, models_dir: Path = MODELS_DIR) -> dict[str, ResolvedModel]:
    """Pick a file for each role (see module docstring); generates stand-ins when needed."""
    size = standin_size or os.environ.get("FACESWAP_STANDIN_SIZE", "tiny")
    out: dict[str, ResolvedModel] = {}
    for entry in load_manifest():
        real = models_dir / entry.file
        if real.is_file() and real.stat().st_size == entry.size:
            out[entry.role] = ResolvedModel(entry.role, entry.name, str(real), "downloaded", False)
            continue
        if entry.role == "detector":
            shared = shared_models_dir()
            found = next((shared / f for f in ("det_2.5g.onnx", "det_500m.onnx") if (shared / f).is_file()), None)
            if found is not None:
                out[entry.role] = ResolvedModel(entry.role, entry.name, str(found), "shared", False,
                                                f"({found.name}, real SCRFD)")
                continue
        path = Path(standins.generate(models_dir / "standin" / size, size, (entry.name,))[entry.name]["path"])
        out[entry.role] = ResolvedModel(entry.role, entry.name, str(path), "stand-in", True, f"({size})")
        log.warning("using a STAND-IN for %s (%s): results of this stage are not real", entry.name, size)
    return out


def as_dict(models: dict[str, ResolvedModel]) -> dict[str, dict]:
    return {role: asdict(m) for role, m in models.items()}
