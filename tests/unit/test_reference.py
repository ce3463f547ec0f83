"""Equivalence with insightface 0.7.3 on the same models and real photos.

Detector: the real SCRFD from ../shared/models. ArcFace and inswapper: the tiny stand-ins
(their weights are random, but both pipelines run the same graphs, so every number must agree).
"""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from pipeline.align import norm_crop
from pipeline.detection import decode_scrfd, detector_blob, letterbox
from pipeline.frames import DetectSettings, Networks, swap_frame
from pipeline.quality import psnr
from pipeline.selection import SwapOptions
from pipeline.stages import analyze_stage
from tests.support.photos import load

try:
    import insightface
except ImportError as exc:  # a missing package fails the tests, saying what to install
    raise ImportError("install insightface==0.7.3 (make setup does)") from exc
pytestmark = pytest.mark.reference

PHOTOS = ["portrait_obama_official.jpg", "group_insightface_t1.jpg", "two_obama_biden.jpg",
          "group_voc_2008_002470.jpg", "hard_cameraman_small_face.png", "portrait_obama_small_320x240.jpg"]


@pytest.fixture(scope="module")
def ref(models):
    from insightface.model_zoo import get_model

    assert insightface.__version__ == "0.7.3", "the reference is pinned to insightface 0.7.3"
    det = get_model(models["detector"].path)
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = get_model(models["recognizer"].path)
    rec.prepare(-1)
    swp = get_model(models["swapper"].path)
    return det, rec, swp


@pytest.fixture(scope="module")
def sessions(models):
    return {r: ort.InferenceSession(m.path, providers=["CPUExecutionProvider"]) for r, m in models.items()}


def our_detect(sess, img):
    det_img, scale = letterbox(img, (640, 640))
    outs = sess.run(None, {sess.get_inputs()[0].name: detector_blob(det_img)})
    return decode_scrfd(outs, (640, 640), scale, 0.5, 0.4)


def embed_fn(sess):
    return lambda blob: sess.run(None, {sess.get_inputs()[0].name: blob})[0]


def swap_fn(sess):
    return lambda blob, lat: sess.run(None, {"target": blob, "source": lat})[0]


def detect_fn(sess):
    return lambda blob: sess.run(None, {sess.get_inputs()[0].name: blob})


@pytest.mark.parametrize("name", PHOTOS)
def test_boxes_and_kps_match_insightface_within_half_pixel(ref, sessions, name):
    img = load(name)
    boxes, kpss = ref[0].detect(img, max_num=0, metric="default")
    ours = our_detect(sessions["detector"], img)
    assert len(ours) == boxes.shape[0] and len(ours) > 0
    assert np.abs(ours.boxes - boxes[:, :4]).max() <= 0.5
    assert np.abs(ours.scores - boxes[:, 4]).max() <= 1e-4
    assert np.abs(ours.kps - kpss).max() <= 0.5


@pytest.mark.parametrize("size", [112, 128])
def test_aligned_crops_equal_insightface(ref, sessions, size):
    from insightface.utils import face_align

    img = load("group_insightface_t1.jpg")
    dets = our_detect(sessions["detector"], img)
    for kps in dets.kps:
        theirs, m_ref = face_align.norm_crop2(img, kps, size)
        ours, m = norm_crop(img, kps, size)
        assert np.abs(m - m_ref).max() < 1e-6
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_latents_match_insightface_cosine(ref, sessions):
    det, rec, swp = ref
    img = load("group_insightface_t1.jpg")
    ours = our_detect(sessions["detector"], img)
    emb, lat, _ = analyze_stage(img, ours, embed_fn(sessions["recognizer"]), 32, swp.emap)
    boxes, kpss = det.detect(img, max_num=0, metric="default")
    from insightface.app.common import Face

    for i in range(len(ours)):
        face = Face(bbox=boxes[i, :4], kps=kpss[i], det_score=boxes[i, 4])
        rec.get(img, face)
        latent = face.normed_embedding.reshape(1, -1) @ swp.emap
        latent /= np.linalg.norm(latent)
        assert float(emb[i] @ face.normed_embedding) >= 0.9999
        assert float(lat[i] @ latent[0]) >= 0.9999


