"""The content gate's building blocks: an intimate-imagery detector's contract, its pre- and
post-processing, and the policy that turns its scores into a refusal (issue 21).

**The detector contract** (``nudenet`` 3.4.2's ``320n.onnx``, an Ultralytics YOLOv8n detector
with 18 classes; any other ONNX file with the same contract can replace it):

- input: float32 ``[N, 3, 320, 320]`` (``INPUT_SIZE``), values in [0, 1]: the image padded
  bottom and right with black to a square, resized to 320 x 320 (bilinear, OpenCV
  ``INTER_LINEAR``), divided by 255, in **BGR** channel order for a BGR image. That is what
  ``nudenet`` 3.4.2 feeds: its ``_read_image`` converts with ``cv2.COLOR_RGBA2BGR``, which on a
  3-channel image swaps blue and red, and then ``cv2.dnn.blobFromImage(..., swapRB=True)``
  swaps them back (``preprocess`` reproduces it; ``tests/unit/test_content.py`` checks that
  the blob and the outputs equal the package's own);
- output: float32 ``[N, 4 + 18, A]`` (YOLOv8 head, A = 2100 anchors at 320 x 320): rows 0-3
  the box centre x, centre y, width, height in input pixels, rows 4-21 the per-class scores in
  [0, 1] (sigmoid already applied) in the order of ``LABELS``.

**The decision** (``refused``, ``decide``): a class's score is its highest score over every
anchor of the raw output (``class_scores``), before any non-maximum suppression or
arg-max; an image is refused when any class of the policy reaches the policy's threshold.
That is stricter than reading ``nudenet``'s own detections (which keep only the winning class
of each anchor, scored at least 0.2): a refused class is counted even where another class wins
its anchor. ``detections`` gives the package's own list (equal to ``NudeDetector.detect``) for
logs and tests; the gate does not need it.

Plain NumPy and OpenCV; no ONNX Runtime or Triton import (the Python stages, the generator and
the tests share it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Side of the detector's square input, pixels (``nudenet`` ``inference_resolution``).
INPUT_SIZE = 320
#: The detector's classes in output order (``nudenet`` 3.4.2 ``__labels``; the ONNX file's
#: ``names`` metadata says the same).
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
#: Output rows: 4 box values, then one score per class.
OUTPUT_ROWS = 4 + len(LABELS)
#: Anchors of the YOLOv8 head at 320 x 320 (strides 8, 16, 32: 40^2 + 20^2 + 10^2).
ANCHORS = sum((INPUT_SIZE // s) ** 2 for s in (8, 16, 32))
#: The contract's tensors without the batch dimension (``repository.generate`` writes them).
INPUT_DIMS = (3, INPUT_SIZE, INPUT_SIZE)
OUTPUT_DIMS = (OUTPUT_ROWS, ANCHORS)
#: ``nudenet``'s post-processing constants: an anchor is a candidate at this winning score, then
#: OpenCV NMS with this score threshold and IoU.
NUDENET_MIN_SCORE, NUDENET_NMS_SCORE, NUDENET_NMS_IOU = 0.2, 0.25, 0.45

#: Classes refused by default: exposed intimate body parts. Covered parts, faces, feet, belly,
#: armpits and the male breast are not refused (a swimsuit or a beach photo is a normal photo).
DEFAULT_REFUSED: tuple[str, ...] = ("FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                                    "BUTTOCKS_EXPOSED", "ANUS_EXPOSED")
#: Default score threshold, 0..1: a refused class at or above it refuses the image. Measured on
#: the shared photos and every frame of the shared clips (``tests/unit/test_content.py`` prints
#: it): the highest refused-class score on a photo is 0.21, on a video frame 0.466 (a hand at a
#: chin in ``video_whitehouse_hamilton_640x360.mp4`` read as MALE_GENITALIA_EXPOSED, which
#: nudenet itself reports as a detection). 0.5 would leave that normal frame a 0.03 margin, so
#: the default is 0.6. Its recall on intimate images is not measured here (no such image is made
#: or stored): an operator who has a vetted evaluation set should set the threshold from it.
DEFAULT_THRESHOLD = 0.6
#: Name of the default policy (what a refusal names; never the classes' scores).
DEFAULT_POLICY_NAME = "intimate-imagery"


@dataclass(frozen=True)
class ContentPolicy:
    """What the gate refuses.

    Attributes:
        refused: class names (from ``LABELS``) that refuse an image.
        threshold: score in (0, 1]; a refused class scoring at least this refuses.
        name: the policy's public name (in the refusal's answer and metrics).

    Raises:
        ValueError: an unknown or empty class list, or a threshold outside (0, 1].
    """

    refused: tuple[str, ...] = DEFAULT_REFUSED
    threshold: float = DEFAULT_THRESHOLD
    name: str = DEFAULT_POLICY_NAME

    def __post_init__(self) -> None:
        refused = tuple(self.refused)
        unknown = [c for c in refused if c not in LABELS]
        if unknown or not refused:
            raise ValueError(f"content policy classes must be a non-empty subset of {', '.join(LABELS)}; "
                             f"unknown: {', '.join(unknown) or '(none given)'}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise ValueError(f"content policy threshold must be in (0, 1], got {self.threshold}")
        object.__setattr__(self, "refused", refused)
        object.__setattr__(self, "threshold", float(self.threshold))

    @classmethod
    def parse(cls, classes: str | Iterable[str], threshold: float, name: str = DEFAULT_POLICY_NAME) -> ContentPolicy:
        """From settings: ``classes`` comma-separated (spaces ignored) or a list."""
        items = classes.split(",") if isinstance(classes, str) else list(classes)
        return cls(tuple(c.strip().upper() for c in items if c.strip()), threshold, name)

    def to_options(self) -> dict:
        """The policy as the swap ensembles' ``options`` carry it (``policy_from_options`` reads it back)."""
        return {"name": self.name, "classes": list(self.refused), "threshold": self.threshold}

    def describe(self) -> str:
        """One line for logs and /readyz, e.g. ``intimate-imagery: ANUS_EXPOSED at >= 0.6``."""
        return f"{self.name}: {', '.join(self.refused)} at >= {self.threshold:g}"


