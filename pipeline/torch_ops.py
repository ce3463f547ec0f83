"""The pixel stages as tensor operations (PyTorch), for the ``torch`` profile (issue 20), whose
entry points run ``pipeline.tensor_frames`` with them.

The same arithmetic as the NumPy/OpenCV stages (``detection.letterbox_blob``,
``align.norm_crop``, ``paste.paste_back``, ``content.preprocess``, the re-grey, the badge and
the watermark), written so a frame can stay on one device from decode to encode: no full frame
is copied to the host (the badge's box and the watermark's 256 x 256 plane are). They run on
whatever device their tensors are on; the tests run them on the CPU against the OpenCV stages
(tests/unit/test_torch_ops.py, test_tensor_frames.py), and the GPU run (``bench.gpu_run``) on
CUDA.

Layout: frames are uint8 [3, H, W] **RGB** (torchvision's ``decode_jpeg``/``encode_jpeg``, and
the order the networks take), where the CPU stages hold uint8 [H, W, 3] BGR. Affine matrices
are float [2, 3] (``align.estimate_norm``: frame pixels -> crop pixels), small host arrays: the
key points they come from are a few numbers per face.

Where the results differ from OpenCV's, and by how much (measured in the tests):

- resize and warps sample in floating point where OpenCV uses fixed point (1/32-pixel
  coordinates, 15-bit weights): a level or so on a few pixels; the detector's boxes move
  by well under a pixel;
- ``paste_back`` blurs the mask at full scale (``paste.paste_back`` blurs a wide mask at a
  reduced scale to save CPU time) and keeps it in float: PSNR >= 45 dB against the OpenCV
  paste on the shared photos.

Requires ``torch`` (``pip install torch``; the CPU build is enough for the tests).
``torchvision`` is used for JPEG decode/encode where installed (nvJPEG on CUDA) and OpenCV
otherwise.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("pipeline.torch_ops needs PyTorch: pip install torch (the CPU build is enough to "
                      "test; the GPU profile uses the CUDA build)") from exc

from pipeline import paste
from pipeline.detection import DET_MEAN, DET_SIZE, DET_STD, _fitted


def from_bgr(img_bgr: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 [3, H, W] RGB tensor on ``device`` from a uint8 [H, W, 3] BGR array (OpenCV's)."""
    return torch.from_numpy(np.ascontiguousarray(img_bgr[:, :, ::-1].transpose(2, 0, 1))).to(device)


def to_bgr(frame: torch.Tensor) -> np.ndarray:
    """uint8 [H, W, 3] BGR array (on the host) from a uint8 [3, H, W] RGB tensor."""
    return np.ascontiguousarray(frame.permute(1, 2, 0).flip(-1).cpu().numpy())


