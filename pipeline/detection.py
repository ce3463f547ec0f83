"""SCRFD pre- and post-processing (letterbox, anchor decoding, NMS, face selection).

Numerically this follows insightface 0.7.3 ``model_zoo/scrfd.py`` (``SCRFD.detect`` and
``SCRFD.forward``): same letterbox, same blob normalisation, same anchor layout, same
greedy NMS. Tests compare boxes and key points against that package on real photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: SCRFD input normalisation, from insightface scrfd.py: (x - 127.5) / 128, RGB order.
DET_MEAN = 127.5
DET_STD = 128.0
#: Feature-map strides and anchors per cell of the 9-output SCRFD exports (insightface).
#: insightface's ``FaceAnalysis`` defaults: SCRFD's square input side (pixels), the face score
#: threshold and the NMS IoU threshold.
DET_SIZE = 640
DET_THRESH = 0.5
NMS_THRESH = 0.4
#: At most this many faces are swapped in one image (the rest are left alone).
MAX_FACES = 64
STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
#: Canonical names of the nine SCRFD heads as our decoder sees them, in graph order
#: (scores 8/16/32, box distances 8/16/32, key points 8/16/32).
HEAD_NAMES = tuple(f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in STRIDES)


@dataclass
class Detections:
    """Faces found in one image, in insightface's order (score, descending, after NMS).

    Attributes:
        boxes: float32 [N, 4] x1, y1, x2, y2 in pixels of the original image.
        scores: float32 [N] detection scores in [0, 1].
        kps: float32 [N, 5, 2] key points (left eye, right eye, nose, left and right mouth
            corner; "left" as seen in the image) in pixels of the original image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    kps: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, idx: np.ndarray | list[int]) -> "Detections":
        """Return the detections at the given row indices, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Detections(self.boxes[idx], self.scores[idx], self.kps[idx])

    def scaled(self, factor: float) -> "Detections":
        """These detections in an image ``factor`` times larger on each side (scores kept)."""
        return Detections(self.boxes * np.float32(factor), self.scores, self.kps * np.float32(factor))

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )


def _fitted(h: int, w: int, det_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an h x w image resized into ``det_size`` keeping its aspect ratio,
    rounded down as SCRFD.detect does (at least 1 pixel each)."""
    im_ratio = float(h) / w
    model_ratio = float(det_size[1]) / det_size[0]
    if im_ratio > model_ratio:
        new_height = det_size[1]
        new_width = int(new_height / im_ratio)
    else:
        new_width = det_size[0]
        new_height = int(new_width * im_ratio)
    # A 1-pixel-high panorama would round to zero rows: keep at least one.
    return max(new_width, 1), max(new_height, 1)


