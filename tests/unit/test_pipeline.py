"""Unit tests of the numerical core (no server)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.codec import ImageError, decode_image, encode_image, sniff_format
from pipeline.detection import Detections, detector_blob, letterbox, letterbox_blob
from pipeline.paste import paste_back
from pipeline.quality import psnr
from pipeline.selection import OptionsError, SwapOptions, select_faces
from pipeline.stages import chunked
from tests.support.photos import image_path


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


@pytest.mark.parametrize("shape", [(720, 1280), (360, 640), (1080, 1920), (1000, 300), (1, 2000), (2000, 1),
                                   (640, 640), (300, 200)])
def test_letterbox_blob_is_the_two_step_blob_to_the_bit(shape):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    det_img, scale = letterbox(img, (640, 640))
    blob, blob_scale = letterbox_blob(img, (640, 640))
    assert blob_scale == scale and blob.dtype == np.float32 and np.array_equal(blob, detector_blob(det_img))


def test_a_large_jpeg_decodes_reduced_for_a_letterbox_only():
    img = cv2.resize(cv2.imread(str(image_path("portrait_obama_official.jpg"))), (1920, 1080))
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    full = decode_image(data)
    half = decode_image(data, fit_within=(640, 640))  # fitted: 640x360, so 1/2 (960x540), not 1/4 (480x270)
    assert full.reduced == 1 and full.bgr.shape == (1080, 1920, 3)
    assert half.reduced == 2 and half.bgr.shape == (540, 960, 3)
    assert psnr(cv2.resize(full.bgr, (960, 540), interpolation=cv2.INTER_AREA), half.bgr) > 35
    assert decode_image(data, fit_within=(1200, 1200)).reduced == 1  # 1/2 would be under the fitted 1200x675
    png = cv2.imencode(".png", img)[1].tobytes()
    assert decode_image(png, fit_within=(640, 640)).reduced == 1  # DCT scaling is JPEG's only
    exif = data[:2] + b"\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + data[2:]
    assert decode_image(exif, fit_within=(640, 640)).reduced == 1  # an orientation may swap the sides


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
    assert not sel.no_match
    sel = select_faces(d, SwapOptions(selection="pairs"), 64, emb, np.eye(1, 512, 7, dtype=np.float32))
    assert sel.indices.size == 0 and sel.no_match


def test_select_similar_has_a_threshold():
    d = dets(3)
    emb = np.eye(3, 512, dtype=np.float32)
    assert SwapOptions().threshold == 0.3
    # the reference person is absent: every face is orthogonal to it (cosine 0 < 0.3), no stranger is swapped
    stranger = np.eye(1, 512, 9, dtype=np.float32)
    sel = select_faces(d, SwapOptions(selection="similar"), 64, emb, stranger)
    assert sel.indices.size == 0 and sel.latent_index.size == 0 and sel.no_match
    # the reference person is face 1 (a noisy view of it: cosine 0.8 to face 1, 0.36 / 0 to the others)
    ref = 0.8 * emb[1] + 0.36 * emb[0] + 0.48 * np.eye(1, 512, 9, dtype=np.float32)[0]
    sel = select_faces(d, SwapOptions(selection="similar"), 64, emb, ref[None])
    assert sel.indices.tolist() == [1] and sel.latent_index.tolist() == [0] and not sel.no_match
    # the threshold is the caller's: above the best cosine nothing matches, -1 takes the most similar face
    assert select_faces(d, SwapOptions(selection="similar", threshold=0.81), 64, emb, ref[None]).no_match
    sel = select_faces(d, SwapOptions(selection="similar", threshold=-1), 64, emb, stranger)
    assert sel.indices.size == 1 and not sel.no_match
    # no face at all is not "no match"
    assert not select_faces(dets(0), SwapOptions(selection="similar"), 64, emb[:0], stranger).no_match


def test_align_stage_similar_swaps_only_the_matching_face():
    from pipeline.align import ARCFACE_DST
    from pipeline.stages import align_stage

    image = np.random.default_rng(0).integers(0, 255, (120, 360, 3), np.uint8)
    kps = np.stack([ARCFACE_DST + [i * 120 + 4, 4] for i in range(3)]).astype(np.float32)
    boxes = np.array([[i * 120, 0, i * 120 + 112, 112] for i in range(3)], np.float32)
    d = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), kps)
    emb = np.eye(3, 512, dtype=np.float32)
    calls = []

    def embed_fn(blob):  # face k of the image has embedding e_k
        calls.append(blob.shape)
        return emb[:blob.shape[0]] * 5.0  # raw (not normed) like ArcFace

    far = np.eye(1, 512, 100, dtype=np.float32)
    a = align_stage(image, d, SwapOptions(selection="similar"), 64, embed_fn, 8, far)
    assert calls == [(3, 3, 112, 112)]
    assert a.selected.size == 0 and a.crops.shape == (0, 128, 128, 3) and a.affines.shape == (0, 2, 3)
    assert a.no_match and len(a.dets) == 3
    a = align_stage(image, d, SwapOptions(selection="similar"), 64, embed_fn, 8, emb[2:3])
    assert a.selected.tolist() == [2] and a.crops.shape == (1, 128, 128, 3) and not a.no_match
    assert not align_stage(image, d, SwapOptions(), 64, embed_fn, 8).no_match


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
    # flips can move mask_size across a //10 step and change the erosion kernel by one. The
    # blend rounds where insightface truncates (one level, in the blend band only: at most 2%
    # of the frame here), and a wide blur runs at a reduced scale (pipeline.paste): a few
    # levels on a handful of pixels (0.04% differ by more than one, by 7 at most).
    assert (diff > 1).mean() < 0.001 and (diff > 0).mean() < 0.025 and diff.max() <= 8
    assert psnr(ours, expected) >= 60


def test_codec_sniffs_bytes_not_names():
    img = np.zeros((4, 4, 3), np.uint8)
    for fmt in ("jpeg", "png", "webp"):
        assert sniff_format(encode_image(img, fmt)) == fmt
    assert sniff_format(b"%PDF-1.4") is None
    with pytest.raises(ImageError, match="unsupported"):
        decode_image(b"%PDF-1.4 fake")
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


# --- Tiled detection (elongated images), with the real SCRFD detector -------------------------

#: Head-and-shoulders crop (x0, y0, x1, y1) of portrait_obama_official.jpg pasted into strips.
CROP = (270, 40, 720, 480)


class _Detector:
    """The real SCRFD on onnxruntime: the whole-image pass and a counting ``detect_fn``."""

    def __init__(self, path: str) -> None:
        import onnxruntime as ort

        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        self.calls: list[tuple[int, ...]] = []

    def detect_fn(self, blob: np.ndarray) -> list[np.ndarray]:
        self.calls.append(blob.shape)
        return self.sess.run(None, {self.name: blob})

    def stage(self, img: np.ndarray, **kw) -> tuple[Detections, Detections]:
        """(whole-image pass alone, detect_stage with the extra passes); resets ``calls``."""
        from pipeline.detection import decode_scrfd, detector_blob
        from pipeline.stages import detect_stage

        det_img, scale = letterbox(img, (640, 640))
        heads = self.sess.run(None, {self.name: detector_blob(det_img)})
        self.calls.clear()
        plain = decode_scrfd(heads, (640, 640), scale, kw.get("det_thresh", 0.5), 0.4)
        return plain, detect_stage(heads, (640, 640), scale, kw.pop("det_thresh", 0.5), 0.4, img,
                                   self.detect_fn, **kw)


@pytest.fixture(scope="module")
def detector(models):
    return _Detector(models["detector"].path)


def _strip(length: int, pos: int, vertical: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 64 x ``length`` strip (``length`` x 64 when vertical) of smooth random texture with the
    portrait's head scaled to 60x59 px pasted upright at ``pos`` along it; and where the
    detector's face box (float32 [4]) of the portrait lands in the strip."""
    from tests.support.photos import load

    portrait = load("portrait_obama_official.jpg")
    x0, y0, x1, y1 = CROP
    head = cv2.resize(portrait[y0:y1, x0:x1], (60, 59), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    shape = (length, 64, 3) if vertical else (64, length, 3)
    img = cv2.GaussianBlur(rng.integers(60, 200, shape, dtype=np.uint8), (0, 0), 3)
    px, py = (2, pos) if vertical else (pos, 2)
    img[py:py + 59, px:px + 60] = head
    return img, np.array([px, py, px, py], np.float32)


def test_tile_windows_rule():
    from pipeline.detection import TILE_MAX_WINDOWS, tile_windows

    # Ordinary photos and frames (long/short <= 2.5), and small images, are never tiled.
    for h, w in [(886, 1280), (2204, 970), (1080, 1920), (1000, 2500), (1080, 2560), (64, 800), (240, 320)]:
        assert tile_windows(h, w).shape == (0, 4), (h, w)
    cases = {(64, 4000): 16, (4000, 64): 16, (1000, 3000): 4, (640, 40000): 16, (100, 2000): 8, (300, 1280): 5}
    for (h, w), n in cases.items():
        win = tile_windows(h, w)
        assert len(win) == n <= TILE_MAX_WINDOWS, (h, w)
        ax = 0 if w >= h else 1
        lo, hi = win[:, ax], win[:, ax + 2]
        length, long_side = hi[0] - lo[0], max(h, w)
        assert (win[:, 1 - ax] == 0).all() and (win[:, 3 - ax] == min(h, w)).all()  # the whole short side
        assert lo[0] == 0 and hi[-1] == long_side and (hi - lo == length).all()  # cover the long side
        assert length >= max(min(h, w), 320)  # about square, magnified at most 2x
        overlap = hi[:-1] - lo[1:]
        assert overlap.min() >= max(0.25 * length, 24 * long_side / 640) - 1
        assert long_side / length > 2.5  # each window sees faces > 2.5x larger than the plain pass
    assert tile_windows(1000, 3000)[:, 2].tolist() == [1000, 1667, 2333, 3000]


@pytest.mark.parametrize("vertical", [False, True], ids=["64x4000", "4000x64"])
@pytest.mark.parametrize("where", ["start", "middle", "overlap", "window_edge", "end"])
def test_tiles_find_a_face_in_a_long_strip(detector, vertical, where):
    from pipeline.detection import tile_windows

    win = tile_windows(4000, 64) if vertical else tile_windows(64, 4000)
    ax = 1 if vertical else 0
    pos = {"start": 0, "middle": 1970, "end": 4000 - 60,
           "overlap": int((win[8, ax] + win[7, ax + 2]) / 2) - 30,  # centred between windows 7 and 8
           "window_edge": int(win[8, ax]) - 30}[where]  # cut in half by window 8's first edge
    img, offset = _strip(4000, pos, vertical)
    from tests.support.photos import load

    portrait = load("portrait_obama_official.jpg")
    _, ref = detector.stage(portrait)
    assert len(ref) == 1
    x0, y0, x1, y1 = CROP
    expected = (ref.boxes[0] - [x0, y0, x0, y0]) * np.array([60 / (x1 - x0), 59 / (y1 - y0)] * 2) + offset

    plain, dets = detector.stage(img)
    assert len(plain) == 0  # the whole strip letterboxed to 640x10: the face is ~10 px
    assert len(detector.calls) == 16  # 16 windows (the cap); no close-up pass on a tiled image
    assert len(dets) == 1 and dets.scores[0] >= 0.5
    assert np.abs(dets.boxes[0] - expected).max() <= 4.0, (dets.boxes[0], expected)
    kps = dets.kps[0]
    assert (kps >= dets.boxes[0][:2] - 1).all() and (kps <= dets.boxes[0][2:] + 1).all()


@pytest.mark.parametrize("name", ["group_insightface_t1.jpg", "portrait_biden_official.jpg",
                                  "portrait_obama_podium.jpg", "two_obama_biden_stage.jpg",
                                  "group_voc_2008_004176.jpg", "noface_coffee.png"])
def test_tiles_leave_ordinary_photos_exactly_as_the_plain_path(detector, name):
    from tests.support.photos import load

    plain, dets = detector.stage(load(name))
    assert len(dets) == len(plain)
    for a, b in [(dets.boxes, plain.boxes), (dets.scores, plain.scores), (dets.kps, plain.kps)]:
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # No window: the detector runs again only for the close-up retry of a face-less photo.
    assert len(detector.calls) == (0 if len(plain) else 1)


@pytest.mark.parametrize("copies,windows", [(6, 7), (10, 14)])
def test_tiles_find_every_small_face_of_a_panorama(detector, copies, windows):
    """Copies of the group photo at 200 px high side by side (200x1734, 200x2890): the plain
    pass sees the 22-25 px faces at 8 or 5 px (6 copies: it finds some, boxes off by up to 15
    px; 10 copies: none). With tiles every face is found once, where the detector puts it in a
    single copy: no duplicate from the plain pass's imprecise boxes or from window overlaps."""
    from tests.support.photos import load

    t1 = load("group_insightface_t1.jpg")
    one = cv2.resize(t1, (289, 200), interpolation=cv2.INTER_AREA)
    _, single = detector.stage(one)
    assert len(single) == 6 and len(detector.calls) == 0
    plain, dets = detector.stage(np.hstack([one] * copies))
    assert len(plain) < 6 * copies and len(detector.calls) == windows
    expected = np.concatenate([single.boxes + [289 * i, 0, 289 * i, 0] for i in range(copies)])
    err = np.abs(expected[:, None, :] - dets.boxes[None]).max(axis=2)
    assert len(dets) == 6 * copies and err.min(axis=1).max() <= 3.0 and (err <= 3.0).sum(axis=0).max() == 1
    assert (np.diff(dets.scores) <= 0).all()  # insightface's order


def test_tiles_apply_det_thresh_in_every_window(detector):
    img, _ = _strip(4000, 1234, False)
    _, dets = detector.stage(img)
    assert len(dets) == 1
    _, above = detector.stage(img, det_thresh=float(dets.scores[0]) + 1e-3)
    assert len(above) == 0 and len(detector.calls) == 16
    blank = cv2.GaussianBlur(np.random.default_rng(3).integers(60, 200, (64, 4000, 3), dtype=np.uint8), (0, 0), 3)
    _, none = detector.stage(blank)
    assert len(none) == 0 and len(detector.calls) == 16  # no close-up pass after the windows
    _, off = detector.stage(img, tiles=False)
    assert len(off) == 0 and len(detector.calls) == 1  # tiles off: today's close-up retry only