def decode_jpeg(buf: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor | None:
    """uint8 [3, H, W] RGB of JPEG bytes (uint8 [N]) decoded by torchvision onto ``device``
    (nvJPEG on CUDA), or None where torchvision is not installed or refuses the file (CMYK,
    arithmetic coding): the caller then decodes with OpenCV (``tensor_frames.decode_frame``,
    which checks the bytes first)."""
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as tv_decode

        return tv_decode(torch.from_numpy(np.array(buf, np.uint8)), mode=ImageReadMode.RGB, device=device)
    except (ImportError, RuntimeError):
        return None


def encode_jpeg(frame: torch.Tensor, quality: int = 95) -> bytes:
    """JPEG bytes of a uint8 [3, H, W] RGB frame: nvJPEG on CUDA where torchvision is
    installed, else OpenCV (``quality`` 1-100, as ``pipeline.codec``)."""
    try:
        from torchvision.io import encode_jpeg as tv_encode

        return bytes(tv_encode(frame.contiguous(), quality=quality).cpu().numpy().tobytes())
    except ImportError:
        ok, buf = cv2.imencode(".jpg", to_bgr(frame), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("OpenCV could not encode the frame") from None
        return buf.tobytes()


def letterbox_blob(frame: torch.Tensor, det_size: tuple[int, int] = (DET_SIZE, DET_SIZE)) -> tuple[torch.Tensor, float]:
    """SCRFD's input, as ``detection.letterbox_blob``: the frame resized into ``det_size``
    keeping its aspect ratio (bilinear, half-pixel centres, as ``cv2.resize``; rounded to whole
    levels as OpenCV's uint8 result is), padded bottom/right with black, (x - 127.5) / 128.

    Args:
        frame: uint8 [3, H, W] RGB.
        det_size: detector input (width, height) in pixels.

    Returns:
        (blob, det_scale): float32 [1, 3, det_h, det_w] RGB on the frame's device, and the
        scale (detector pixels per frame pixel).
    """
    h, w = frame.shape[1:]
    new_w, new_h = _fitted(h, w, det_size)
    blob = torch.full((1, 3, det_size[1], det_size[0]), (0.0 - DET_MEAN) / DET_STD, dtype=torch.float32,
                      device=frame.device)
    blob[0, :, :new_h, :new_w] = (resized(frame, (new_h, new_w), area=False) - DET_MEAN) / DET_STD
    return blob, float(new_h) / h


def _grid(m_inv: np.ndarray, out_hw: tuple[int, int], in_hw: tuple[int, int], device) -> torch.Tensor:
    """grid_sample's grid [N, h, w, 2] for output pixels (x, y) sampled at ``m_inv @ (x, y, 1)``
    in an input of ``in_hw`` (pixel centres at integer coordinates, as OpenCV's warps)."""
    m_inv = torch.as_tensor(np.asarray(m_inv, np.float64).reshape(-1, 2, 3), dtype=torch.float64, device=device)
    h, w = out_hw
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                            torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # [h, w, 3]
    src = torch.einsum("hwk,nck->nhwc", pts, m_inv)  # [N, h, w, 2] input pixel coordinates
    ih, iw = in_hw
    scale = torch.tensor([2.0 / max(iw - 1, 1), 2.0 / max(ih - 1, 1)], dtype=torch.float64, device=device)
    return (src * scale - 1.0).float()


def warp_affine(img: torch.Tensor, m: np.ndarray, out_hw: tuple[int, int]) -> torch.Tensor:
    """``cv2.warpAffine(img, M, (w, h))`` for each M: bilinear, border 0.

    Args:
        img: float [C, H, W] or [N, C, H, W] (one image per matrix) on any device.
        m: float [2, 3] or [N, 2, 3]: input pixels -> output pixels.
        out_hw: (h, w) of the output.

    Returns:
        float32 [N, C, h, w] (not rounded).
    """
    ms = np.asarray(m, np.float64).reshape(-1, 2, 3)
    m_inv = np.stack([cv2.invertAffineTransform(x) for x in ms])
    grid = _grid(m_inv, out_hw, tuple(img.shape[-2:]), img.device)
    src = img.float()
    if src.ndim == 3:
        src = src[None].expand(len(ms), *src.shape)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def crops(frame: torch.Tensor, ms: np.ndarray, size: int) -> torch.Tensor:
    """Aligned face crops (``align.norm_crop`` for each matrix), rounded to whole levels.

    Args:
        frame: uint8 [3, H, W] RGB.
        ms: float [N, 2, 3] from ``align.estimate_norm(kps, size)``.
        size: crop side (112 for ArcFace, 128 for inswapper).

    Returns:
        float32 [N, 3, size, size] RGB, values 0-255 (whole numbers), on the frame's device.
    """
    if len(ms) == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32, device=frame.device)
    return warp_affine(frame, ms, (size, size)).round_()


def gaussian_kernel(ksize: int, device=None) -> torch.Tensor:
    """float32 [ksize] taps of OpenCV's ``getGaussianKernel(ksize, 0)`` for ksize > 7 (the sigma
    ``paste._gaussian_sigma`` derives; smaller kernels use OpenCV's fixed tables)."""
    sigma = paste._gaussian_sigma(ksize)
    x = torch.arange(ksize, dtype=torch.float64, device=device) - (ksize - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).float()


def _blur(mask: torch.Tensor, ksize: int) -> torch.Tensor:
    """Separable Gaussian blur of a float [h, w] mask, border reflected as OpenCV's default
    (BORDER_REFLECT_101, which is torch's "reflect")."""
    r = ksize // 2
    g = gaussian_kernel(ksize, mask.device)
    x = mask[None, None]
    mode = "reflect" if min(mask.shape) > r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), g.view(1, 1, -1, 1))
    return x[0, 0]


