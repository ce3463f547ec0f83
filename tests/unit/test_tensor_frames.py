"""The GPU profile's frame path (pipeline.tensor_frames: the pixels on one device from decode to
encode) against the host path it stands for (pipeline.frames), run with PyTorch on the CPU: the
same code as on a GPU, so CI guards its parity (issue 20: boxes within 1 px, swapped faces
>= 40 dB). The same onnxruntime sessions (the real SCRFD and nudenet, the tiny stand-ins) serve
both paths, so every difference is the pixel arithmetic's."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

try:
    import torch
except ImportError:  # a test that needs something missing fails and says what to install
    pytest.fail("tests/unit/test_tensor_frames.py needs PyTorch: `make test` installs it "
                "(pip install torch==2.13.0, the CPU build)", pytrace=False)

from pipeline import frames, tensor_frames, torch_ops, watermark
from pipeline.codec import ImageError
from pipeline.frames import DetectSettings
from pipeline.local import onnxruntime_networks, tensor_networks
from pipeline.quality import face_psnr, psnr
from pipeline.selection import SwapOptions
from tests.support.photos import image_path

PAYLOAD = watermark.Payload(7, 123456789)
MARK = PAYLOAD.to_bytes().hex()


@pytest.fixture(scope="module")
def nets(models):
    return onnxruntime_networks(models)


@pytest.fixture(scope="module")
def tnets(nets):
    return tensor_networks(nets)


@pytest.fixture(scope="module")
def latents():
    v = np.random.default_rng(3).standard_normal((2, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def decoded(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def both(data, opts, nets, tnets, latents, **kw):
    host = frames.swap_frame(data, opts, nets, DetectSettings(), latents, **kw)
    dev = tensor_frames.swap_frame(data, opts, tnets, DetectSettings(), latents, **kw)
    return host, dev


def assert_same_swap(host, dev, min_face_db=40.0, min_frame_db=40.0):
    """The two results agree: the same faces within 1 px, the same choice, and pixels that
    match on every swapped face's region (>= ``min_face_db``) and on the whole frame."""
    assert len(dev.dets) == len(host.dets)
    if len(host.dets):
        assert np.abs(dev.dets.boxes - host.dets.boxes).max() <= 1.0
        assert np.abs(dev.dets.kps - host.dets.kps).max() <= 1.0
    assert dev.aligned.selected.tolist() == host.aligned.selected.tolist()
    assert dev.aligned.latent_index.tolist() == host.aligned.latent_index.tolist()
    assert (dev.aligned.truncated, dev.aligned.no_match) == (host.aligned.truncated, host.aligned.no_match)
    assert dev.aligned.crops.shape[0] == host.aligned.crops.shape[0]
    assert (dev.fmt, dev.width, dev.height, dev.grey, dev.watermarked, dev.content) == \
        (host.fmt, host.width, host.height, host.grey, host.watermarked, host.content)
    if host.data == b"":
        assert dev.data == b""
        return []
    a, b = decoded(host.data), decoded(dev.data)
    assert a.shape == b.shape
    assert psnr(a, b) >= min_frame_db
    faces = face_psnr(a, b, host.dets.kps[host.aligned.selected])
    assert not faces or min(faces) >= min_face_db, faces
    if host.quality is None:
        assert dev.quality is None
    else:
        assert [q["face"] for q in dev.quality] == [q["face"] for q in host.quality]
        for q, r in zip(dev.quality, host.quality):
            assert abs(q["identity_leakage"] - r["identity_leakage"]) < 0.02
    return faces


@pytest.mark.parametrize("name", ["group_insightface_t1.jpg", "two_obama_biden_stage.jpg",
                                  "portrait_astronaut_eileen_collins.png"])
def test_the_default_swap_on_the_device_is_the_host_swap(nets, tnets, latents, name):
    """Every stage of the gateway's usual call: the content gate, detection, all faces, the
    quality figures, the badge and the invisible watermark, one encode (a JPEG on the device,
    a PNG by OpenCV)."""
    data = image_path(name).read_bytes()
    opts = SwapOptions(watermark=MARK, badge=True)
    host, dev = both(data, opts, nets, tnets, latents)
    assert dev.aligned.crops.shape[0] >= 1 and dev.watermarked and dev.content["content_refused"] is False
    assert_same_swap(host, dev, min_frame_db=38.0)  # two JPEG encoders' rounding on top of the swap
    found = watermark.detect(decoded(dev.data)[:, :, :3])
    assert found.found and found.payload == PAYLOAD
    steps = dev.stage_ms["steps"]
    assert {"decode", "content", "detect", "align", "swap", "paste", "quality", "badge", "watermark",
            "encode"} <= set(steps), steps
    assert {"detector", "recognizer", "swapper", "content"} <= set(dev.stage_ms["networks"])


