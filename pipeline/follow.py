"""One tracked face followed inside the entry point: a live stream's frame detected and swapped
in one call (``SwapOptions.track``), and the One-Euro filter both sides share.

The gateway's ``media.tracking.FaceTracker`` decides which face a stream swaps. When its target
was seen in the previous frame, the gateway sends ``face_swap`` that track's box and filter state
(a :class:`TrackHint`); the entry point detects, takes the face whose box overlaps the target's
most (IoU at least the tracker's threshold), smooths its key points with the same filter and
swaps it, all in the one call. The gateway then runs its tracker on the faces returned and keeps
the frame only when the tracker chose that very face (the same key points to the bit: same code,
same float64 inputs); otherwise it swaps again with the tracker's key points, as two calls did
(``gateway.core.stream``). So the choice stays the tracker's, and a frame whose target continues
costs one decode and one hop instead of two.

One-Euro filter: Casiez, Roussel, Vogel, "1 Euro Filter", CHI 2012.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.detection import Detections


class OneEuro:
    """One-Euro filter over an array signal (here [5, 2] key points, pixels).

    Args:
        min_cutoff: cut-off frequency at rest, Hz (lower = smoother when still).
        beta: speed coefficient (higher = less lag when moving).
        d_cutoff: cut-off for the derivative, Hz.
    """

    def __init__(self, min_cutoff: float = 1.5, beta: float = 0.02, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: float | np.ndarray, dt: float) -> float | np.ndarray:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None or self.t is None or t <= self.t:
            self.x, self.dx, self.t = x, np.zeros_like(x), t
            return x.astype(np.float32)
        dt = t - self.t
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx), dt)
        self.x = a * x + (1 - a) * self.x
        self.t = t
        return self.x.astype(np.float32)

    def state(self) -> dict | None:
        """The filter as JSON (exact: Python floats are written in full), None before its first sample."""
        if self.x is None or self.t is None:
            return None
        return {"x": self.x.tolist(), "dx": self.dx.tolist(), "t": self.t, "min_cutoff": self.min_cutoff,
                "beta": self.beta, "d_cutoff": self.d_cutoff}

    @classmethod
    def from_state(cls, state: dict) -> OneEuro:
        """A copy of a filter from :meth:`state`."""
        f = cls(float(state["min_cutoff"]), float(state["beta"]), float(state["d_cutoff"]))
        f.x, f.dx, f.t = np.asarray(state["x"], np.float64), np.asarray(state["dx"], np.float64), float(state["t"])
        return f


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes (0 when the union is empty)."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class TrackHint:
    """``SwapOptions.track``: the target track as the gateway's tracker left it.

    Attributes:
        box: float [4] x1, y1, x2, y2 pixels, the target's box in the previous frame.
        iou: the tracker's association threshold (IoU in [0, 1]).
        t: this frame's time, seconds.
        filter: the target's One-Euro state (``OneEuro.state``), or None for raw key points
            (smoothing off).
    """

    box: tuple[float, float, float, float]
    iou: float
    t: float
    filter: dict | None = None

    @classmethod
    def parse(cls, raw: object) -> TrackHint:
        """From the option's JSON value.

        Raises:
            ValueError: not an object with a finite ``box`` of 4 numbers, ``iou`` in [0, 1], a
                finite ``t``, and ``filter`` null or an object with ``x`` and ``dx`` of [5, 2],
                finite ``t`` and positive cut-offs.
        """
        if not isinstance(raw, dict) or set(raw) - {"box", "iou", "t", "filter"}:
            raise ValueError('track must be an object {"box", "iou", "t", "filter"}')
        box = np.asarray(raw.get("box"), np.float64)
        t, thresh = float(raw.get("t", math.nan)), float(raw.get("iou", math.nan))
        if box.shape != (4,) or not np.isfinite(box).all() or not math.isfinite(t) or not 0.0 <= thresh <= 1.0:
            raise ValueError("track needs a finite box [x1, y1, x2, y2], a finite t and iou in [0, 1]")
        f = raw.get("filter")
        if f is not None:
            if not isinstance(f, dict) or set(f) != {"x", "dx", "t", "min_cutoff", "beta", "d_cutoff"}:
                raise ValueError("track.filter must be null or {x, dx, t, min_cutoff, beta, d_cutoff}")
            x, dx = np.asarray(f["x"], np.float64), np.asarray(f["dx"], np.float64)
            nums = [float(f["t"]), float(f["min_cutoff"]), float(f["beta"]), float(f["d_cutoff"])]
            if (x.shape != (5, 2) or dx.shape != (5, 2) or not np.isfinite(x).all() or not np.isfinite(dx).all()
                    or not all(map(math.isfinite, nums)) or nums[1] <= 0 or nums[3] <= 0 or nums[2] < 0):
                raise ValueError("track.filter: x and dx must be finite [5, 2], t finite, cut-offs positive")
        return cls(tuple(box.tolist()), thresh, t, f)

    def follow(self, dets: Detections) -> tuple[int, np.ndarray] | None:
        """(index into ``dets`` of the face whose box overlaps ``box`` most, at least ``iou``;
        its key points float32 [5, 2], smoothed with ``filter`` at ``t``), or None."""
        if len(dets) == 0:
            return None
        overlaps = [iou(np.asarray(self.box), b) for b in dets.boxes]
        best = int(np.argmax(overlaps))
        if overlaps[best] < self.iou:
            return None
        return best, self.smoothed(dets.kps[best])

    def smoothed(self, kps: np.ndarray) -> np.ndarray:
        """float32 [5, 2]: ``kps`` through a copy of the track's filter at ``t`` (as they are
        when the hint carries no filter); what the tracker computes for the same face."""
        if self.filter is None:
            return np.asarray(kps, np.float32)
        return OneEuro.from_state(self.filter)(kps, self.t)