def _erode(mask: torch.Tensor, k: int) -> torch.Tensor:
    """``cv2.erode`` with a k x k kernel of ones (anchor at its centre, border as +inf)."""
    a = k // 2
    x = F.pad(mask[None, None], (a, k - 1 - a, a, k - 1 - a), value=255.0)[0]  # [1, H + k - 1, W + k - 1]
    # a square's minimum is the minimum over rows of the minima along each row: 2k comparisons a
    # pixel instead of k^2 (k is 10 to 40 at usual face sizes); 1-D pooling, the fast kernel
    x = F.max_pool1d(-x, k, stride=1)  # along rows: [1, H + k - 1, W]
    x = F.max_pool1d(x.transpose(1, 2).contiguous(), k, stride=1)  # along columns: [1, W, H]
    return -x[0].T


def swapper_output(pred: torch.Tensor) -> torch.Tensor:
    """float32 [N, 3, S, S] RGB 0-255 whole numbers from inswapper's [N, 3, S, S] RGB output
    in [0, 1], truncated as ``paste.swapper_output_to_bgr`` (and insightface) do."""
    return (pred.float() * 255).clamp_(0, 255).floor_()


def paste_back(frame: torch.Tensor, fake: torch.Tensor, m: np.ndarray) -> torch.Tensor:
    """Blend one swapped crop into the frame, in place, on the face's region only: insightface's
    paste-back (``paste.paste_back``: the white crop warped back, thresholded at 20, eroded by
    ``max(mask_size // 10, 10)``, Gaussian-blurred with kernel ``2 * max(mask_size // 20, 5) + 1``,
    then ``mask * fake + (1 - mask) * frame``, rounded).

    Args:
        frame: uint8 [3, H, W] RGB; modified in place and returned.
        fake: float [3, S, S] RGB, 0-255 (``swapper_output``), on the frame's device.
        m: float [2, 3] that mapped frame pixels to the crop (``align.estimate_norm``).

    Returns:
        The same ``frame``.
    """
    size = fake.shape[-1]
    region = paste.face_region(m, size, tuple(frame.shape[1:]))
    if region is None:
        return frame
    (x0, y0, x1, y1), m_roi = region
    roi_hw = (y1 - y0, x1 - x0)
    white = torch.full((1, size, size), 255.0, device=frame.device)
    both = warp_affine(torch.cat([fake.float(), white]), m_roi, roi_hw)[0]
    fake_w, mask = both[:3], both[3].round()
    mask = torch.where(mask > 20, 255.0, mask)
    full = torch.nonzero(mask == 255)
    if len(full) == 0:
        return frame
    fh, fw = (full.max(0).values - full.min(0).values + 1).tolist()
    erode_k, ksize = paste.mask_kernels(fw, fh)
    mask = _blur(_erode(mask, erode_k), ksize)
    weight = (mask / 255.0)[None]
    region = frame[:, y0:y1, x0:x1]
    out = weight * fake_w + (1 - weight) * region.float()
    region.copy_(out.round_().clamp_(0, 255).to(torch.uint8))
    return frame


def luma(frame: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W] grey of a uint8 [3, H, W] RGB frame, exactly ``cv2.COLOR_BGR2GRAY``'s
    fixed-point BT.601 (weights 9798, 19235, 3735 / 2^15 for R, G, B, rounded)."""
    rgb = frame.to(torch.int32)
    return ((rgb[0] * 9798 + rgb[1] * 19235 + rgb[2] * 3735 + 16384) >> 15).to(torch.uint8)


def is_grey(frame: torch.Tensor) -> bool:
    """``codec._is_grey`` on the device: about 64 x 64 pixels sampled, no channel more than 2
    levels from the others."""
    h, w = frame.shape[1:]
    s = frame[:, :: max(h // 64, 1), :: max(w // 64, 1)].to(torch.int16)
    return bool(((s[0] - s[1]).abs().max() <= 2) & ((s[1] - s[2]).abs().max() <= 2))


@functools.lru_cache(maxsize=64)
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """float64 [n_out, n_in]: ``cv2.INTER_AREA``'s weights along one axis when shrinking (each
    output pixel the mean of its footprint, partial pixels at its edges weighted by the part
    covered; OpenCV's ``computeResizeAreaTab``). Cached per size pair: read only."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), np.float64)
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s1, s2 = int(np.ceil(f1)), int(np.floor(f2))
        s2 = min(s2, n_in - 1)
        s1 = min(s1, s2)
        if s1 - f1 > 1e-3:
            w[d, s1 - 1] = (s1 - f1) / cell
        w[d, s1:s2] = 1.0 / cell
        if f2 - s2 > 1e-3:
            w[d, s2] = min(min(f2 - s2, 1.0), cell) / cell
    w.setflags(write=False)
    return w


