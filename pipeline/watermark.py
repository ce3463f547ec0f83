"""Invisible watermark in the pixels: 64-bit payload (32-bit service id, 32-bit result id).

Scheme (block-DCT quantisation index modulation on a canonical-size luma plane):

1. The luma (BT.601 weights, as ``cv2.COLOR_BGR2GRAY``) of the image is resized with
   ``INTER_AREA`` to a canonical ``CANONICAL x CANONICAL`` plane, whatever the image's size and
   aspect ratio, so a mark made at 1920x1080 is read back the same way from a 960x540 copy or a
   thumbnail: detection needs no knowledge of the original size.
2. The plane is cut into 4x4 blocks (4,096 of them); in each block's orthonormal 2-D DCT the
   coefficients in ``COEFFS`` (three lowest AC terms: 12,288 slots) carry one bit each by
   dithered QIM (Chen & Wornell 2001): the coefficient is moved to the nearest point of the
   lattice ``DELTA * k + dither + bit * DELTA / 2``. The dither and the slot -> bit assignment
   come from a fixed public seed (``SEED``), so every bit is spread over the whole picture.
3. The 80-bit codeword (64 payload bits + CRC-16/CCITT) is repeated ~153 times; the decoder
   averages the soft decisions ``cos(2 pi (c - dither) / DELTA)`` per bit (+1: bit 0, -1: bit 1).
4. Flat blocks get only part of the move (down to 60%, ``_texture_mask``): a change shows most
   on smooth areas (sky, gradients), and the textured blocks carry the bits there.
5. Only the *change* of the canonical plane is resized back up (``INTER_LINEAR``) and added
   equally to B, G and R (so chroma stays, luma moves by exactly that change).

Detection: ``found`` needs the CRC to match and the mean |soft bit| (``confidence``) to reach
``FOUND_CONFIDENCE``; an unmarked photo measures about 0.046 (the mean of |N(0, 0.71/sqrt(153))|),
a fresh mark 0.4-0.8 on photos (0.3 on a flat gradient). Robust to re-encoding and resizing
(both measured in tests/unit/test_provenance.py); a crop moves the block grid and is not survived
(measured too: bits at chance level).

Why not ``invisible-watermark`` 0.2.0's DWT-DCT: its package ``__init__`` imports ``torch`` (for
RivaGAN) whatever method is used; its dwtDct loops in Python over every 4x4 block (0.36-0.46 s
per 1080p image here), writes the modified planes back into uint8 (83-100% of bits right with
no attack at all on three 1080p photos), fell to chance (47-61%) after JPEG q75, and keys bits
to the full image's block grid, so a downscaled copy reads only once scaled back to the
original size. TrustMark needs torch and downloads its weights at run time. This module needs
only NumPy and OpenCV.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import cv2
import numpy as np

#: Side of the canonical luma plane the mark lives in (pixels).
CANONICAL = 256
#: DCT block side.
BLOCK = 4
#: Coefficients (row, col) of each block's DCT that carry bits: the lowest AC terms, which
#: survive JPEG and downscaling and spread a change smoothly over the block.
COEFFS = ((0, 1), (1, 0), (1, 1))
#: QIM step in orthonormal-DCT units of the canonical luma; tuned in tests/unit/test_provenance.py
#: and bench/marking.py (bit accuracy after JPEG q75 and a 50% downscale vs. visibility).
DELTA = 20.0
#: Perceptual masking: blocks whose AC RMS (canonical grey levels) reaches TEXTURE_FULL get the
#: full QIM move, flatter ones a share down to FLAT_FLOOR. Tuned on a smooth 1080p gradient
#: (RMS change 2.0 grey levels unmasked, 1.25 with these) against H.264 survival (720p found
#: through crf 28, 360p through crf 23; with 6.0/0.35: 720p only through crf 23).
TEXTURE_FULL = 3.0
FLAT_FLOOR = 0.6
#: Public seed of the dither and the bit interleaving. Changing it orphans every mark made before.
SEED = 0x46535731  # "FSW1"
#: Payload bits and codeword bits (payload + CRC-16).
PAYLOAD_BITS = 64
CODE_BITS = PAYLOAD_BITS + 16
#: Minimum confidence (mean |soft bit|) for "found". Unmarked images measured 0.046 +- 0.004 (max 0.056
#: over 135 photos, video frames, flat, noise and checkerboard images); a fresh mark 0.4-0.8.
FOUND_CONFIDENCE = 0.10
#: Smallest image side that is marked; below it the mark would be mostly interpolation.
MIN_SIDE = 64


@dataclass(frozen=True)
class Payload:
    """What a mark carries: who made the file and which result it is (each an unsigned 32-bit int)."""

    service_id: int
    result_id: int

    def __post_init__(self) -> None:
        for name in ("service_id", "result_id"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < 2**32:
                raise ValueError(f"{name} must be an int in [0, 2**32), got {v!r}")

    def to_bytes(self) -> bytes:
        return self.service_id.to_bytes(4, "big") + self.result_id.to_bytes(4, "big")

    @classmethod
    def from_bytes(cls, b: bytes) -> Payload:
        return cls(int.from_bytes(b[:4], "big"), int.from_bytes(b[4:8], "big"))

    def as_dict(self) -> dict:
        return {"service_id": self.service_id, "result_id": self.result_id, "hex": self.to_bytes().hex()}


@dataclass(frozen=True)
class Detection:
    """Result of ``detect``: ``payload`` is set only when ``found``."""

    found: bool
    payload: Payload | None
    confidence: float
    bit_scores: np.ndarray  # (CODE_BITS,) float32 in [-1, 1], averaged soft decisions (+1 = bit 0)

    def as_dict(self) -> dict:
        return {"found": self.found, "payload": self.payload.as_dict() if self.payload else None,
                "confidence": round(self.confidence, 4)}


def _codeword(payload: Payload) -> np.ndarray:
    data = payload.to_bytes()
    crc = binascii.crc_hqx(data, 0xFFFF).to_bytes(2, "big")
    return np.unpackbits(np.frombuffer(data + crc, np.uint8)).astype(np.float32)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


_D = _dct_matrix(BLOCK)
_NB = CANONICAL // BLOCK
_rng = np.random.default_rng(SEED)
#: Per slot: dither in [0, DELTA) and the codeword bit it carries (a shuffled even spread).
_DITHER = (_rng.random((_NB, _NB, len(COEFFS))) * DELTA).astype(np.float32)
_BIT_OF_SLOT = _rng.permutation(np.arange(_NB * _NB * len(COEFFS)) % CODE_BITS).reshape(_NB, _NB, len(COEFFS))


def _interp(shape: tuple, shrink: bool) -> int:
    """INTER_AREA where the canonical plane is smaller than the image (shrinking), else bilinear."""
    big = shape[0] * shape[1] >= CANONICAL * CANONICAL
    return cv2.INTER_AREA if big == shrink else cv2.INTER_LINEAR


def _luma(bgr: np.ndarray) -> np.ndarray:
    """Canonical (CANONICAL, CANONICAL) float32 luma plane of a BGR(A) uint8 image.

    ``cv2.COLOR_BGR2GRAY`` (BT.601, rounded to whole grey levels) at the image's size, then
    resized to the canonical plane: one channel to resize instead of three (2x faster at 720p,
    1080p). The rounding (at most half a level per pixel, averaged over the many pixels of a
    canonical one) moves a QIM coefficient by a few hundredths of ``DELTA``'s 20.
    """
    if bgr.ndim != 3 or bgr.shape[2] not in (3, 4) or bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR(A) uint8 image of shape (H, W, 3|4), got {bgr.dtype} {bgr.shape}")
    if min(bgr.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image {bgr.shape[1]}x{bgr.shape[0]} is smaller than {MIN_SIDE} px on a side")
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGRA2GRAY if bgr.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (CANONICAL, CANONICAL), interpolation=_interp(bgr.shape, shrink=True))
    return small.astype(np.float32)


#: The 2-D DCT basis images of the DC term and of ``COEFFS``, one per column: [BLOCK * BLOCK, 1 + len(COEFFS)].
_BASIS = np.stack([np.outer(_D[r], _D[c]).ravel() for r, c in ((0, 0), *COEFFS)], axis=1)


def _block_rows(plane: np.ndarray) -> np.ndarray:
    """The plane's 4x4 blocks as rows: [NB * NB, BLOCK * BLOCK], block (a, b) at row a * NB + b."""
    return plane.reshape(_NB, BLOCK, _NB, BLOCK).transpose(0, 2, 1, 3).reshape(_NB * _NB, BLOCK * BLOCK)