def test_lossless_output_matches_to_the_pixel_arithmetic(nets, tnets, latents):
    """PNG out: no encoder between the two paths, so what differs is the warps and blends."""
    data = image_path("group_insightface_t1.jpg").read_bytes()
    host, dev = both(data, SwapOptions(output_format="png"), nets, tnets, latents)
    faces = assert_same_swap(host, dev, min_face_db=40.0, min_frame_db=45.0)
    assert len(faces) == 6


@pytest.mark.parametrize("opts", [
    SwapOptions(selection="largest", face_quality=False, output_format="png"),
    SwapOptions(selection="index", face_index=2, output_format="png"),
    SwapOptions(selection="similar", output_format="png", threshold=-1.0),
    SwapOptions(selection="pairs", output_format="png", threshold=-1.0),
    SwapOptions(max_faces=3, output_format="png"),
    SwapOptions(pixel_boost=256, output_format="png", face_quality=False),
    SwapOptions(det_thresh=0.7, output_format="png", content_policy="off"),
], ids=["largest", "index", "similar", "pairs", "max_faces", "pixel_boost", "det_thresh"])
def test_each_option_chooses_and_swaps_the_same_faces(nets, tnets, latents, opts):
    data = image_path("group_insightface_t1.jpg").read_bytes()
    emb = frames.analyze_frame(data, nets, DetectSettings(), np.eye(512, dtype=np.float32)).embeddings
    reference = emb[[4, 1]] if opts.selection in ("similar", "pairs") else None
    host, dev = both(data, opts, nets, tnets, latents, reference=reference)
    assert dev.aligned.crops.shape[0] >= 1
    assert_same_swap(host, dev)


def test_caller_key_points_and_a_track_skip_the_choice(nets, tnets, latents):
    data = image_path("two_obama_biden_stage.jpg").read_bytes()
    kps = frames.analyze_frame(data, nets, DetectSettings(), np.eye(512, dtype=np.float32),
                               embeddings=False).dets.kps
    host, dev = both(data, SwapOptions(output_format="png"), nets, tnets, latents, face_kps=kps[:1] + 0.3)
    assert dev.aligned.crops.shape[0] == 1 and "detector" not in dev.stage_ms["networks"]
    assert_same_swap(host, dev)
    box = frames.analyze_frame(data, nets, DetectSettings(), np.eye(512, dtype=np.float32),
                               embeddings=False).dets.boxes[1]
    track = {"box": [float(v) for v in box + 4], "iou": 0.3, "t": 0.0}
    host, dev = both(data, SwapOptions(output_format="png", track=track), nets, tnets, latents)
    assert dev.aligned.selected.tolist() == [1]
    assert_same_swap(host, dev)