def resized(plane: torch.Tensor, out_hw: tuple[int, int], area: bool) -> torch.Tensor:
    """float32 [..., h, w] resize of a [..., H, W] plane (any dtype), rounded to whole levels as
    OpenCV's uint8 result is: ``area`` True and both sides shrinking is ``cv2.INTER_AREA`` (two
    matrix products with its weights, ``area_weights``), else ``cv2.INTER_LINEAR`` (torch's
    bilinear in floating point, where OpenCV uses 11-bit fixed point: a level apart on a few
    pixels)."""
    x = plane.float()
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, *x.shape[-2:])
    h, w = x.shape[-2:]
    if area and out_hw[0] <= h and out_hw[1] <= w:
        wh = torch.tensor(area_weights(h, out_hw[0]), dtype=torch.float32, device=x.device)
        ww = torch.tensor(area_weights(w, out_hw[1]), dtype=torch.float32, device=x.device)
        y = wh @ x @ ww.T
    else:
        y = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=False)
    return y.round_().clamp_(0, 255).reshape(*lead, *out_hw)


def content_blob(frame: torch.Tensor, size: int) -> torch.Tensor:
    """The content gate's input (``content.preprocess``: nudenet's square letterbox): the frame
    padded right and below to a black square, resized to ``size`` (``cv2.INTER_LINEAR``),
    float32 [1, 3, size, size] **BGR** in [0, 1] on the frame's device."""
    h, w = frame.shape[1:]
    side = max(h, w)
    square = F.pad(frame.flip(0), (0, side - w, 0, side - h))
    return (resized(square, (size, size), area=False) / 255.0)[None]


def explode(crops: torch.Tensor, n: int) -> torch.Tensor:
    """``pixel_boost.explode`` for [M, C, 128 n, 128 n] tensors: [M n n, C, 128, 128], row
    ``f n n + i n + j`` = ``crops[f, :, i::n, j::n]``."""
    m, c, side = crops.shape[0], crops.shape[1], crops.shape[-1]
    s = side // n
    return crops.reshape(m, c, s, n, s, n).permute(0, 3, 5, 1, 2, 4).reshape(m * n * n, c, s, s)


def implode(subs: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``explode``: [M n n, C, 128, 128] -> [M, C, 128 n, 128 n]."""
    c, s = subs.shape[1], subs.shape[-1]
    m = subs.shape[0] // (n * n)
    return subs.reshape(m, n, n, c, s, s).permute(0, 3, 4, 1, 5, 2).reshape(m, c, s * n, s * n)


def burn_badge(frame: torch.Tensor) -> torch.Tensor:
    """``badge.burn_badge`` in place on a uint8 [3, H, W] RGB frame: only the badge's box goes
    to the host and back (a few kB). Returns the same ``frame``."""
    from pipeline.badge import badge_box, badge_pixels

    box = badge_box(frame.shape[2], frame.shape[1])
    if box is not None:
        x1, y1, x2, y2 = box
        region = frame[:, y1:y2, x1:x2]
        region.copy_(from_bgr(badge_pixels(to_bgr(region)), frame.device))
    return frame


def embed_watermark(frame: torch.Tensor, payload_hex: str) -> bool:
    """``watermark.embed_if_fits`` in place on a uint8 [3, H, W] RGB frame: the luma plane is
    made and resized on the device; only the canonical 256 x 256 plane and its change cross to
    the host (``watermark.canonical_change``) and back. Returns False (frame untouched) for a
    side under ``watermark.MIN_SIDE``, else True.

    Matches the host mark to about a level per pixel (resizes in floating point); the tests
    read it back with ``watermark.detect``."""
    from pipeline import watermark as wm

    h, w = frame.shape[1:]
    if min(h, w) < wm.MIN_SIDE:
        return False
    big = h * w >= wm.CANONICAL * wm.CANONICAL
    plane = resized(luma(frame), (wm.CANONICAL, wm.CANONICAL), area=big)
    change = np.rint(wm.canonical_change(plane.cpu().numpy(), wm.Payload.from_bytes(bytes.fromhex(payload_hex))))
    up = torch.from_numpy(np.clip(change + 128, 0, 255).astype(np.float32)).to(frame.device)
    up = resized(up, (h, w), area=not big)
    frame.copy_((frame.float() + (up - 128.0)).clamp_(0, 255).to(torch.uint8))
    return True
