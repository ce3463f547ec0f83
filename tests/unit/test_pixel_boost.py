"""Pixel boost (option ``pixel_boost``): batched sub-crops against a one-crop-at-a-time loop, and
the options. Detector: the real SCRFD; swapper: the tiny stand-in; no server."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from pipeline.align import estimate_norm
from pipeline.detection import decode_scrfd, detector_blob, letterbox
from pipeline.embedding import SWAP_MEAN, SWAP_STD
from pipeline.paste import paste_back, swapper_output_to_bgr
from pipeline.pixel_boost import explode, implode
from pipeline.selection import OptionsError, SwapOptions
from pipeline.stages import align_stage, crops_to_blob, pasted_frame, swapped_faces
from tests.support.photos import load

GROUP = "group_insightface_t1.jpg"


@pytest.fixture(scope="module")
def sessions(models):
    return {r: ort.InferenceSession(m.path, providers=["CPUExecutionProvider"]) for r, m in models.items()}


@pytest.fixture(scope="module")
def group(sessions):
    """(uint8 BGR frame, its aligned faces, one float32 [M, 512] normed latent per face)."""
    img = load(GROUP)
    det = sessions["detector"]
    det_img, scale = letterbox(img, (640, 640))
    dets = decode_scrfd(det.run(None, {det.get_inputs()[0].name: detector_blob(det_img)}), (640, 640), scale,
                        0.5, 0.4)
    a = align_stage(img, dets, SwapOptions(), cap=64)
    rng = np.random.default_rng(7)
    lat = rng.standard_normal((len(a.selected), 512)).astype(np.float32)
    return img, a, lat / np.linalg.norm(lat, axis=1, keepdims=True)


class Counting:
    """The swapper stand-in as ``swap_fn``, recording the rows of every call."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        self.sess, self.rows = sess, []

    def __call__(self, blob: np.ndarray, lat: np.ndarray) -> np.ndarray:
        self.rows.append(blob.shape[0])
        return self.sess.run(None, {"target": blob, "source": lat})[0]


