"""One frame decoded once and encoded once (pipeline.frames, the work of face_swap,
face_swap_kps and face_embed), with onnxruntime sessions in place of the BLS calls: the real
SCRFD and the tiny stand-ins."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from pipeline import watermark
from pipeline.frames import DetectSettings, analyze_frame, swap_frame
from pipeline.local import onnxruntime_networks
from pipeline.selection import OptionsError, SwapOptions
from tests.support.photos import image_path

GROUP = image_path("group_insightface_t1.jpg")
PAYLOAD = watermark.Payload(7, 123456789)


@pytest.fixture(scope="module")
def nets(models):
    return onnxruntime_networks(models)


@pytest.fixture(scope="module")
def latent():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((1, 512)).astype(np.float32)
    return v / np.linalg.norm(v)


def test_the_watermark_is_in_the_one_encode(nets, latent):
    data = GROUP.read_bytes()
    r = swap_frame(data, SwapOptions(output_format="png", watermark=PAYLOAD.to_bytes().hex()), nets,
                   DetectSettings(), latent)
    assert r.aligned.crops.shape[0] == len(r.dets) == 6 and r.watermarked and r.fmt == "png"
    found = watermark.detect(cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR))
    assert found.found and found.payload == PAYLOAD
    steps, networks = r.stage_ms["steps"], r.stage_ms["networks"]
    assert {"decode", "detect", "align", "swap", "paste", "quality", "watermark", "encode"} <= set(steps)
    assert {"detector", "recognizer", "swapper", "content"} <= set(networks)  # quality figures: ArcFace
    assert r.content == {"content_refused": False, "content_policy": "intimate-imagery"}  # the real nudenet
    assert steps["swap"] >= networks["swapper"] and steps["detect"] >= networks["detector"]
    unmarked = swap_frame(data, SwapOptions(output_format="png"), nets, DetectSettings(), latent)
    assert not unmarked.watermarked and "watermark" not in unmarked.stage_ms["steps"]
    a = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    b = cv2.imdecode(np.frombuffer(unmarked.data, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
    assert 0 < np.abs(a - b).max() <= 12  # the mark's own change, nothing else


def test_no_face_gives_the_input_bytes_back_unmarked(nets, latent):
    data = cv2.imencode(".jpg", np.full((200, 300, 3), 128, np.uint8))[1].tobytes()
    r = swap_frame(data, SwapOptions(watermark=PAYLOAD.to_bytes().hex()), nets, DetectSettings(), latent)
    assert r.data == data and r.fmt == "jpeg" and not r.watermarked and r.quality == []
    assert "encode" in r.stage_ms["steps"] and "swap" not in r.stage_ms["steps"]


def test_caller_key_points_skip_detection(nets, latent):
    data = GROUP.read_bytes()
    found = analyze_frame(data, nets, DetectSettings(), np.eye(512, dtype=np.float32))
    r = swap_frame(data, SwapOptions(face_quality=False), nets, DetectSettings(), latent, face_kps=found.dets.kps[:2])
    assert r.aligned.crops.shape[0] == 2 and "detector" not in r.stage_ms["networks"]
    assert found.embeddings.shape == (6, 512) and found.crops.shape == (6, 112, 112, 3)
    assert "detector" in found.stage_ms["networks"] and "recognizer" in found.stage_ms["networks"]


def test_a_cancelled_caller_costs_no_decode(nets, latent):
    class Gone(Exception):
        pass

    def check():
        raise Gone

    with pytest.raises(Gone):
        swap_frame(b"not even an image", SwapOptions(), nets, DetectSettings(), latent, check=check)


def test_a_refused_target_is_not_swapped_and_off_means_off(nets, latent, tmp_path):
    """The content gate with the test-only detector that flags everything: nothing swapped, no
    output bytes, the policy named; with content_policy "off" (the gateway's setting) it is not run."""
    import dataclasses

    from repository.resolve import resolve

    flag = ort.InferenceSession(resolve("tiny", content="flag-all")["content"].path, providers=["CPUExecutionProvider"])
    refusing = dataclasses.replace(nets, content_fn=lambda blob: flag.run(None, {flag.get_inputs()[0].name: blob})[0])
    data = GROUP.read_bytes()
    r = swap_frame(data, SwapOptions(), refusing, DetectSettings(), latent)
    assert r.content == {"content_refused": True, "content_policy": "intimate-imagery"}
    assert r.data == b"" and len(r.dets) == 0 and r.aligned.crops.shape[0] == 0
    assert "detector" not in r.stage_ms["networks"] and "swapper" not in r.stage_ms["networks"]
    off = swap_frame(data, SwapOptions(content_policy="off", face_quality=False), refusing, DetectSettings(), latent)
    assert off.content == {} and off.aligned.crops.shape[0] == 6 and "content" not in off.stage_ms["networks"]
    with pytest.raises(OptionsError, match="content_policy"):
        SwapOptions.from_json('{"content_policy": {"classes": ["NOT_A_CLASS"]}}')


def test_tracking_detection_on_a_reduced_decode_stays_within_a_few_percent(nets):
    """face_embed without embeddings (live, video tracking) decodes a 1080p JPEG at 1/2 scale
    for the letterbox: the same faces, key points within a small share of the face's width."""
    import av

    from pipeline.codec import decode_image
    from pipeline.frames import find_faces

    with av.open(str(image_path("video_roop_target_1080p_24f.mp4"))) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)][::3]
    shares = []
    for f in frames:
        data = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        full = find_faces(decode_image(data, alpha=False).bgr, nets, DetectSettings())
        a = analyze_frame(data, nets, DetectSettings(), None, embeddings=False)
        assert len(a.dets) == len(full) >= 1
        for kps, box in zip(full.kps, full.boxes):
            nearest = np.abs(a.dets.kps - kps).reshape(len(a.dets), -1).max(axis=1).min()
            shares.append(nearest / (box[2] - box[0]))
    # measured: median 0.33%, max 0.9% of the box width (1080p clip); 0.6% and 5% on small faces at 720p
    assert np.median(shares) < 0.01 and max(shares) < 0.03, shares


