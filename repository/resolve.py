"""Which model file serves each network: real downloads, then ../shared/models, then stand-ins.

Resolution order per role (detector, recognizer, swapper):
1. ``models/<file>`` downloaded by ``repository.download`` (size and SHA-256 checked there);
2. for the detector, the real SCRFD exports in the shared folder (``FACESWAP_SHARED_MODELS``,
   default ``../shared/models``): ``det_2.5g.onnx``, then ``det_500m.onnx``;
3. a stand-in from ``repository.standins`` (size from ``FACESWAP_STANDIN_SIZE``: tiny or full),
   generated on demand and always labelled as such.

The content gate's detector (role ``content``, ``pipeline.content``'s contract) is chosen by
``FACESWAP_CONTENT_DETECTOR`` (or ``resolve(content=...)``):

- ``nudenet`` (default): ``models/nudenet_320n.onnx`` copied by ``faceswap-repository models``,
  else ``320n.onnx`` inside the installed ``nudenet`` 3.4.2 wheel (SHA-256 checked); when
  neither is there the gate **fails closed**: the ``content_flag_all`` stand-in serves, every
  swap is refused, and a warning says why;
- a path to another ONNX detector of the same contract (the operator's choice; the repository
  build checks its tensors);
- ``flag-all`` / ``flag-none``: the test-only stand-ins that score every class 1.0 / 0.0.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from repository import standins
from repository.download import ModelEntry, load_manifest, package_file, verify
from repository.layout import MODELS_DIR, ROLES, shared_models_dir

log = logging.getLogger(__name__)
__all__ = ["CONTENT_STANDINS", "ROLES", "ResolvedModel", "as_dict", "resolve", "resolve_content"]
#: FACESWAP_CONTENT_DETECTOR values that name the test-only stand-ins, and their stand-in names.
CONTENT_STANDINS = {"flag-all": "content_flag_all", "flag-none": "content_flag_none"}


@dataclass(frozen=True)
class ResolvedModel:
    """The file chosen for one role and where it came from.

    Attributes:
        role: "detector", "recognizer", "swapper" or "content".
        name: manifest name of the real model (det_10g, w600k_r50, inswapper_128, nudenet_320n), the
            stand-in's name, or the operator's file's stem.
        path: absolute path of the ONNX file.
        source: "downloaded", "shared", "package", "operator" or "stand-in".
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


def _content_standin(name: str, size: str, models_dir: Path) -> ResolvedModel:
    path = Path(standins.generate(models_dir / "standin" / size, size, (name,))[name]["path"])
    return ResolvedModel("content", name, str(path), "stand-in", True, "(test only: scores every class "
                         f"{'1.0' if name == 'content_flag_all' else '0.0'})")


def resolve_content(entry: ModelEntry, choice: str | None = None, size: str = "tiny",
                    models_dir: Path = MODELS_DIR) -> ResolvedModel:
    """The content detector's file (module docstring); ``choice`` None: ``FACESWAP_CONTENT_DETECTOR``,
    default ``nudenet``.

    Raises:
        FileNotFoundError: ``choice`` names a path that is not a file.
    """
    choice = choice or os.environ.get("FACESWAP_CONTENT_DETECTOR") or "nudenet"
    if choice in CONTENT_STANDINS:
        log.warning("content detector: the STAND-IN %s (tests only)", CONTENT_STANDINS[choice])
        return _content_standin(CONTENT_STANDINS[choice], size, models_dir)
    if choice != "nudenet":
        path = Path(choice).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"FACESWAP_CONTENT_DETECTOR={choice!r}: no such file (nudenet, flag-all, "
                                    "flag-none or the path of an ONNX detector of the same contract)")
        return ResolvedModel("content", path.stem, str(path), "operator", False, "(the operator's detector)")
    copied = models_dir / entry.file
    if copied.is_file() and copied.stat().st_size == entry.size:
        return ResolvedModel("content", entry.name, str(copied), "downloaded", False)
    packaged = package_file(entry)
    if packaged is not None and verify(entry, packaged):
        return ResolvedModel("content", entry.name, str(packaged), "package", False,
                             f"({entry.package[0]} {entry.package[1]})")
    wheel = "==".join(entry.package[:2]) if entry.package else entry.name
    log.warning("NO CONTENT DETECTOR: %s is not in %s and %s is not installed (or is another version); the gate "
                "fails closed with the content_flag_all stand-in: EVERY swap will be refused. Install it (pip install "
                "%s) or set FACESWAP_CONTENT_DETECTOR to a detector of the same contract", entry.file, models_dir,
                wheel, wheel)
    return _content_standin("content_flag_all", size, models_dir)


def resolve(standin_size: str | None = None, models_dir: Path = MODELS_DIR,
            content: str | None = None) -> dict[str, ResolvedModel]:
    """Pick a file for each role (see module docstring); generates stand-ins when needed.
    ``content``: the content detector's choice (default ``FACESWAP_CONTENT_DETECTOR``, else nudenet)."""
    size = standin_size or os.environ.get("FACESWAP_STANDIN_SIZE", "tiny")
    out: dict[str, ResolvedModel] = {}
    for entry in load_manifest():
        if entry.role == "content":
            out["content"] = resolve_content(entry, content, size, models_dir)
            continue
        real = models_dir / entry.file
        if real.is_file() and real.stat().st_size == entry.size:
            out[entry.role] = ResolvedModel(entry.role, entry.name, str(real), "downloaded", False)
            continue
        if entry.role == "detector":
            shared = shared_models_dir()
            found = next((shared / f for f in ("det_2.5g.onnx", "det_500m.onnx") if (shared / f).is_file()), None)
            if found is not None:
                out[entry.role] = ResolvedModel(entry.role, entry.name, str(found), "shared", False,
                                                f"(not downloaded: {found.name} in its place, a real SCRFD)")
                continue
        path = Path(standins.generate(models_dir / "standin" / size, size, (entry.name,))[entry.name]["path"])
        out[entry.role] = ResolvedModel(entry.role, entry.name, str(path), "stand-in", True, f"({size})")
        log.warning("using a STAND-IN for %s (%s): results of this stage are not real", entry.name, size)
    return out


def as_dict(models: dict[str, ResolvedModel]) -> dict[str, dict]:
    return {role: asdict(m) for role, m in models.items()}