def test_grey_elongated_and_close_up_frames(nets, tnets, latents):
    """A grey input stays grey; an elongated strip takes the tiled pass (on a host copy); a face
    filling the frame takes the close-up pass (on the device)."""
    photo = cv2.imread(str(image_path("group_insightface_t1.jpg")))
    grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    data = cv2.imencode(".png", grey)[1].tobytes()
    host, dev = both(data, SwapOptions(), nets, tnets, latents)
    out = decoded(dev.data)
    assert dev.grey and (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    assert_same_swap(host, dev)
    strip = np.concatenate([photo[120:300]] * 3, axis=1)  # 180 x 3 times the width: tiled
    data = cv2.imencode(".png", strip)[1].tobytes()
    host, dev = both(data, SwapOptions(), nets, tnets, latents)
    assert len(dev.dets) >= 3
    assert_same_swap(host, dev)
    portrait = cv2.imread(str(image_path("portrait_obama_official.jpg")))
    found = frames.analyze_frame(cv2.imencode(".png", portrait)[1].tobytes(), nets, DetectSettings(),
                                 np.eye(512, dtype=np.float32), embeddings=False).dets
    x0, y0, x1, y1 = found.boxes[0].astype(int)
    close = portrait[max(y0 + 10, 0):y1 - 10, max(x0 + 10, 0):x1 - 10]  # the face beyond the frame's edges
    data = cv2.imencode(".png", close)[1].tobytes()
    host, dev = both(data, SwapOptions(), nets, tnets, latents)
    assert len(host.dets) >= 1  # found by the close-up pass only
    assert_same_swap(host, dev)


def test_no_face_and_refusals_and_bad_bytes(nets, tnets, latents):
    data = cv2.imencode(".jpg", np.full((200, 300, 3), 128, np.uint8))[1].tobytes()
    host, dev = both(data, SwapOptions(watermark=MARK), nets, tnets, latents)
    assert dev.data == data and not dev.watermarked and dev.quality == []
    for bad in (b"", b"not an image", data[: len(data) // 2]):
        with pytest.raises(ImageError) as want:
            frames.swap_frame(bad, SwapOptions(), nets, DetectSettings(), latents)
        with pytest.raises(ImageError) as got:
            tensor_frames.swap_frame(bad, SwapOptions(), tnets, DetectSettings(), latents)
        assert str(got.value) == str(want.value)
    big = cv2.imencode(".png", np.zeros((300, 400, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="too large"):
        tensor_frames.swap_frame(big, SwapOptions(), tnets, DetectSettings(max_pixels=100_000), latents)


def test_the_device_helpers_are_opencvs():
    img = cv2.imread(str(image_path("group_insightface_t1.jpg")))
    frame = torch_ops.from_bgr(img)
    assert np.array_equal(torch_ops.luma(frame).numpy(), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    from pipeline.content import preprocess

    want = preprocess(img)[0]
    got = torch_ops.content_blob(frame, 320).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 1.5 / 255
    from pipeline.badge import burn_badge

    assert np.array_equal(torch_ops.to_bgr(torch_ops.burn_badge(frame.clone())), burn_badge(img))
    from pipeline.pixel_boost import explode, implode

    crops = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    t = torch.from_numpy(crops).permute(0, 3, 1, 2)
    assert np.array_equal(torch_ops.explode(t, 2).permute(0, 2, 3, 1).numpy(), explode(crops, 2))
    assert np.array_equal(torch_ops.implode(torch_ops.explode(t, 2), 2).numpy(), t.numpy())
    assert np.array_equal(implode(explode(crops, 2), 2), crops)
    for shape in ((1080, 1920), (200, 150), (64, 900)):
        pic = cv2.resize(img, shape[::-1])
        dev = torch_ops.from_bgr(pic)
        assert torch_ops.embed_watermark(dev, MARK)
        ours, ref = torch_ops.to_bgr(dev), watermark.embed(pic, PAYLOAD)
        assert psnr(ours, ref) > 40, shape
        found = watermark.detect(ours)
        assert found.found and found.payload == PAYLOAD, shape
    small = torch_ops.from_bgr(img[:60, :80])
    assert not torch_ops.embed_watermark(small, MARK) and np.array_equal(torch_ops.to_bgr(small), img[:60, :80])


def test_the_whole_path_with_torch_networks(models, nets, latents):
    """The GPU profile as it serves where there is no TensorRT: the ONNX graphs as torch modules
    (``pipeline.torch_net``, f32 here) behind the device path; against onnxruntime on the host."""
    from pipeline.local import torch_networks

    data = image_path("group_insightface_t1.jpg").read_bytes()
    opts = SwapOptions(output_format="png", watermark=MARK)
    host = frames.swap_frame(data, opts, nets, DetectSettings(), latents)
    dev = tensor_frames.swap_frame(data, opts, torch_networks(models), DetectSettings(), latents)
    assert len(assert_same_swap(host, dev)) == 6


def test_hostile_caller_values_get_the_same_clear_error_on_both_paths(nets, tnets, latents):
    """Found by attacking both servers: key points all at one point (no alignment) or beyond any
    frame, latents of norm 3e38 and NaN reference embeddings were a NaN from the swapper
    (INTERNAL) on one path and a NumPy message on the other; now one INVALID_ARG message each."""
    data = image_path("two_obama_biden_stage.jpg").read_bytes()
    kps = frames.analyze_frame(data, nets, DetectSettings(), np.eye(512, dtype=np.float32), embeddings=False).dets.kps
    cases = [
        ({"face_kps": np.full((1, 5, 2), 100.0, np.float32)}, latents, "five points define no alignment"),
        ({"face_kps": np.full((1, 5, 2), 1e30, np.float32)}, latents, "beyond +-1e+06 pixels"),
        ({"face_kps": kps[:1] * np.nan}, latents, "NaN or infinite"),
        ({}, np.full((1, 512), 3e38, np.float32), "inswapper latents are unit vectors"),
        ({"reference": np.full((1, 512), np.nan, np.float32)}, latents, "NaN, infinite or all-zero"),
    ]
    for kw, lat, message in cases:
        opts = SwapOptions(selection="similar") if "reference" in kw else SwapOptions()
        for path, n in ((frames, nets), (tensor_frames, tnets)):
            with pytest.raises(ValueError, match=re.escape(message)):
                path.swap_frame(data, opts, n, DetectSettings(), lat, **kw)


def test_a_lossless_webp_keeps_its_alpha():
    """A VP8L WebP (lossless, no extended header) carries alpha in its bitstream's header: the
    decoder now reads it, so the output keeps it (it was dropped on both paths)."""
    from pipeline.codec import decode_image

    rgba = np.dstack([cv2.imread(str(image_path("portrait_obama_small_320x240.jpg"))),
                      np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))])
    data = cv2.imencode(".webp", rgba, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert data[12:16] == b"VP8L"
    d = decode_image(data)
    assert d.alpha is not None and np.array_equal(d.alpha, rgba[:, :, 3])
    opaque = cv2.imencode(".webp", rgba[:, :, :3], [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert decode_image(opaque).alpha is None