def test_a_bad_watermark_option_is_refused():
    with pytest.raises(OptionsError, match="16 hex digits"):
        SwapOptions.from_json('{"watermark": "zz"}')
    with pytest.raises(OptionsError, match="16 hex digits"):
        SwapOptions.from_json('{"watermark": 5}')
    assert SwapOptions.from_json('{"watermark": "00000007075bcd15"}').watermark == "00000007075bcd15"


def test_a_followed_track_is_swapped_in_one_call_as_the_tracker_would(nets, latent):
    """Live streams (``SwapOptions.track``): face_swap swaps the face the target's track continues
    into, at the key points its One-Euro filter gives; the gateway's tracker, fed the faces that
    call found, chooses the same face at the same key points to the bit on nearly every frame."""
    from client import Face
    from media.tracking import FaceTracker
    from pipeline.align import norm_crop
    from pipeline.follow import TrackHint

    def faces_of(dets):
        return [Face(b, float(s), k) for b, s, k in zip(dets.boxes, dets.scores, dets.kps)]

    import av

    with av.open(str(image_path("video_whitehouse_hamilton_640x360.mp4"))) as c:
        decoded = [(f.to_ndarray(format="bgr24"), float(f.time)) for _, f in zip(range(60), c.decode(video=0))]
    frames, times = zip(*decoded)
    reference, tracker = FaceTracker("largest"), FaceTracker("largest")
    followed = swapped = 0
    for img, t in zip(frames, times):
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        want = reference.update(t, faces_of(find_faces_full(data, nets)))  # the two-call way
        hint = tracker.follow_hint(t)
        if hint is None:
            got = tracker.update(t, faces_of(find_faces_full(data, nets)))
        else:
            r = swap_frame(data, SwapOptions(output_format="jpeg", face_quality=False, track=hint,
                                             content_policy="off"), nets, DetectSettings(), latent)
            got = tracker.update(t, faces_of(r.dets))
            if len(r.aligned.selected) == 1 and len(got) == 1:
                expected = TrackHint.parse(hint).smoothed(r.dets.kps[r.aligned.selected[0]])
                if np.array_equal(got[0], expected):
                    followed += 1
                    placed = norm_crop(img_of(data), got[0], 128)[1].astype(np.float32)
                    assert np.array_equal(r.aligned.affines[0], placed)
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))
        swapped += bool(want)
    assert swapped >= 20 and followed >= 0.8 * (swapped - 1), (followed, swapped)


def img_of(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def find_faces_full(data: bytes, nets):
    from pipeline.frames import find_faces

    return find_faces(img_of(data), nets, DetectSettings())


@pytest.mark.parametrize("track", [{"box": [1, 2, 3], "iou": 0.3, "t": 0}, {"box": [0, 0, 9, 9], "iou": 2, "t": 0},
                                   {"box": [0, 0, 9, 9], "iou": 0.3, "t": 0, "filter": {"x": [[0, 0]]}},
                                   {"box": [0, 0, 9, 9], "iou": 0.3, "t": 0, "extra": 1}, "largest"])
def test_a_bad_track_option_is_refused(track):
    import json

    with pytest.raises(OptionsError, match="track"):
        SwapOptions.from_json(json.dumps({"track": track}))
