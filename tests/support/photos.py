"""The real photos of ``../shared/images`` (``FACESWAP_SHARED_IMAGES``), BGR uint8 as OpenCV reads them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from repository.layout import ROOT, shared_images_dir

__all__ = ["IMAGES", "ROOT", "image_path", "load"]

IMAGES = shared_images_dir()


def image_path(name: str) -> Path:
    """A real photo from ../shared/images; fails with what to provide when it is missing."""
    p = IMAGES / name
    if not p.exists():
        pytest.fail(f"test photo {p} is missing: provide ../shared/images (see docs/testing.md) or set "
                    "FACESWAP_SHARED_IMAGES to a folder holding it")
    return p


def load(name: str) -> np.ndarray:
    """The photo ``name`` decoded (H x W x 3, uint8, BGR)."""
    img = cv2.imread(str(image_path(name)))
    assert img is not None, name
    return img
