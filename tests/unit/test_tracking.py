"""Face tracking across video frames (media.tracking): the One Euro filter and identity-kept tracks."""

from __future__ import annotations

import numpy as np

from client import Face
from media.tracking import FaceTracker, OneEuro


def _face(x: float, emb: np.ndarray, size: float = 100) -> Face:
    box = np.array([x, 100, x + size, 100 + size], np.float32)
    kps = np.array([[x + 30, 140], [x + 70, 140], [x + 50, 160], [x + 35, 180], [x + 65, 180]], np.float32)
    return Face(box, 0.9, kps, emb / np.linalg.norm(emb))


def test_tracker_never_flips_to_a_bystander():
    rng = np.random.default_rng(0)
    main, other = rng.standard_normal(512), rng.standard_normal(512)
    tr = FaceTracker("largest")
    chosen = []
    for i in range(30):
        faces = [_face(600, other, 40)]  # a small face in a corner, throughout
        if not 10 <= i < 18:
            faces.insert(0, _face(100 + 3 * i, main + 0.1 * rng.standard_normal(512)))
        picked = tr.update(i / 30, faces)
        chosen.append(None if not picked else int(picked[0][0, 0] > 500))
    assert chosen[:10] == [0] * 10 and chosen[10:18] == [None] * 8 and chosen[18:] == [0] * 12


def test_embeddings_are_asked_for_only_to_fix_or_find_the_identity():
    """The same run as above, fed the way video and live feed it: the faces without embeddings
    (no ArcFace) unless ``wants_embeddings`` says so. The choice is the same frame by frame, and
    ArcFace runs on the first frame only: while the person is gone no new face appears, and when
    they come back their track goes on (IoU). A new face while they are gone is embedded."""
    import dataclasses

    rng = np.random.default_rng(0)
    main, other = rng.standard_normal(512), rng.standard_normal(512)
    full, lean = FaceTracker("largest"), FaceTracker("largest")
    asked = []
    for i in range(30):
        faces = [_face(600, other, 40)]
        if not 10 <= i < 18:
            faces.insert(0, _face(100 + 3 * i, main + 0.1 * rng.standard_normal(512)))
        bare = [dataclasses.replace(f, embedding=None) for f in faces]
        if lean.wants_embeddings(bare):
            asked.append(i)
            bare = faces
        a, b = full.update(i / 30, faces), lean.update(i / 30, bare)
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b)), i
    assert asked == [0], asked
    gone = FaceTracker("largest")
    gone.update(0.0, [_face(100, main)])
    gone.update(0.1, [])
    assert gone.wants_embeddings([_face(500, main)])  # the target's track is lost, a new one starts
    assert not gone.wants_embeddings([_face(103, main)])  # the target's track goes on
    assert not FaceTracker("all").wants_embeddings([_face(0, main)])


def test_one_euro_reduces_jitter_of_a_still_face():
    rng = np.random.default_rng(1)
    f = OneEuro()
    truth = np.array([[100.0, 100.0]] * 5)
    raw = [truth + rng.normal(0, 2, truth.shape) for _ in range(60)]
    out = [f(r, i / 30) for i, r in enumerate(raw)]
    assert np.std(np.array(out[20:]) - truth) < 0.5 * np.std(np.array(raw[20:]) - truth)