def policy_from_options(options: Mapping) -> ContentPolicy | None:
    """The policy a stage applies, from its request's ``options`` JSON (key ``content_policy``).

    Args:
        options: the parsed ``options`` of a swap request.

    Returns:
        None when ``content_policy`` is ``"off"`` (the gateway's explicit setting); the default
        ``ContentPolicy()`` when the key is absent (a caller that says nothing gets the gate);
        else the policy it describes (``ContentPolicy.to_options``).

    Raises:
        ValueError: a malformed policy (unknown classes, a threshold outside (0, 1]).
    """
    raw = options.get("content_policy")
    if raw is None:
        return ContentPolicy()
    if raw == "off":
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"content_policy must be \"off\" or {{name, classes, threshold}}, got {raw!r}")
    return ContentPolicy.parse(raw.get("classes", DEFAULT_REFUSED), float(raw.get("threshold", DEFAULT_THRESHOLD)),
                               str(raw.get("name", DEFAULT_POLICY_NAME)))


@dataclass(frozen=True)
class Letterbox:
    """How ``preprocess`` mapped an image: its size and the black padding added right and below."""

    width: int
    height: int
    pad_x: int
    pad_y: int


def preprocess(bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """The detector's input for one image, exactly as ``nudenet`` 3.4.2 makes it.

    Args:
        bgr: uint8 [H, W, 3] image in BGR order (OpenCV's), H, W >= 1.

    Returns:
        (blob, letterbox): float32 [1, 3, 320, 320] in [0, 1], BGR channel order (see the module
        docstring); the padding, for ``detections``.

    Raises:
        ValueError: not a uint8 [H, W, 3] array.
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3 or min(bgr.shape[:2]) < 1:
        raise ValueError(f"expected a uint8 [H, W, 3] BGR image, got {bgr.dtype} {bgr.shape}")
    h, w = bgr.shape[:2]
    side = max(h, w)
    padded = cv2.copyMakeBorder(bgr, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT)
    blob = cv2.dnn.blobFromImage(padded, 1 / 255.0, (INPUT_SIZE, INPUT_SIZE), (0, 0, 0), swapRB=False, crop=False)
    return blob, Letterbox(w, h, side - w, side - h)


def check_output(output: np.ndarray) -> np.ndarray:
    """``output`` as float32 [N, 22, A]; a single [22, A] gets N = 1.

    Raises:
        ValueError: another shape (not a detector of this contract).
    """
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 2:
        out = out[None]
    if out.ndim != 3 or out.shape[1] != OUTPUT_ROWS:
        raise ValueError(f"content detector output must be [N, {OUTPUT_ROWS}, anchors], got {out.shape}")
    return out


def class_scores(output: np.ndarray) -> list[dict[str, float]]:
    """Each image's highest score per class over all anchors.

    Args:
        output: the detector's raw output, float32 [N, 22, A] (or [22, A]).

    Returns:
        N dicts {class name: score in [0, 1]} with every class of ``LABELS``.

    Raises:
        ValueError: a wrong shape (``check_output``).
    """
    top = check_output(output)[:, 4:, :].max(axis=2)
    return [{label: float(s) for label, s in zip(LABELS, row)} for row in top]


def refused(scores_by_class: Mapping[str, float], policy: ContentPolicy = ContentPolicy()) -> bool:
    """True when any class of ``policy.refused`` scores at least ``policy.threshold``.

    Args:
        scores_by_class: {class name: score in [0, 1]} (``class_scores``); a class absent counts 0.
        policy: the ``ContentPolicy``.
    """
    return any(float(scores_by_class.get(c, 0.0)) >= policy.threshold for c in policy.refused)


@dataclass(frozen=True)
class Decision:
    """The gate's answer for one image.

    Attributes:
        refused: True: the image must not be swapped.
        policy: the policy's name (what a refusal may say publicly).
        top_class, top_score: the refused class that scored highest and its score (for logs
            and metrics only; never sent to the caller).
    """

    refused: bool
    policy: str
    top_class: str
    top_score: float

    def result_fields(self) -> dict:
        """What a stage puts into its ``result`` JSON: ``{"content_refused": bool, "content_policy": name}``."""
        return {"content_refused": self.refused, "content_policy": self.policy}


def decide(output: np.ndarray, policy: ContentPolicy = ContentPolicy()) -> list[Decision]:
    """From the detector's raw output to the gate's decision, one per image.

    Args:
        output: float32 [N, 22, A] (or [22, A]), the detector's output for N images.
        policy: the ``ContentPolicy``.

    Returns:
        N ``Decision``.

    Raises:
        ValueError: a wrong shape.
    """
    out = []
    for scores in class_scores(output):
        top = max(policy.refused, key=lambda c: scores[c])
        out.append(Decision(refused(scores, policy), policy.name, top, scores[top]))
    return out


@dataclass(frozen=True)
class Detection:
    """One of ``nudenet``'s detections: class, score, box (x, y, width, height) in image pixels."""

    label: str
    score: float
    box: tuple[int, int, int, int]

    def as_nudenet(self) -> dict:
        """The package's own form: ``{"class", "score", "box": [x, y, w, h]}``."""
        return {"class": self.label, "score": self.score, "box": list(self.box)}


def detections(output: np.ndarray, letterbox: Letterbox) -> list[Detection]:
    """``nudenet`` 3.4.2's post-processing (``_postprocess``), vectorised: per anchor the winning
    class if it scores at least 0.2, boxes scaled to the image and clipped, OpenCV NMS (score
    0.25, IoU 0.45). Equal to ``NudeDetector.detect`` on the same image.

    Args:
        output: the detector's raw output for one image, float32 [1, 22, A] or [22, A].
        letterbox: from ``preprocess`` of that image.

    Raises:
        ValueError: a wrong shape, or more than one image.
    """
    out = check_output(output)
    if out.shape[0] != 1:
        raise ValueError(f"detections takes one image's output, got {out.shape[0]}")
    rows = out[0].T  # [A, 22]
    cls = rows[:, 4:]
    best = cls.max(axis=1)
    keep = np.nonzero(best >= NUDENET_MIN_SCORE)[0]
    if keep.size == 0:
        return []
    rows, best, ids = rows[keep], best[keep], cls[keep].argmax(axis=1)
    # nudenet's arithmetic, in its order and precision (NumPy 1.x turns float32 * int into float64)
    x, y, w, h = (rows[:, k].astype(np.float64) for k in range(4))
    x, y = x - w / 2, y - h / 2
    x = x * (letterbox.width + letterbox.pad_x) / INPUT_SIZE
    y = y * (letterbox.height + letterbox.pad_y) / INPUT_SIZE
    w = w * (letterbox.width + letterbox.pad_x) / INPUT_SIZE
    h = h * (letterbox.height + letterbox.pad_y) / INPUT_SIZE
    x = np.maximum(0, np.minimum(x, letterbox.width))
    y = np.maximum(0, np.minimum(y, letterbox.height))
    w = np.minimum(w, letterbox.width - x)
    h = np.minimum(h, letterbox.height - y)
    boxes = np.stack([x, y, w, h], axis=1)
    idx = cv2.dnn.NMSBoxes(boxes.tolist(), best.tolist(), NUDENET_NMS_SCORE, NUDENET_NMS_IOU)
    return [Detection(LABELS[int(ids[i])], float(best[i]), tuple(int(v) for v in boxes[i]))
            for i in np.asarray(idx, dtype=int).reshape(-1)]


def gate_images(images_bgr: Sequence[np.ndarray], run, policy: ContentPolicy = ContentPolicy()) -> list[Decision]:
    """``decide`` for several images with a detector callable (tests, benchmarks, the gateway's
    checks without Triton).

    Args:
        images_bgr: uint8 [H, W, 3] BGR images.
        run: float32 [1, 3, 320, 320] blob -> float32 [1, 22, A] output (e.g. an onnxruntime session's call).
        policy: the ``ContentPolicy``.
    """
    return [decide(run(preprocess(img)[0]), policy)[0] for img in images_bgr]