def one_at_a_time(img: np.ndarray, a, lat: np.ndarray, sess, pixel_boost: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: per face, align at pixel_boost, one swapper call per sub-crop (i, j) =
    crop[i::n, j::n], written back into the same pixels, pasted with the pixel_boost matrix.
    The matrices are the aligner's 128 ones times n, which is insightface's at 128 n (checked
    here to float32 precision), so that only the batching and interleaving differ."""
    n = pixel_boost // 128
    out, fakes = img.copy(), []
    for face, (k, m128) in enumerate(zip(a.dets.kps[a.selected], a.affines)):
        m = m128.astype(np.float64) * n
        assert np.allclose(estimate_norm(k, pixel_boost), m, rtol=1e-5, atol=1e-3)
        crop = a.crops[face] if n == 1 else cv2.warpAffine(img, m, (pixel_boost, pixel_boost), borderValue=0.0)
        fake = np.zeros_like(crop)
        for i in range(n):
            for j in range(n):
                blob = crops_to_blob(np.ascontiguousarray(crop[None, i::n, j::n]), SWAP_MEAN, SWAP_STD)
                pred = sess.run(None, {"target": blob, "source": lat[face:face + 1]})[0]
                fake[i::n, j::n] = swapper_output_to_bgr(pred)[0]
        paste_back(out, fake, m)
        fakes.append(fake)
    return np.stack(fakes), out


def assert_same(ours: np.ndarray, expected: np.ndarray, fakes: np.ndarray, expected_fakes: np.ndarray) -> None:
    """The swapped faces to 1 grey level (onnxruntime's float noise between batch sizes, then
    uint8 truncation); the frames too, but for a few pixels where overlapping faces add up two
    such differences."""
    assert fakes.shape == expected_fakes.shape and fakes.dtype == np.uint8
    assert np.abs(fakes.astype(int) - expected_fakes.astype(int)).max() <= 1
    assert ours.shape == expected.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and (diff > 1).mean() < 1e-5


def test_explode_takes_every_nth_pixel_and_implode_inverts_it():
    crops = np.random.default_rng(0).integers(0, 256, (2, 384, 384, 3), dtype=np.uint8)
    subs = explode(crops, 3)
    assert subs.shape == (18, 128, 128, 3) and subs.dtype == np.uint8
    assert np.array_equal(subs[9 + 1 * 3 + 2], crops[1, 1::3, 2::3])
    assert np.array_equal(implode(subs, 3), crops)


@pytest.mark.parametrize("value", [256, 384, 512, 128.0])
def test_pixel_boost_accepts_the_four_sizes(value):
    assert SwapOptions.from_json(f'{{"pixel_boost": {value}}}').pixel_boost == int(value)
    assert SwapOptions.from_json(b"{}").pixel_boost == 128


@pytest.mark.parametrize("raw", ['200', '0', '1024', '-128', 'true', '"256"', '256.5', 'null'])
def test_invalid_pixel_boost_is_an_options_error(raw):
    with pytest.raises(OptionsError, match="pixel_boost|bad option value"):
        SwapOptions.from_json(f'{{"pixel_boost": {raw}}}')


def test_default_pixel_boost_is_the_plain_128_swap(group, sessions):
    img, a, lat = group
    swap = Counting(sessions["swapper"])
    default = pasted_frame(img, {}, a.crops, a.affines, lat, swap, 8)
    assert np.array_equal(default, pasted_frame(img, {}, a.crops, a.affines, lat, swap, 8, 128))
    fakes, mats = swapped_faces(img, a.crops, a.affines, lat, swap, 8)
    assert fakes.shape == a.crops.shape and mats is a.affines
    expected_fakes, expected = one_at_a_time(img, a, lat, sessions["swapper"], 128)
    assert_same(default, expected, fakes, expected_fakes)


@pytest.mark.parametrize("pixel_boost", [256, 384, 512])
def test_batched_sub_crops_equal_the_one_at_a_time_loop(group, sessions, pixel_boost):
    img, a, lat = group
    n, m = pixel_boost // 128, len(a.selected)
    swap = Counting(sessions["swapper"])
    fakes, _ = swapped_faces(img, a.crops, a.affines, lat, swap, 5, pixel_boost)
    # every sub-crop of every face in chunks of the batch limit (5 spans face boundaries)
    assert m >= 6 and sum(swap.rows) == m * n * n and max(swap.rows) == 5
    assert len(swap.rows) == -(-m * n * n // 5)
    ours = pasted_frame(img, {}, a.crops, a.affines, lat, swap, 5, pixel_boost)
    expected_fakes, expected = one_at_a_time(img, a, lat, sessions["swapper"], pixel_boost)
    assert fakes.shape == (m, pixel_boost, pixel_boost, 3)
    assert_same(ours, expected, fakes, expected_fakes)


def test_pixel_boost_changes_only_the_faces(group, sessions):
    img, a, lat = group
    swap = Counting(sessions["swapper"])
    plain = pasted_frame(img, {}, a.crops, a.affines, lat, swap, 8)
    boosted = pasted_frame(img, {}, a.crops, a.affines, lat, swap, 8, 256)
    assert boosted.shape == plain.shape == img.shape
    inside = np.zeros(img.shape[:2], np.uint8)
    for m in a.affines:  # each face's 128x128 crop mapped back to the frame
        inv = cv2.invertAffineTransform(m.astype(np.float64))
        cv2.fillConvexPoly(inside, np.round(cv2.transform(np.float32([[[0, 0], [128, 0], [128, 128], [0, 128]]]),
                                                          inv)[0]).astype(np.int32), 1)
    inside = cv2.dilate(inside, np.ones((5, 5), np.uint8))
    diff = np.abs(boosted.astype(int) - plain.astype(int)).max(axis=2)
    assert diff[inside == 0].max() == 0
    assert (diff[inside == 1] > 2).mean() > 0.05  # the faces were swapped differently
