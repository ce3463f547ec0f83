"""Face tracks across video frames: association, identity, and One-Euro key-point smoothing.

Against flicker: each face keeps a track (greedy IoU association between frames) whose 5 key
points pass through a One-Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter
whose cut-off rises with speed, so a still face stops jittering and a moving one does not lag.

Which face is swapped stays the same person: with selection "largest" the identity is the
largest face of the first frame that has one; with a reference embedding it is the face most
similar to it. While that track is lost (face gone or covered), nothing is swapped; when a
*new* track appears whose embedding matches the identity (cosine >= ``reid_threshold``) it
becomes the target. Tracks that existed while the target was visible (other people) are never
promoted, so the choice does not flip to a bystander.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from client.core import Face
from pipeline.follow import OneEuro, iou

__all__ = ["FaceTracker", "OneEuro", "Track", "iou"]


@dataclass
class Track:
    id: int
    box: np.ndarray
    embedding: np.ndarray | None
    filter: OneEuro
    born: int
    last_seen: int
    kps: np.ndarray = field(default_factory=lambda: np.zeros((5, 2), np.float32))


class FaceTracker:
    """Chooses, per frame, the faces to swap and their (smoothed) key points.

    Args:
        selection: "largest" (one identity, see module docstring), "similar" (needs
            ``reference``), or "all" (every face, each smoothed on its own track).
        reference: float32 [512] normed embedding of the person to swap ("similar").
        smoothing: apply the One-Euro filter (on by default for video).
        iou_threshold: minimum IoU to continue a track from the previous frames.
        max_gap: frames a track may be unseen before it is dropped.
        reid_threshold: cosine a new track needs to take over a lost identity.
    """

    def __init__(self, selection: str = "largest", reference: np.ndarray | None = None, smoothing: bool = True,
                 iou_threshold: float = 0.3, max_gap: int = 15, reid_threshold: float = 0.5,
                 min_cutoff: float = 1.5, beta: float = 0.02) -> None:
        if selection not in ("largest", "similar", "all"):
            raise ValueError(f"video selection must be largest, similar or all, not {selection!r}")
        if selection == "similar" and reference is None:
            raise ValueError("selection 'similar' needs a reference embedding")
        self.selection, self.smoothing = selection, smoothing
        self.identity = None if reference is None else np.asarray(reference, np.float32).reshape(-1)
        self.iou_threshold, self.max_gap, self.reid_threshold = iou_threshold, max_gap, reid_threshold
        self.filter_args = (min_cutoff, beta)
        self.tracks: list[Track] = []
        self.target: int | None = None
        self.frame = -1
        self._next_id = 0

    def _match(self, faces: list[Face], frame: int) -> tuple[list[Track], dict[int, Track]]:
        """(the live tracks at ``frame``, {face index: its track}): greedy IoU association."""
        live = [t for t in self.tracks if frame - t.last_seen <= self.max_gap]
        pairs = sorted(((iou(t.box, f.box), ti, fi) for ti, t in enumerate(live) for fi, f in enumerate(faces)),
                       reverse=True)
        used_t, used_f, matched = set(), set(), {}
        for score, ti, fi in pairs:
            if score < self.iou_threshold or ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            matched[fi] = live[ti]
        return live, matched

    def wants_embeddings(self, faces: list[Face]) -> bool:
        """Whether the next :meth:`update` with these faces (boxes and key points; embeddings not
        needed to ask) will read their embeddings: only to fix or find the identity, i.e. with
        selection "largest" or "similar" when no face is the target yet, or when the target's
        track does not continue into this frame and a new track starts in it (new tracks are
        compared with the identity). Otherwise the faces can come from a detection without
        ArcFace (``embed(..., embeddings=False)``): the choice and the smoothed key points are
        the same."""
        if self.selection == "all" or not faces:
            return False
        if self.identity is None or self.target is None:
            return True
        _, matched = self._match(faces, self.frame + 1)
        return self.target not in {t.id for t in matched.values()} and len(matched) < len(faces)

    def follow_hint(self, t: float) -> dict | None:
        """``SwapOptions.track`` (``pipeline.follow.TrackHint``) for a frame at ``t`` s: when one
        face is followed ("largest" or "similar") and its track was seen in the previous frame
        (so its filter goes on rather than restarts), that track's box, this tracker's IoU
        threshold and its filter state; else None. The entry point then swaps the face that
        track continues into, and :meth:`update_tracks` on the faces it found must choose that
        face at the same key points for the frame to stand (``gateway.core.stream``)."""
        if self.selection == "all" or self.target is None:
            return None
        track = next((x for x in self.tracks if x.id == self.target and x.last_seen == self.frame), None)
        if track is None:
            return None
        return {"box": [float(v) for v in track.box], "iou": self.iou_threshold, "t": t,
                "filter": track.filter.state() if self.smoothing else None}

    def _associate(self, faces: list[Face]) -> list[Track]:
        live, matched = self._match(faces, self.frame)
        out = []
        for fi, f in enumerate(faces):
            track = matched.get(fi)
            if track is None:
                track = Track(self._next_id, f.box, f.embedding, OneEuro(*self.filter_args), self.frame, self.frame)
                self._next_id += 1
                live.append(track)
            elif self.frame - track.last_seen > 1:
                track.filter = OneEuro(*self.filter_args)  # re-appeared: do not smooth across the gap
            track.box, track.last_seen = f.box, self.frame
            if f.embedding is not None:
                track.embedding = f.embedding
            out.append(track)
        self.tracks = live
        return out

    def _smooth(self, track: Track, face: Face, t: float) -> np.ndarray:
        track.kps = track.filter(face.kps, t) if self.smoothing else np.asarray(face.kps, np.float32)
        return track.kps

    def update(self, t: float, faces: list[Face]) -> list[np.ndarray]:
        """Feed the faces of the next frame (time ``t`` seconds); returns the key points
        (float32 [5, 2] each) of the faces to swap in it, possibly none."""
        return [kps for _, kps in self.update_tracks(t, faces)]

    def update_tracks(self, t: float, faces: list[Face]) -> list[tuple[int, np.ndarray]]:
        """As :meth:`update`, with the track id of each face to swap: [(track id, key points)]."""
        self.frame += 1
        tracks = self._associate(faces)
        smoothed = [self._smooth(tr, f, t) for tr, f in zip(tracks, faces)]
        if self.selection == "all":
            return [(tr.id, k) for tr, k in zip(tracks, smoothed)]
        if not faces:
            return []
        ids = [tr.id for tr in tracks]
        if self.target in ids:
            return [(self.target, smoothed[ids.index(self.target)])]
        if self.identity is None:  # "largest", first frame with a face: fix the identity
            i = int(np.argmax([f.area for f in faces]))
            self.target, self.identity = tracks[i].id, faces[i].embedding
            return [(self.target, smoothed[i])]
        candidates = [i for i, tr in enumerate(tracks)
                      if (self.target is None or tr.born == self.frame) and tr.embedding is not None]
        if self.target is None and self.selection == "similar":
            candidates = list(range(len(tracks)))
        best, best_sim = None, -1.0
        for i in candidates:
            e = tracks[i].embedding
            sim = float(np.dot(e, self.identity) / (np.linalg.norm(e) * np.linalg.norm(self.identity) + 1e-12))
            if sim > best_sim:
                best, best_sim = i, sim
        threshold = -1.0 if (self.target is None and self.selection == "similar") else self.reid_threshold
        if best is not None and best_sim >= threshold:
            self.target = tracks[best].id
            return [(self.target, smoothed[best])]
        return []
