"""The GPU profile's pixel stages (pipeline.torch_ops) against the CPU stages they replace, run
with PyTorch on the CPU: the same code paths as on a GPU, so CI guards their parity (issue 20:
boxes within 1 px, swapped faces >= 40 dB). The real SCRFD and the tiny stand-ins, through
onnxruntime on both sides."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

try:
    import torch
except ImportError:  # a test that needs something missing fails and says what to install
    pytest.fail("tests/unit/test_torch_ops.py needs PyTorch: `make test` installs it "
                "(pip install torch==2.13.0, the CPU build)", pytrace=False)

from pipeline import torch_ops
from pipeline.align import crops_to_blob, estimate_norm, norm_crop
from pipeline.detection import decode_scrfd, letterbox_blob
from pipeline.paste import paste_back, swapper_output_to_bgr
from pipeline.quality import psnr
from pipeline.tensor_frames import decode_frame
from pipeline.torch_net import OnnxModule
from tests.support.photos import image_path

PHOTOS = ["group_insightface_t1.jpg", "two_obama_biden_stage.jpg", "portrait_obama_official.jpg"]


@pytest.fixture(scope="module")
def sessions(models):
    return {r: ort.InferenceSession(models[r].path, providers=["CPUExecutionProvider"])
            for r in ("detector", "swapper")}


def detect(sess, blob: np.ndarray, scale: float):
    heads = sess.run(None, {sess.get_inputs()[0].name: blob})
    return decode_scrfd(heads, blob.shape[2:], scale)


@pytest.fixture(scope="module")
def latent():
    v = np.random.default_rng(5).standard_normal((1, 512)).astype(np.float32)
    return v / np.linalg.norm(v)


def test_frames_cross_between_layouts_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    t = torch_ops.from_bgr(img)
    assert t.shape == (3, 7, 5) and t.dtype == torch.uint8 and np.array_equal(t[0].numpy(), img[:, :, 2])
    assert np.array_equal(torch_ops.to_bgr(t), img)


@pytest.mark.parametrize("shape", [(720, 1280), (360, 640), (1080, 1920), (1000, 300), (1, 2000), (640, 640)])
def test_letterbox_blob_is_opencvs_within_a_level(shape):
    img = cv2.resize(cv2.imread(str(image_path("group_insightface_t1.jpg"))), shape[::-1])
    ref, ref_scale = letterbox_blob(img)
    blob, scale = torch_ops.letterbox_blob(torch_ops.from_bgr(img))
    diff = np.abs(blob.numpy() - ref) * 128  # in levels
    assert scale == ref_scale and blob.shape == ref.shape and blob.dtype == torch.float32
    # OpenCV resizes in fixed point (11-bit weights) where this is float, rounded once: one
    # level at most, on under a tenth of the values (7.7% at 1280x720)
    assert diff.max() <= 1.001 and (diff > 0.5).mean() < 0.1, (diff.max(), (diff > 0.5).mean())


@pytest.mark.parametrize("name", PHOTOS)
def test_detections_from_the_tensor_letterbox_match_within_a_pixel(sessions, name):
    img = cv2.imread(str(image_path(name)))
    ref = detect(sessions["detector"], *letterbox_blob(img))
    blob, scale = torch_ops.letterbox_blob(torch_ops.from_bgr(img))
    ours = detect(sessions["detector"], blob.numpy(), scale)
    assert len(ref) > 0 and len(ours) == len(ref)
    assert np.abs(ours.boxes - ref.boxes).max() < 1.0 and np.abs(ours.kps - ref.kps).max() < 1.0


@pytest.mark.parametrize("name", PHOTOS)
def test_aligned_crops_are_norm_crops_within_a_level_or_two(sessions, name):
    img = cv2.imread(str(image_path(name)))
    dets = detect(sessions["detector"], *letterbox_blob(img))
    for size in (112, 128):
        ms = np.stack([estimate_norm(k, size) for k in dets.kps])
        ours = torch_ops.crops(torch_ops.from_bgr(img), ms, size)
        for i, kps in enumerate(dets.kps):
            ref = norm_crop(img, kps, size)[0]
            got = ours[i].permute(1, 2, 0).flip(-1).numpy()
            diff = np.abs(got - ref)
            # OpenCV's warp samples at 1/32 pixel: up to 3 levels on a few edge pixels
            assert diff.max() <= 3 and (diff > 1).mean() < 0.01, (size, i, diff.max(), (diff > 1).mean())
            assert psnr(got.astype(np.uint8), ref) > 50


def test_erode_and_blur_are_opencvs():
    rng = np.random.default_rng(1)
    mask = np.zeros((90, 120), np.uint8)
    cv2.ellipse(mask, (60, 45), (40, 30), 15, 0, 360, 255, -1)
    mask[rng.random(mask.shape) < 0.01] = 0
    for k in (10, 11):
        ref = cv2.erode(mask, np.ones((k, k), np.uint8))
        assert np.array_equal(torch_ops._erode(torch.from_numpy(mask).float(), k).numpy().astype(np.uint8), ref)
    for ksize in (11, 21, 31):
        ref = cv2.GaussianBlur(mask, (ksize, ksize), 0)
        got = torch_ops._blur(torch.from_numpy(mask).float(), ksize).numpy()
        assert np.abs(got - ref).max() <= 1.5  # OpenCV blurs in fixed point and rounds to uint8


def swap_cpu(img: np.ndarray, kps: np.ndarray, swp, latent) -> np.ndarray:
    """The CPU stages: norm_crop, inswapper, paste_back, face by face."""
    out = img.copy()
    for k in kps:
        crop, m = norm_crop(img, k, 128)
        pred = swp.run(None, {"target": crops_to_blob(crop[None], 0.0, 255.0), "source": latent})[0]
        paste_back(out, swapper_output_to_bgr(pred)[0], m)
    return out


def swap_tensor(img: np.ndarray, kps: np.ndarray, swp, latent) -> np.ndarray:
    """The tensor stages: every crop in one warp, inswapper on the batch, paste_back."""
    frame = torch_ops.from_bgr(img)
    ms = np.stack([estimate_norm(k, 128) for k in kps])
    blob = torch_ops.crops(frame, ms, 128) / 255.0
    pred = torch.from_numpy(swp.run(None, {"target": blob.numpy(), "source": np.repeat(latent, len(kps), 0)})[0])
    fakes = torch_ops.swapper_output(pred)
    for fake, m in zip(fakes, ms):
        torch_ops.paste_back(frame, fake, m)
    return torch_ops.to_bgr(frame)


@pytest.mark.parametrize("name", PHOTOS)
def test_a_swap_in_tensor_ops_is_the_cpu_swap_above_50_db_a_face(sessions, latent, name):
    img = cv2.imread(str(image_path(name)))
    dets = detect(sessions["detector"], *letterbox_blob(img))
    ref = swap_cpu(img, dets.kps, sessions["swapper"], latent)
    ours = swap_tensor(img, dets.kps, sessions["swapper"], latent)
    assert not np.array_equal(ref, img)  # something was swapped
    assert psnr(ours, ref) >= 55  # measured 63.6-67.2 dB
    for box in dets.boxes.astype(int):  # and on each face alone, where the work is
        x0, y0, x1, y1 = np.clip(box, 0, [img.shape[1], img.shape[0]] * 2)
        assert psnr(ours[y0:y1, x0:x1], ref[y0:y1, x0:x1]) >= 50, (name, box)  # measured >= 55.0; the bar: 40


@pytest.fixture(scope="module")
def torch_nets(models):
    import onnx

    return {r: OnnxModule(onnx.load(models[r].path), torch.float32, "cpu")
            for r in ("detector", "recognizer", "swapper", "content")}


def test_the_four_networks_in_torch_are_onnxruntimes(models, sessions, torch_nets):
    """The GPU profile's networks where there is no TensorRT: each ONNX graph run with torch ops
    (fp32 here; reduced precision goes through the same self-check as on the CPU)."""
    img = cv2.imread(str(image_path("group_insightface_t1.jpg")))
    blob, scale = letterbox_blob(img)
    with torch.no_grad():
        heads = [h.numpy() for h in torch_nets["detector"](torch.from_numpy(blob))]
    ref, ours = detect(sessions["detector"], blob, scale), decode_scrfd(heads, blob.shape[2:], scale)
    assert len(ours) == len(ref) == 6 and np.abs(ours.boxes - ref.boxes).max() < 0.01
    rng = np.random.default_rng(2)
    faces = rng.standard_normal((3, 3, 112, 112)).astype(np.float32)
    rec = ort.InferenceSession(models["recognizer"].path, providers=["CPUExecutionProvider"])
    want = rec.run(None, {rec.get_inputs()[0].name: faces})[0]
    with torch.no_grad():
        got = torch_nets["recognizer"](torch.from_numpy(faces))[0].numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99999
    target, source = rng.random((2, 3, 128, 128)).astype(np.float32), rng.standard_normal((2, 512)).astype(np.float32)
    want = sessions["swapper"].run(None, {"target": target, "source": source})[0]
    names = torch_nets["swapper"].inputs
    feeds = {"target": torch.from_numpy(target), "source": torch.from_numpy(source)}
    with torch.no_grad():
        got = torch_nets["swapper"](*[feeds[n] for n in names])[0].numpy()
    assert np.abs(got - want).max() < 3e-3  # under one 8-bit level (1/255) of the face; fp32 sums reordered
    gate = ort.InferenceSession(models["content"].path, providers=["CPUExecutionProvider"])
    x = rng.random((1, 3, 320, 320)).astype(np.float32)  # the content gate's YOLO: anchors made in the graph
    want = gate.run(None, {gate.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = torch_nets["content"](torch.from_numpy(x))[0].numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-3 * np.abs(want).max()


def test_a_frame_through_tensor_stages_and_torch_networks_is_the_cpu_swap(sessions, torch_nets, latent):
    """The GPU profile's whole data path, on the CPU: decode, letterbox, the detector, crops,
    the swapper and paste-back all in torch, one frame tensor from decode to encode."""
    img = cv2.imread(str(image_path("two_obama_biden_stage.jpg")))
    ref_dets = detect(sessions["detector"], *letterbox_blob(img))
    ref = swap_cpu(img, ref_dets.kps, sessions["swapper"], latent)
    frame = decode_frame(cv2.imencode(".png", img)[1].tobytes()).frame
    with torch.no_grad():
        blob, scale = torch_ops.letterbox_blob(frame)
        dets = decode_scrfd([h.numpy() for h in torch_nets["detector"](blob)], blob.shape[2:], scale)
        assert len(dets) == len(ref_dets) and np.abs(dets.kps - ref_dets.kps).max() < 1.0
        ms = np.stack([estimate_norm(k, 128) for k in dets.kps])
        feeds = {"target": torch_ops.crops(frame, ms, 128) / 255.0,
                 "source": torch.from_numpy(np.repeat(latent, len(ms), 0))}
        pred = torch_nets["swapper"](*[feeds[n] for n in torch_nets["swapper"].inputs])[0]
        for fake, m in zip(torch_ops.swapper_output(pred), ms):
            torch_ops.paste_back(frame, fake, m)
    ours = torch_ops.to_bgr(frame)
    assert psnr(ours, ref) >= 45
    for box in ref_dets.boxes.astype(int):
        x0, y0, x1, y1 = np.clip(box, 0, [img.shape[1], img.shape[0]] * 2)
        assert psnr(ours[y0:y1, x0:x1], ref[y0:y1, x0:x1]) >= 40, box


def test_jpeg_round_trip_through_the_tensor_codec():
    img = cv2.imread(str(image_path("portrait_obama_official.jpg")))
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    frame = decode_frame(data).frame
    assert frame.shape == (3, *img.shape[:2]) and frame.dtype == torch.uint8
    again = decode_frame(torch_ops.encode_jpeg(frame, 95)).frame
    assert psnr(torch_ops.to_bgr(again), torch_ops.to_bgr(frame)) > 38
    with pytest.raises(ValueError):
        decode_frame(b"not an image")


def test_cuda_graph_replays_pad_batches_to_powers_of_two_and_return_their_own_rows(torch_nets):
    """``torch_net.CudaGraphed``'s bookkeeping (the part that is not CUDA's): one graph per padded
    shape, inputs copied in and padded with the last row, outputs sliced and copied out, a shape
    that fails to capture run eagerly. The capture itself is emulated here (no CUDA): a replay
    re-runs the module on the static buffers."""
    from pipeline.torch_net import CudaGraphed

    recorded = []

    class Emulated(CudaGraphed):
        def _record(self, static_in):
            recorded.append(tuple(static_in[0].shape))
            static_out = [o.clone() for o in self.module(*static_in)]

            def replay():
                for o, r in zip(static_out, self.module(*static_in)):
                    o.copy_(r)

            return replay, static_out

    swapper = torch_nets["swapper"]
    graphed = Emulated(swapper)
    rng = np.random.default_rng(4)
    feeds = {"target": torch.from_numpy(rng.random((8, 3, 128, 128), dtype=np.float32)),
             "source": torch.from_numpy(rng.standard_normal((8, 512)).astype(np.float32))}
    with torch.no_grad():
        first = None
        for n in (1, 3, 5, 8, 2, 4):
            args = [feeds[k][:n] for k in swapper.inputs]
            got, want = graphed(*args)[0], swapper(*args)[0]
            assert got.shape[0] == n and torch.equal(got, want), n
            if first is None:
                first = got
        assert torch.equal(first, swapper(*[feeds[k][:1] for k in swapper.inputs])[0])  # not overwritten
    assert [s[0] for s in recorded] == [1, 4, 8, 2]  # 3 -> 4, 5 -> 8; 8, 2, 4 replayed

    recorded.clear()  # a served network captures every batch its dynamic batching can form at load
    warmed = Emulated(swapper)
    assert warmed.warm([(3, 128, 128), (512,)], 5, "cpu") == [1, 2, 4, 8]
    assert [s[0] for s in recorded] == [1, 2, 4, 8]
    with torch.no_grad():
        args = [feeds[k][:6] for k in swapper.inputs]
        assert torch.equal(warmed(*args)[0], swapper(*args)[0]) and len(recorded) == 4  # replayed, not captured
    assert Emulated(swapper).warm([(3, 128, 128), (512,)], 1, "cpu") == [1]

    told = []

    class Failing(CudaGraphed):
        def _record(self, static_in):
            raise RuntimeError("operation not permitted when stream is capturing")

    failing = Failing(swapper, told.append)
    with torch.no_grad():
        for _ in range(2):
            args = [feeds[k][:3] for k in swapper.inputs]
            assert torch.equal(failing(*args)[0], swapper(*args)[0])
    assert len(told) == 1 and "runs eagerly" in told[0] and "(padded to 4)" in told[0]
    assert Failing(swapper, told.append).warm([(3, 128, 128), (512,)], 2, "cpu") == []  # eager: told, none
