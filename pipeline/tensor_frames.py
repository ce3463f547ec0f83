"""One frame through the whole pipeline with its pixels on one device: the GPU profile's
``face_swap`` and ``face_swap_kps`` (issue 20), the counterpart of ``pipeline.frames.swap_frame``.

The frame is decoded onto the device (nvJPEG for a JPEG where torchvision is installed; other
formats, and JPEGs carrying EXIF, by OpenCV on the host and copied up once) and stays there:
the detector's letterbox, the content gate's blob, the aligned crops, the swap, the
paste-back, the re-grey, the quality crops, the badge and the invisible watermark are tensor
operations (``pipeline.torch_ops``), and a JPEG is encoded on the device. What crosses to the
host is small: the detector's heads (decoded and NMS'd by ``detection.decode_scrfd``), the
embeddings (selection, quality figures), the badge's box, the watermark's 256 x 256 plane,
and the encoded bytes. PNG, WebP and BMP outputs are encoded by OpenCV from one copy of the
finished frame.

Every decision is the host path's own code on those small arrays (``decode_scrfd``,
``select_faces``, ``latents_for``, ``content.decide``, ``quality.quality_figures``, the
close-up pass of ``stages.close_up_pass``), so a request gets the same answer on either path;
the pixels agree within the tolerances of ``pipeline.torch_ops`` (tests/unit/
test_tensor_frames.py: boxes within 1 px, swapped faces >= 40 dB, on the CPU). The one pass that
reads pixels on the host is the tiled detection of elongated images (``detection.detect_tiles``:
long side over 2.5 times the short one), which gets a host copy of the frame.

Device memory: a frame's working copies are a few times its size (the letterbox and the content
gate's blob resize a float copy of it): up to about 1 GB for a 40-megapixel frame (``MAX_PIXELS``), a
few tens of MB at 1080p, freed when the request ends.

Networks are callables on tensors (``TensorNetworks``): BLS with DLPack in Triton
(``model_repository.glue``), torch modules or onnxruntime sessions in the tests. Frames are uint8
[3, H, W] RGB; blobs are float32 [N, 3, S, S] on the frame's device.

Step times (``stage_ms``) are host clock times; on a GPU each step waits for its kernels before
its time is read (``frames.Timer``'s ``sync``), so each is charged its own work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pipeline import torch_ops
from pipeline.align import estimate_norm
from pipeline.codec import MAX_PIXELS, as_buffer, check_image, decode_image, encode_image
from pipeline.content import INPUT_SIZE as CONTENT_SIZE
from pipeline.content import decide
from pipeline.detection import Detections, decode_scrfd, tile_windows
from pipeline.embedding import ARCFACE_MEAN, ARCFACE_STD, SWAP_MEAN, SWAP_STD, normed
from pipeline.follow import TrackHint
from pipeline.frames import (
    DetectSettings,
    FrameResult,
    Networks,
    Timer,
    content_policy,
    no_gate,
    nothing_aligned,
)
from pipeline.pixel_boost import boost_factor
from pipeline.quality import quality_figures, source_rows
from pipeline.selection import SwapOptions, select_faces
from pipeline.stages import (
    EMBED_SIZE,
    SWAP_SIZE,
    Aligned,
    caller_kps,
    chunked,
    close_up_pass,
    detect_stage,
    latents_for,
    output_format,
)

TensorFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TensorNetworks:
    """The networks as callables on tensors of the frame's device, and the rows each takes per
    call (0: one at a time).

    - ``detect_fn``: float32 [1, 3, H, W] -> SCRFD's 9 heads (tensors or arrays, any device);
    - ``embed_fn``: float32 [N, 3, 112, 112] -> [N, 512] raw ArcFace embeddings;
    - ``swap_fn``: float32 [N, 3, 128, 128] RGB in [0, 1] + [N, 512] latents -> [N, 3, 128, 128] in [0, 1];
    - ``content_fn``: float32 [1, 3, 320, 320] -> [1, 22, anchors].
    """

    detect_fn: Callable[[torch.Tensor], list] | None
    embed_fn: TensorFn
    swap_fn: TensorFn | None = None
    embed_batch: int = 0
    swap_batch: int = 0
    content_fn: TensorFn | None = None


def host(x) -> np.ndarray:
    """float32 (or the array's own dtype) numpy copy of a tensor or array, on the host."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return (x.float() if x.is_floating_point() else x).cpu().numpy()
    return np.asarray(x)


def host_detector(detect_fn: Callable, device: torch.device) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A tensor detector as ``frames.Networks.detect_fn`` (numpy blob in, numpy heads out): for
    the host passes (the tiles of ``detection.detect_tiles``)."""
    return lambda blob: [host(h) for h in detect_fn(torch.from_numpy(np.ascontiguousarray(blob)).to(device))]


@dataclass
class DecodedFrame:
    """A frame decoded onto a device: uint8 [3, H, W] RGB ``frame``, its format, its alpha
    (uint8 [H, W] on the host, PNG/WebP/TIFF inputs with one, else None) and whether it is grey."""

    frame: torch.Tensor
    fmt: str
    alpha: np.ndarray | None
    grey: bool


def decode_frame(data: bytes | np.ndarray, device: str | torch.device = "cpu", max_pixels: int = MAX_PIXELS
                 ) -> DecodedFrame:
    """Decode onto ``device`` after ``codec.check_image``'s checks (format, truncation, size).

    A JPEG without EXIF goes through torchvision's ``decode_jpeg`` (nvJPEG on CUDA) where
    torchvision is installed; anything else, or a JPEG it cannot read (CMYK, arithmetic
    coding), through ``codec.decode_image`` on the host and one copy up.

    Raises:
        codec.ImageError: as ``codec.decode_image``.
    """
    buf = as_buffer(data)
    fmt, _, _ = check_image(buf, max_pixels)
    frame = torch_ops.decode_jpeg(buf, device) if fmt == "jpeg" and b"Exif" not in buf[:65536].tobytes() else None
    if frame is not None:
        return DecodedFrame(frame, fmt, None, torch_ops.is_grey(frame))
    d = decode_image(buf, max_pixels, alpha=True)
    return DecodedFrame(torch_ops.from_bgr(d.bgr, device), d.fmt, d.alpha, d.grey)


def find_faces(frame: torch.Tensor, nets: TensorNetworks, s: DetectSettings, det_thresh: float = 0.0) -> Detections:
    """``frames.find_faces`` on a device frame: SCRFD on the device's letterbox, its heads decoded
    on the host; the close-up pass letterboxes on the device, the tiled pass (elongated images)
    on a host copy of the frame."""
    det_hw = (s.det_size, s.det_size)
    blob, scale = torch_ops.letterbox_blob(frame, det_hw)
    heads = [host(h) for h in nets.detect_fn(blob)]
    thresh = det_thresh or s.det_thresh
    dets = decode_scrfd(heads, det_hw, scale, thresh, s.nms_thresh)
    if not s.close_up_retry:
        return dets
    h, w = frame.shape[1:]
    if len(tile_windows(h, w, s.det_size)):
        return detect_stage(heads, det_hw, scale, thresh, s.nms_thresh, torch_ops.to_bgr(frame),
                            host_detector(nets.detect_fn, frame.device))
    if len(dets):
        return dets

    def padded_blob(py: int, px: int):
        padded = torch.nn.functional.pad(frame, (px, px, py, py))
        return torch_ops.letterbox_blob(padded, det_hw)

    return close_up_pass((h, w), padded_blob, lambda b: [host(x) for x in nets.detect_fn(b)], det_hw, thresh,
                         s.nms_thresh)


def _blob(crops: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``align.crops_to_blob`` for RGB float crops [N, 3, S, S] (0-255): (x - mean) / std."""
    return (crops - mean) / std


def embeddings(frames: list[torch.Tensor], kps: np.ndarray, nets: TensorNetworks) -> np.ndarray:
    """float32 [len(frames) N, 512] normed ArcFace embeddings of the N faces at ``kps`` (float
    [N, 5, 2]) of each frame in turn (frame after frame), one batched recognizer pass."""
    kps = np.asarray(kps, np.float32).reshape(-1, 5, 2)
    if kps.shape[0] == 0:
        return np.zeros((0, 512), np.float32)
    mats = np.stack([estimate_norm(k, EMBED_SIZE) for k in kps])
    crops = torch.cat([torch_ops.crops(f, mats, EMBED_SIZE) for f in frames])
    return normed(host(chunked(nets.embed_fn, nets.embed_batch, _blob(crops, ARCFACE_MEAN, ARCFACE_STD),
                               concat=torch.cat)))


def swap_frame(data: bytes | np.ndarray, opts: SwapOptions, nets: TensorNetworks, s: DetectSettings,
               source_latents: np.ndarray, reference: np.ndarray | None = None,
               source_embeddings: np.ndarray | None = None, face_kps: np.ndarray | None = None,
               check: Callable[[], None] | None = None, device: str | torch.device = "cpu") -> FrameResult:
    """``pipeline.frames.swap_frame`` with the frame's pixels on ``device``: the same arguments,
    options, result and errors.

    ``FrameResult.aligned.crops`` holds one row per swapped face and no pixels ([M, 0, 0, 3]):
    the crops stay on the device.
    """
    if check is not None:
        check()
    device = torch.device(device)
    t = Timer(sync=(lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None)
    with torch.inference_mode():
        with t.step("decode"):
            d = decode_frame(data, device, s.max_pixels)
        frame = d.frame
        h, w = frame.shape[1:]
        content = {}
        policy = content_policy(opts)
        if policy is not None:
            with t.step("content"):
                run = t.network("content", nets.content_fn or no_gate, check)
                decision = decide(host(run(torch_ops.content_blob(frame, CONTENT_SIZE))), policy)[0]
            content = decision.result_fields()
            if decision.refused:
                return FrameResult(b"", "", Detections.empty(), nothing_aligned(), None, False, w, h, d.grey,
                                   t.rounded(), content)
        timed = TensorNetworks(t.network("detector", nets.detect_fn, check) if nets.detect_fn else None,
                               t.network("recognizer", nets.embed_fn, check),
                               t.network("swapper", nets.swap_fn, check) if nets.swap_fn else None,
                               nets.embed_batch, nets.swap_batch)
        aligned, dets = _align(frame, opts, timed, s, reference, face_kps, t)
        m = len(aligned.selected)
        src = np.asarray(source_latents, np.float32).reshape(-1, 512)
        latents = latents_for(aligned.latent_index, src) if m else np.zeros((0, 512), np.float32)
        sources = source_rows(source_embeddings, src.shape[0])
        quality, watermarked, swapped = None, False, False
        if m:
            kps = aligned.dets.kps[aligned.selected]
            original = frame.clone() if opts.face_quality else None
            with t.step("swap"):
                fakes, mats = _swapped(frame, aligned.affines, latents, timed, opts.pixel_boost)
            with t.step("paste"):
                for fake, mat in zip(fakes, mats):
                    torch_ops.paste_back(frame, fake, mat)
                if d.grey:
                    frame = torch_ops.luma(frame).expand(3, h, w).contiguous()
            swapped = True
            if opts.face_quality:
                with t.step("quality"):
                    quality = quality_figures(embeddings([original, frame], kps, timed), aligned.selected,
                                              aligned.latent_index, sources)
            if opts.badge:
                with t.step("badge"):
                    torch_ops.burn_badge(frame)
            if opts.watermark:
                with t.step("watermark"):
                    watermarked = torch_ops.embed_watermark(frame, opts.watermark)
        elif opts.face_quality:
            quality = []
        with t.step("encode"):
            out, fmt = _encode(frame, data, d, opts, swapped)
    return FrameResult(out, fmt, dets, aligned, quality, watermarked, w, h, d.grey, t.rounded(), content)


def _align(frame: torch.Tensor, opts: SwapOptions, nets: TensorNetworks, s: DetectSettings,
           reference: np.ndarray | None, face_kps: np.ndarray | None, t: Timer) -> tuple[Aligned, Detections]:
    """The faces to swap (``Aligned``, crops left on the device) and every face found."""
    if face_kps is not None:
        dets = caller_kps(face_kps)
        idx = np.arange(len(dets), dtype=np.int64)
        return _aligned(dets, idx, np.zeros_like(idx), False, False), dets
    with t.step("detect"):
        dets = find_faces(frame, nets, s, opts.det_thresh)
    with t.step("align"):
        if opts.track is not None:  # a live stream's target: the face it continues into, or none
            found = TrackHint.parse(opts.track).follow(dets)
            if found is None:
                return _aligned(dets, np.zeros((0,), np.int64), np.zeros((0,), np.int64), False, False), dets
            index, smoothed = found  # cropped at its smoothed key points, as ``frames.followed``
            return _aligned(dets, np.array([index], np.int64), np.zeros((1,), np.int64), False, False,
                            smoothed[None]), dets
        ref = reference if reference is not None and np.asarray(reference).size else None
        emb = None
        if opts.selection in ("similar", "pairs") and len(dets):
            emb = embeddings([frame], dets.kps, nets)
        sel = select_faces(dets, opts, s.max_faces, emb, ref)
        return _aligned(dets, sel.indices, sel.latent_index, sel.truncated, sel.no_match), dets


def _aligned(dets: Detections, selected, latent_index, truncated: bool, no_match: bool,
             crop_kps: np.ndarray | None = None) -> Aligned:
    """``Aligned`` with the crops' matrices (at ``crop_kps``, default the selected faces' key
    points) and no crop pixels."""
    m = len(selected)
    kps = dets.kps[np.asarray(selected, np.int64)] if crop_kps is None else crop_kps
    affines = np.stack([estimate_norm(k, SWAP_SIZE) for k in kps]).astype(np.float32) if m \
        else np.zeros((0, 2, 3), np.float32)
    return Aligned(dets, np.asarray(selected, np.int64), np.asarray(latent_index, np.int64),
                   np.zeros((m, 0, 0, 3), np.uint8), affines, truncated, no_match)


def _swapped(frame: torch.Tensor, affines: np.ndarray, latents: np.ndarray, nets: TensorNetworks,
             pixel_boost: int) -> tuple[torch.Tensor, np.ndarray]:
    """``stages.swapped_faces`` on the device: (float32 [M, 3, S, S] RGB 0-255 swapped faces,
    S = pixel_boost; float64 [M, 2, 3] frame -> face matrices, ``affines`` (the 128 crops') times
    S / 128)."""
    n = boost_factor(int(pixel_boost))
    mats = np.asarray(affines, np.float64).reshape(-1, 2, 3) * n
    crops = torch_ops.crops(frame, mats, SWAP_SIZE * n)
    lat = torch.from_numpy(np.repeat(np.ascontiguousarray(latents, np.float32), n * n, axis=0)).to(frame.device)
    pred = chunked(nets.swap_fn, nets.swap_batch, _blob(torch_ops.explode(crops, n), SWAP_MEAN, SWAP_STD), lat,
                   concat=torch.cat)
    return torch_ops.implode(torch_ops.swapper_output(pred), n), mats


def _encode(frame: torch.Tensor, data, d: DecodedFrame, opts: SwapOptions, swapped: bool) -> tuple[bytes, str]:
    """``stages.encode_stage``: the input's own bytes when nothing was swapped and the format
    stays; a JPEG encoded on the device; other formats (with the alpha kept) by OpenCV."""
    fmt = output_format(opts, d.fmt)
    if not swapped and fmt == d.fmt:
        return bytes(as_buffer(data)), fmt
    if fmt == "jpeg":
        return torch_ops.encode_jpeg(frame, opts.quality), fmt
    alpha = d.alpha if d.alpha is not None and d.alpha.size else None
    return encode_image(torch_ops.to_bgr(frame), fmt, opts.quality, alpha), fmt


def host_networks(nets: TensorNetworks, device: str | torch.device) -> Networks:
    """The same networks as ``frames.Networks`` (numpy in and out), for the entry points this
    module does not cover (``face_embed``) and for comparisons."""
    device = torch.device(device)

    def up(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Networks(host_detector(nets.detect_fn, device) if nets.detect_fn else None,
                    lambda blob: host(nets.embed_fn(up(blob))),
                    (lambda blob, lat: host(nets.swap_fn(up(blob), up(lat)))) if nets.swap_fn else None,
                    nets.embed_batch, nets.swap_batch,
                    (lambda blob: host(nets.content_fn(up(blob)))) if nets.content_fn else None)