@pytest.mark.parametrize("name", ["portrait_biden_official.jpg", "group_insightface_t1.jpg", "two_obama_biden.jpg"])
def test_swapped_image_psnr_against_inswapper_get(ref, sessions, name):
    det, rec, swp = ref
    from insightface.app.common import Face

    src = load("portrait_obama_official.jpg")
    sb, sk = det.detect(src, max_num=0, metric="default")
    source = Face(bbox=sb[0, :4], kps=sk[0], det_score=sb[0, 4])
    rec.get(src, source)
    img = load(name)
    boxes, kpss = det.detect(img, max_num=0, metric="default")
    expected = img.copy()
    for i in range(boxes.shape[0]):
        expected = swp.get(expected, Face(bbox=boxes[i, :4], kps=kpss[i], det_score=boxes[i, 4]), source,
                           paste_back=True)
    latent = source.normed_embedding.reshape(1, -1) @ swp.emap
    latent /= np.linalg.norm(latent)
    # face_swap's own function on the photo's PNG bytes (lossless): decode, detect,
    # align, swap, paste back, encode once
    nets = Networks(detect_fn(sessions["detector"]), embed_fn(sessions["recognizer"]), swap_fn(sessions["swapper"]),
                    swap_batch=8)
    opts = SwapOptions(output_format="png", face_quality=False, content_policy="off")  # swapping is compared
    r = swap_frame(cv2.imencode(".png", img)[1].tobytes(), opts, nets, DetectSettings(close_up_retry=False),
                   latent.astype(np.float32))
    ours = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
    assert r.aligned.crops.shape[0] == boxes.shape[0] > 0 and r.fmt == "png"
    assert ours.shape == expected.shape
    assert psnr(ours, expected) >= 45.0
    assert psnr(ours, img) < psnr(expected, expected)  # the faces did change


def test_close_up_found_by_the_padded_retry(sessions):
    """insightface 0.7.3 finds no face in a face filling a 112x112 crop; our retry on the
    image padded to twice its size finds it, in the crop's own coordinates."""
    from pipeline.stages import detect_stage

    img = load("aligned112_tom_hanks.png")
    det = sessions["detector"]
    det_img, scale = letterbox(img, (640, 640))
    heads = det.run(None, {det.get_inputs()[0].name: detector_blob(det_img)})
    assert len(detect_stage(heads, (640, 640), scale, 0.5)) == 0  # as insightface 0.7.3

    def detect_fn(blob):
        return det.run(None, {det.get_inputs()[0].name: blob})

    dets = detect_stage(heads, (640, 640), scale, 0.5, image=img, detect_fn=detect_fn)
    assert len(dets) == 1
    x1, y1, x2, y2 = dets.boxes[0]
    assert -10 < x1 < 40 and -10 < y1 < 40 and 70 < x2 < 122 and 70 < y2 < 122
    assert (dets.kps[0][:, 0] > 0).all() and (dets.kps[0][:, 0] < 112).all()


@pytest.mark.parametrize("name", PHOTOS + ["portrait_biden_official.jpg", "two_obama_biden_stage.jpg"])
def test_detect_stage_with_extra_passes_matches_insightface(ref, sessions, name):
    """The serving entry point with the detector at hand (tiles and close-up retry enabled)
    gives insightface 0.7.3's faces on ordinary photos (none of them is tiled: long/short <= 2.5)."""
    from pipeline.stages import detect_stage

    img = load(name)
    det = sessions["detector"]
    calls = []

    def detect_fn(blob):
        calls.append(blob.shape)
        return det.run(None, {det.get_inputs()[0].name: blob})

    det_img, scale = letterbox(img, (640, 640))
    heads = det.run(None, {det.get_inputs()[0].name: detector_blob(det_img)})
    ours = detect_stage(heads, (640, 640), scale, 0.5, 0.4, img, detect_fn)
    boxes, kpss = ref[0].detect(img, max_num=0, metric="default")
    assert calls == [] and len(ours) == boxes.shape[0] > 0
    assert np.abs(ours.boxes - boxes[:, :4]).max() <= 0.5
    assert np.abs(ours.scores - boxes[:, 4]).max() <= 1e-4
    assert np.abs(ours.kps - kpss).max() <= 0.5