def _coefficients(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the ``COEFFS`` of every block's orthonormal DCT, [NB, NB, len(COEFFS)]; the blocks' AC
    energy, [NB, NB]). Only the terms used are computed; the AC energy is the block's energy
    less its DC term's (Parseval: the transform is orthonormal)."""
    rows = _block_rows(plane)
    coef = rows @ _BASIS
    ac = np.maximum((rows * rows).sum(axis=1) - coef[:, 0] ** 2, 0)
    return coef[:, 1:].reshape(_NB, _NB, len(COEFFS)), ac.reshape(_NB, _NB)


def _texture_mask(ac_energy: np.ndarray) -> np.ndarray:
    """Per block, how much of the QIM move to apply: 1 where the block has texture, down to
    ``FLAT_FLOOR`` where it is flat (a change is seen most on smooth areas such as sky or a
    gradient). Texture = RMS of the block's AC coefficients (grey levels); full move from
    ``TEXTURE_FULL`` up."""
    ac = np.sqrt(ac_energy / (BLOCK * BLOCK - 1))
    return np.clip(ac / TEXTURE_FULL, FLAT_FLOOR, 1.0)[:, :, None]


def canonical_change(plane: np.ndarray, payload: Payload, strength: float = 1.0) -> np.ndarray:
    """(CANONICAL, CANONICAL) float32 luma change that moves every slot of a canonical luma
    plane (float32 [CANONICAL, CANONICAL], grey levels: ``_luma``'s, or the GPU profile's same
    plane made on its device) onto its bit's lattice (part of the way on flat blocks, see
    ``_texture_mask``). ``embed`` rounds it, resizes it to the image and adds it."""
    c, ac = _coefficients(np.asarray(plane, np.float32))  # (NB, NB, len(COEFFS))
    bits = _codeword(payload)[_BIT_OF_SLOT]
    step = DELTA * strength
    offset = _DITHER * strength + bits * (step / 2)
    q = np.round((c - offset) / step) * step + offset
    moves = ((q - c) * _texture_mask(ac)).reshape(_NB * _NB, len(COEFFS))
    blocks = (moves @ _BASIS[:, 1:].T).reshape(_NB, _NB, BLOCK, BLOCK)  # the inverse DCT of those terms
    return blocks.transpose(0, 2, 1, 3).reshape(CANONICAL, CANONICAL)