def letterbox(img_bgr: np.ndarray, det_size: tuple[int, int] = (DET_SIZE, DET_SIZE)) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio and pad bottom/right with black, as SCRFD.detect does.

    Args:
        img_bgr: uint8 [H, W, 3] BGR image, H and W >= 1.
        det_size: detector input (width, height) in pixels.

    Returns:
        (det_img, det_scale): uint8 [det_h, det_w, 3] BGR and the scale factor
        (detector pixels per original pixel).
    """
    h = img_bgr.shape[0]
    new_width, new_height = _fitted(h, img_bgr.shape[1], det_size)
    resized = cv2.resize(img_bgr, (new_width, new_height))
    det_img = np.zeros((det_size[1], det_size[0], 3), dtype=np.uint8)
    det_img[:new_height, :new_width, :] = resized
    return det_img, float(new_height) / h


#: A padding pixel's value in the detector's blob: black, (0 - 127.5) / 128.
_PAD_VALUE = np.float32((0.0 - DET_MEAN) / DET_STD)


def letterbox_blob(img_bgr: np.ndarray, det_size: tuple[int, int] = (DET_SIZE, DET_SIZE)) -> tuple[np.ndarray, float]:
    """``detector_blob(letterbox(img_bgr, det_size)[0])`` and its scale, equal to the last bit,
    without the padded uint8 image: only the resized picture is normalised, the padding is
    filled with its constant (at 16:9 that is 44% of a square input), so a 1280x720 frame
    costs about a third of the two-step way.

    Returns:
        (blob, det_scale): float32 [1, 3, det_h, det_w] RGB, (x - 127.5) / 128; the scale.
    """
    h = img_bgr.shape[0]
    new_width, new_height = _fitted(h, img_bgr.shape[1], det_size)
    resized = cv2.resize(img_bgr, (new_width, new_height))
    blob = np.empty((1, 3, det_size[1], det_size[0]), np.float32)
    blob[0, :, new_height:, :] = _PAD_VALUE
    blob[0, :, :new_height, new_width:] = _PAD_VALUE
    for c in range(3):  # RGB planes from BGR pixels
        plane = blob[0, c, :new_height, :new_width]
        np.subtract(resized[:, :, 2 - c], np.float32(DET_MEAN), out=plane, dtype=np.float32)
        plane *= np.float32(1.0 / DET_STD)
    return blob, float(new_height) / h


def detector_blob(det_img: np.ndarray) -> np.ndarray:
    """float32 [1, 3, H, W] RGB blob, (x - 127.5) / 128 (insightface SCRFD.forward)."""
    size = (det_img.shape[1], det_img.shape[0])
    return cv2.dnn.blobFromImage(det_img, 1.0 / DET_STD, size, (DET_MEAN, DET_MEAN, DET_MEAN), swapRB=True)


_CENTER_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _anchor_centers(height: int, width: int, stride: int) -> np.ndarray:
    key = (height, width, stride)
    centers = _CENTER_CACHE.get(key)
    if centers is None:
        centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
        centers = (centers * stride).reshape((-1, 2))
        centers = np.stack([centers] * NUM_ANCHORS, axis=1).reshape((-1, 2))
        if len(_CENTER_CACHE) < 64:
            _CENTER_CACHE[key] = centers
    return centers


def nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Greedy NMS on float32 [N, 5] (x1, y1, x2, y2, score); insightface's +1 area convention."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def decode_scrfd(
    heads: list[np.ndarray],
    input_hw: tuple[int, int],
    det_scale: float,
    det_thresh: float = DET_THRESH,
    nms_thresh: float = NMS_THRESH,
) -> Detections:
    """Decode the nine SCRFD heads into faces in original-image pixels.

    Args:
        heads: the 9 raw outputs in graph order (scores, boxes, key points; strides
            8/16/32). Each is [K, C] or batched [1, K, C], float32.
        input_hw: detector input (height, width) in pixels.
        det_scale: the scale returned by :func:`letterbox`.
        det_thresh: minimum score (insightface default 0.5).
        nms_thresh: IoU above which the weaker box is dropped (insightface default 0.4).

    Returns:
        Detections ordered by score, descending.
    """
    if len(heads) != 9:
        raise ValueError(f"SCRFD with key points has 9 outputs, got {len(heads)}")
    heads = [h[0] if h.ndim == 3 else h for h in heads]
    scores_l, boxes_l, kps_l = [], [], []
    for idx, stride in enumerate(STRIDES):
        scores = heads[idx]
        bbox_preds = heads[idx + 3] * stride
        kps_preds = heads[idx + 6] * stride
        height, width = input_hw[0] // stride, input_hw[1] // stride
        centers = _anchor_centers(height, width, stride)
        pos = np.where(scores >= det_thresh)[0]
        c = centers[pos]
        b = bbox_preds[pos]
        boxes_l.append(np.stack([c[:, 0] - b[:, 0], c[:, 1] - b[:, 1], c[:, 0] + b[:, 2], c[:, 1] + b[:, 3]], axis=-1))
        k = kps_preds[pos]
        kx = c[:, 0:1] + k[:, 0::2]
        ky = c[:, 1:2] + k[:, 1::2]
        kps_l.append(np.stack([kx, ky], axis=-1))
        scores_l.append(scores[pos])
    scores = np.vstack(scores_l).ravel()
    if scores.size == 0:
        return Detections.empty()
    order = scores.argsort()[::-1]
    boxes = np.vstack(boxes_l) / det_scale
    kps = np.vstack(kps_l) / det_scale
    pre_det = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)[order]
    keep = nms(pre_det, nms_thresh)
    det = pre_det[keep]
    return Detections(
        det[:, :4].astype(np.float32), det[:, 4].astype(np.float32), kps[order][keep].astype(np.float32)
    )


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas in square pixels of float [N, 4] x1, y1, x2, y2 boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


#: Tiled detection (see ``tile_windows``): tile only where the windows see faces more than this
#: many times larger than the whole-image letterbox does.
TILE_MIN_GAIN = 2.5
#: At most this many windows per image (extra detector runs).
TILE_MAX_WINDOWS = 16
#: Neighbouring windows overlap by at least this fraction of a window's length ...
TILE_OVERLAP = 0.25
#: ... and by at least the size (pixels at the detector input) of a face that the whole-image
#: pass reliably finds (measured on det_2.5g with a portrait scaled down: a face box 24 px
#: high scores 0.76, 17 px 0.61, under 14 px nothing), so that a face too small for that pass
#: is whole in some window.
TILE_FACE_FLOOR = 24


def tile_windows(height: int, width: int, det_size: int = DET_SIZE) -> np.ndarray:
    """The overlapping windows along the long side of an image too elongated for one letterbox.

    Rule (long side ``L``, short side ``S``, detector input ``D`` x ``D``):

    - window length ``W0 = max(S, D / 2)``: about square (S x S), but never magnified more than
      2x, so a face filling the short side of a thin strip stays well below the detector's
      frame (SCRFD misses faces that fill it);
    - gain ``L / W0`` (how much larger a face is in a window than in the whole-image letterbox,
      both letterboxed to D): no windows when it is <= ``TILE_MIN_GAIN`` (2.5) or ``L <= W0``;
    - overlap between neighbours ``>= max(TILE_OVERLAP * W, TILE_FACE_FLOOR * L / D)``: a face
      on a boundary smaller than the overlap is whole in one window, and a larger one is found
      by the whole-image pass;
    - the fewest windows of length ``W0`` that cover ``L`` with that overlap, spread evenly;
      above ``TILE_MAX_WINDOWS`` (16) windows, 16 longer ones (``W > W0``, less gain).

    Args:
        height, width: image size in pixels.
        det_size: detector input side in pixels.

    Returns:
        int64 [K, 4] windows x0, y0, x1, y1 (pixels, end exclusive) spanning the whole short
        side, ordered along the long side; K == 0 (no tiling) or 3 <= K <= 16.
    """
    long_side, short_side = max(height, width), min(height, width)
    w0 = max(short_side, det_size / 2.0)
    if short_side < 1 or long_side / w0 <= TILE_MIN_GAIN:
        return np.zeros((0, 4), np.int64)
    floor = TILE_FACE_FLOOR * long_side / det_size  # overlap wanted, image pixels
    length = w0
    for n in range(2, TILE_MAX_WINDOWS + 1):
        # n windows of length W with overlap max(qW, floor) cover n*W - (n-1)*overlap pixels.
        length = max(w0, long_side / (n - (n - 1) * TILE_OVERLAP), (long_side + (n - 1) * floor) / n)
        if length <= w0:
            break
    length = min(int(np.ceil(length)), long_side)
    starts = np.round(np.linspace(0, long_side - length, n)).astype(np.int64)
    ends = starts + length
    zeros, full = np.zeros_like(starts), np.full_like(starts, short_side)
    if width >= height:
        return np.stack([starts, zeros, ends, full], axis=1)
    return np.stack([zeros, starts, full, ends], axis=1)


def merge_detections(parts: list[Detections], nms_thresh: float = NMS_THRESH) -> Detections:
    """Union of several detection sets of one image, greedy NMS (insightface's, ``nms_thresh``)
    across them, ordered by score descending as insightface orders."""
    boxes = np.concatenate([p.boxes for p in parts]).astype(np.float32)
    scores = np.concatenate([p.scores for p in parts]).astype(np.float32)
    kps = np.concatenate([p.kps for p in parts]).astype(np.float32)
    if scores.size == 0:
        return Detections.empty()
    order = scores.argsort()[::-1]
    pre = np.hstack((boxes, scores[:, None]))[order]
    keep = order[nms(pre, nms_thresh)]
    return Detections(boxes[keep], scores[keep], kps[keep])


def detect_tiles(image: np.ndarray, first: Detections, detect_fn, det_size: tuple[int, int] = (DET_SIZE, DET_SIZE),
                 det_thresh: float = DET_THRESH, nms_thresh: float = NMS_THRESH) -> Detections | None:
    """The tiled pass: detect on each window of :func:`tile_windows` (letterboxed to
    ``det_size`` like the whole image) and merge with the whole-image pass ``first``.

    Which pass speaks for which face (along the long side; O = the smallest overlap between
    neighbouring windows, which is >= 24 detector pixels of the whole-image pass):

    - a window keeps the faces whose box lies inside it, not across an edge it shares with a
      neighbour (a face cut there is whole in the neighbour when it is no longer than O);
    - the whole-image pass keeps only the faces longer than O: shorter ones are whole in some
      window, seen there at least 2.5x larger, and near the detector's floor the whole-image
      boxes are off by up to half a face (measured: 15 px on 22 px faces, IoU < 0.4 with the
      window's box, so NMS would keep both: one face swapped twice);
    - the union goes through greedy NMS (``nms_thresh``), score descending, as insightface.

    Args:
        image: uint8 [H, W, 3] BGR, the full frame.
        first: the whole-image pass on ``image`` (image pixels).
        detect_fn: the detector, float32 [1, 3, det_h, det_w] blob -> its 9 heads (called
            once per window, at most ``TILE_MAX_WINDOWS`` times).
        det_size: detector input (width, height) in pixels.
        det_thresh, nms_thresh: as :func:`decode_scrfd`, applied in every window.

    Returns:
        None when the image is not tiled (no window; the detector is not called); else the
        merged Detections in image pixels (boxes float32 [N, 4], scores [N], kps [N, 5, 2]),
        score descending.
    """
    windows = tile_windows(image.shape[0], image.shape[1], min(det_size))
    if len(windows) == 0:
        return None
    axis = 0 if image.shape[1] >= image.shape[0] else 1  # long side: x (0) or y (1)
    lo, hi = windows[:, axis], windows[:, axis + 2]
    overlap = float((hi[:-1] - lo[1:]).min())
    extent = first.boxes[:, axis + 2] - first.boxes[:, axis]
    parts = [first.take(np.where(extent > overlap)[0])]
    last = len(windows) - 1
    for i, (x0, y0, x1, y1) in enumerate(windows):
        blob, scale = letterbox_blob(image[y0:y1, x0:x1], det_size)
        found = decode_scrfd(detect_fn(blob), (det_size[1], det_size[0]), scale,
                             det_thresh, nms_thresh)
        offset = np.array([x0, y0], np.float32)
        b_lo, b_hi = found.boxes[:, axis] + offset[axis], found.boxes[:, axis + 2] + offset[axis]
        keep = np.where(((b_lo >= lo[i]) | (i == 0)) & ((b_hi <= hi[i]) | (i == last)))[0]
        parts.append(Detections(found.boxes[keep] + np.tile(offset, 2), found.scores[keep],
                                found.kps[keep] + offset))
    return merge_detections(parts, nms_thresh)
