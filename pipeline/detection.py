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

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
        )


def letterbox(img_bgr: np.ndarray, det_size: tuple[int, int] = (640, 640)) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio and pad bottom/right with black, as SCRFD.detect does.

    Args:
        img_bgr: uint8 [H, W, 3] BGR image, H and W >= 1.
        det_size: detector input (width, height) in pixels.

    Returns:
        (det_img, det_scale): uint8 [det_h, det_w, 3] BGR and the scale factor
        (detector pixels per original pixel).
    """
    h, w = img_bgr.shape[:2]
    im_ratio = float(h) / w
    model_ratio = float(det_size[1]) / det_size[0]
    if im_ratio > model_ratio:
        new_height = det_size[1]
        new_width = int(new_height / im_ratio)
    else:
        new_width = det_size[0]
        new_height = int(new_width * im_ratio)
    # A 1-pixel-high panorama would round to zero rows: keep at least one.
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    det_scale = float(new_height) / h
    resized = cv2.resize(img_bgr, (new_width, new_height))
    det_img = np.zeros((det_size[1], det_size[0], 3), dtype=np.uint8)
    det_img[:new_height, :new_width, :] = resized
    return det_img, det_scale


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
    det_thresh: float = 0.5,
    nms_thresh: float = 0.4,
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
