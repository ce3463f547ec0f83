"""Where the build reads and writes.

Every path here can be moved with an environment variable; the defaults suit a checkout
(``models/``, ``.run/``, ``build/`` are gitignored).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pipeline.precision import file_sha256

#: The checkout (``repository/`` is one level below it).
ROOT = Path(__file__).resolve().parents[1]
#: The Python-backend models' sources (``<stage>/1/model.py``), copied into every generated repository.
SOURCE = ROOT / "model_repository"
#: Downloaded real models (``make models``) and generated stand-ins (``models/standin/<size>``):
#: ``FACESWAP_MODELS_DIR``, default ``models/`` in the checkout (the CPU Triton image sets a volume).
MODELS_DIR = Path(os.environ.get("FACESWAP_MODELS_DIR") or ROOT / "models")
#: The networks' roles: the three of the swap in pipeline order, then the content gate's detector.
ROLES = ("detector", "recognizer", "swapper", "content")


def env_int(name: str, default: int) -> int:
    """A positive integer setting from the environment, else ``default``.

    Raises:
        ValueError: set but not an integer of at least 1.
    """
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {raw!r}")
    return value


def cache_dir() -> Path:
    """``FACESWAP_CACHE_DIR``, default ``.run/cache`` in the checkout: int8 files and the
    self-check's decisions, kept across restarts."""
    return Path(os.environ.get("FACESWAP_CACHE_DIR") or ROOT / ".run" / "cache").resolve()


def shared_dir() -> Path:
    """The read-only shared folder (real photos and detectors): ``FACESWAP_SHARED``, else
    ``../shared`` beside the checkout, else ``/work/shared`` (this workplace's fixed place)."""
    env = os.environ.get("FACESWAP_SHARED")
    if env:
        return Path(env)
    for cand in (ROOT.parent / "shared", Path("/work/shared")):
        if cand.is_dir():
            return cand
    return ROOT.parent / "shared"


def shared_models_dir() -> Path:
    """Real SCRFD detectors kept beside the checkout: ``FACESWAP_SHARED_MODELS``, else ``<shared>/models``."""
    return Path(os.environ.get("FACESWAP_SHARED_MODELS", shared_dir() / "models"))


def shared_images_dir() -> Path:
    """Real photos kept beside the checkout: ``FACESWAP_SHARED_IMAGES``, else ``<shared>/images``."""
    return Path(os.environ.get("FACESWAP_SHARED_IMAGES", shared_dir() / "images"))


def default_images() -> tuple[Path, Path]:
    """(source portrait, group photo): the shared photos when present, else insightface's own
    (``Tom_Hanks_54745.png``, ``t1.jpg`` from its package data). Used by the demo, the precision
    probe and the benchmarks."""
    images = shared_images_dir()
    src, tgt = images / "portrait_obama_official.jpg", images / "group_insightface_t1.jpg"
    if src.exists() and tgt.exists():
        return src, tgt
    import insightface

    data = Path(insightface.__file__).parent / "data" / "images"
    return data / "Tom_Hanks_54745.png", data / "t1.jpg"


#: ``pipeline.precision.file_sha256``, remembered per path (the same files are hashed by several steps).
cached_sha256 = functools.lru_cache(maxsize=16)(file_sha256)