def embed(bgr: np.ndarray, payload: Payload, strength: float = 1.0) -> np.ndarray:
    """The image with ``payload`` marked in its pixels (a new array; the input is not changed).

    Args:
        bgr: (H, W, 3) or (H, W, 4) uint8, BGR(A) (OpenCV order); alpha is kept as it is.
            Frames from PyAV: ``frame.to_ndarray(format="bgr24")``.
        payload: 32-bit service id and 32-bit result id.
        strength: multiplies the QIM step ``DELTA`` (1.0 is the tuned value; higher is more
            robust and more visible).

    Returns:
        Array of the same shape and dtype; luma moves by at most about 10 grey levels (RMS about
        2, PSNR about 43 dB on photos).

    Raises:
        ValueError: wrong shape or dtype, or a side under ``MIN_SIDE``.
    """
    change = np.rint(canonical_change(_luma(bgr), payload, strength))
    h, w = bgr.shape[:2]
    # The change goes up as uint8 offset by 128 (bilinear resizing is linear, so this equals
    # resizing the signed change, up to rounding) and is added to B, G and R with one
    # saturation at the end: out = sat(bgr + (change + 128) - 128).
    up = cv2.resize(np.clip(change + 128, 0, 255).astype(np.uint8), (w, h),
                    interpolation=_interp(bgr.shape, shrink=False))
    out = cv2.addWeighted(bgr[:, :, :3], 1.0, cv2.cvtColor(up, cv2.COLOR_GRAY2BGR), 1.0, -128.0)
    if bgr.shape[2] == 4:
        out = np.dstack([out, bgr[:, :, 3]])
    return out


def embed_if_fits(bgr: np.ndarray, payload: Payload) -> np.ndarray:
    """``embed``, or ``bgr`` itself (the same array) when a side is under ``MIN_SIDE`` px: the
    one rule for every output (``frames.swap_frame``, ``provenance.watermark_frame``)."""
    return bgr if min(bgr.shape[:2]) < MIN_SIDE else embed(bgr, payload)


def soft_bits(bgr: np.ndarray) -> np.ndarray:
    """Averaged soft decisions per codeword bit, (CODE_BITS,) float32 in [-1, 1] (+1 = bit 0).

    Frames of one video can be combined by averaging their ``soft_bits`` before ``decide``.
    """
    c, _ = _coefficients(_luma(bgr))
    s = np.cos(2 * np.pi * (c - _DITHER) / DELTA).ravel()
    sums = np.bincount(_BIT_OF_SLOT.ravel(), weights=s, minlength=CODE_BITS)
    counts = np.bincount(_BIT_OF_SLOT.ravel(), minlength=CODE_BITS)
    return (sums / counts).astype(np.float32)


def decide(scores: np.ndarray) -> Detection:
    """Turn averaged soft bits into a detection (CRC-16 check + confidence threshold)."""
    bits = (scores < 0).astype(np.uint8)
    raw = np.packbits(bits).tobytes()
    data, crc = raw[:8], raw[8:10]
    confidence = float(np.mean(np.abs(scores)))
    ok = binascii.crc_hqx(data, 0xFFFF).to_bytes(2, "big") == crc and confidence >= FOUND_CONFIDENCE
    return Detection(ok, Payload.from_bytes(data) if ok else None, confidence, scores)


def detect(bgr: np.ndarray) -> Detection:
    """Look for a mark in one image.

    Args:
        bgr: (H, W, 3|4) uint8 BGR(A), any size >= ``MIN_SIDE``.

    Returns:
        ``Detection``: ``found`` with ``payload`` when the CRC matches and the confidence reaches
        ``FOUND_CONFIDENCE``; otherwise ``found`` False and ``payload`` None.

    Raises:
        ValueError: wrong shape, dtype or too small.
    """
    return decide(soft_bits(bgr))


def bit_accuracy(bgr: np.ndarray, payload: Payload) -> float:
    """Fraction of the 64 payload bits read back right (a measure for tests and benchmarks)."""
    want = _codeword(payload)[:PAYLOAD_BITS]
    got = (soft_bits(bgr)[:PAYLOAD_BITS] < 0).astype(np.float32)
    return float(np.mean(want == got))
