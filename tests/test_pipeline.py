"""Unit tests of the numerical core (no server)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.codec import ImageError, decode_image, encode_image, sniff_format
from pipeline.detection import Detections, letterbox
from pipeline.paste import paste_back
from pipeline.selection import OptionsError, SwapOptions, select_faces
from pipeline.stages import chunked


def dets(n: int) -> Detections:
    boxes = np.array([[i * 10, 0, i * 10 + 5 + i, 5 + i] for i in range(n)], np.float32)
    return Detections(boxes, np.linspace(0.9, 0.6, n).astype(np.float32), np.zeros((n, 5, 2), np.float32))


def test_letterbox_keeps_aspect_and_pads():
    img = np.full((100, 300, 3), 200, np.uint8)
    out, scale = letterbox(img, (640, 640))
    assert out.shape == (640, 640, 3) and scale == pytest.approx(640 / 300, rel=1e-2)
    assert out[300:, :].max() == 0 and out[:200, :].min() > 0


def test_letterbox_tiny_panorama_keeps_one_row():
    out, scale = letterbox(np.full((1, 2000, 3), 9, np.uint8), (640, 640))
    assert out[0].max() == 9 and scale > 0


def test_select_all_cap_largest_first():
    d = dets(5)
    sel = select_faces(d, SwapOptions(max_faces=2), cap=64)
    assert sel.truncated and sel.indices.tolist() == [3, 4] and sel.latent_index.tolist() == [0, 0]
    sel = select_faces(d, SwapOptions(), cap=3)
    assert sel.truncated and sel.indices.tolist() == [2, 3, 4]


def test_select_pairs_matches_each_face_to_its_reference():
    d = dets(3)
    emb = np.eye(3, 512, dtype=np.float32)
    refs = np.stack([emb[2], emb[0]])  # reference 0 is face 2, reference 1 is face 0; face 1 matches none
    sel = select_faces(d, SwapOptions(selection="pairs", threshold=0.5), 64, emb, refs)
    assert sel.indices.tolist() == [0, 2] and sel.latent_index.tolist() == [1, 0] and not sel.truncated


def test_select_index_out_of_range_message():
    with pytest.raises(OptionsError, match=r"valid 0\.\.2"):
        select_faces(dets(3), SwapOptions(selection="index", face_index=3), cap=64)


def test_options_validation():
    assert SwapOptions.from_json(b'{"selection": "largest"}').selection == "largest"
    for raw in [b"[]", b"{", b'{"colour": 1}', b'{"quality": 0}', b'{"output_format": "gif"}']:
        with pytest.raises(OptionsError):
            SwapOptions.from_json(raw)


def test_chunked_never_calls_with_zero_rows():
    calls = []
    out = chunked(lambda a: calls.append(a.shape[0]) or a * 2, 8, np.arange(20.0)[:, None])
    assert calls == [8, 8, 4] and out[:, 0].tolist() == (np.arange(20.0) * 2).tolist()
    chunked(lambda a: calls.append(-1), 8, np.zeros((0, 1)))
    assert -1 not in calls


def _reference_paste(frame, fake, m):
    """insightface 0.7.3 INSwapper.get paste-back on the full frame (fake_diff branch omitted)."""
    h, w = frame.shape[:2]
    im = cv2.invertAffineTransform(m)
    white = np.full((128, 128), 255, np.float32)
    fake_w = cv2.warpAffine(fake, im, (w, h), borderValue=0.0)
    mask = cv2.warpAffine(white, im, (w, h), borderValue=0.0)
    mask[mask > 20] = 255
    ys, xs = np.where(mask == 255)
    size = int(np.sqrt((ys.max() - ys.min()) * (xs.max() - xs.min())))
    k = max(size // 10, 10)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8), iterations=1)
    k = max(size // 20, 5)
    mask = cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0) / 255
    return (mask[:, :, None] * fake_w + (1 - mask[:, :, None]) * frame.astype(np.float32)).astype(np.uint8)


@pytest.mark.parametrize("tx,ty,angle,scale", [(200, 150, 0, 0.5), (5, 10, 25, 0.4), (380, 260, -40, 1.2),
                                               (-30, 200, 10, 0.3)])
def test_roi_paste_matches_full_frame_paste(tx, ty, angle, scale):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (400, 500, 3), dtype=np.uint8)
    fake = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    rot = cv2.getRotationMatrix2D((0, 0), angle, 1 / scale)
    m = rot.copy()
    m[:, 2] -= rot[:, :2] @ np.array([tx, ty], np.float64)
    expected = _reference_paste(frame.copy(), fake, m)
    ours = paste_back(frame.copy(), fake, m)
    diff = np.abs(ours.astype(int) - expected.astype(int))
    # Warping at a shifted origin changes OpenCV's fixed-point rounding; a mask pixel that
    # flips can move mask_size across a //10 step and change the erosion kernel by one.
    mse = np.mean(diff.astype(np.float64) ** 2)
    assert (diff > 0).mean() < 0.005 and (mse == 0 or 10 * np.log10(255**2 / mse) >= 45)


def test_codec_sniffs_bytes_not_names():
    img = np.zeros((4, 4, 3), np.uint8)
    for fmt in ("jpeg", "png", "webp"):
        assert sniff_format(encode_image(img, fmt)) == fmt
    assert sniff_format(b"%PDF-1.4") is None
    with pytest.raises(ImageError, match="unsupported"):
        decode_image(b"%PDF-1.4 fake")
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
