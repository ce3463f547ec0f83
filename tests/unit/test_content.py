"""The content gate's building blocks (pipeline.content) with the real detector (nudenet 3.4.2's
320n.onnx) on every shared photo and video frame, against the nudenet package itself; the refusal
path with the test-only stand-in that flags everything. No intimate image is made or stored."""

from __future__ import annotations

import glob
from pathlib import Path

import av
import cv2
import numpy as np
import onnxruntime as ort
import pytest

from pipeline import content as C
from repository import standins
from repository.download import ModelEntry, copy_from_package, load_manifest, verify
from repository.resolve import resolve_content
from tests.support.photos import IMAGES

#: Every shared photo (all of them: the false-positive figure is over the whole set).
PHOTOS = sorted(p for p in glob.glob(str(IMAGES / "*")) if p.endswith((".jpg", ".png")))
VIDEOS = sorted(glob.glob(str(IMAGES / "*.mp4")))


def _entry() -> ModelEntry:
    return next(e for e in load_manifest() if e.role == "content")


@pytest.fixture(scope="module")
def nudenet():
    import nudenet

    return nudenet.NudeDetector()


@pytest.fixture(scope="module")
def session(nudenet):
    """The real detector in onnxruntime, resolved as the repository build resolves it."""
    model = resolve_content(_entry(), "nudenet")
    assert not model.stand_in and model.source in ("downloaded", "package"), model
    s = ort.InferenceSession(model.path, providers=["CPUExecutionProvider"])
    return lambda blob: s.run(["output0"], {"images": blob})[0]


def test_the_shared_photos_are_there():
    assert len(PHOTOS) >= 20 and len(VIDEOS) >= 3, (IMAGES, PHOTOS, VIDEOS)


def test_blob_detections_and_scores_equal_nudenets_own_on_every_shared_photo(nudenet, session):
    from nudenet import nudenet as module

    worst = 0.0
    for path in PHOTOS:
        img = cv2.imread(path)
        blob, box = C.preprocess(img)
        ref_blob = module._read_image(path, C.INPUT_SIZE)[0]
        assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32
        assert np.array_equal(blob, ref_blob), path
        out = session(blob)
        assert out.shape == (1, C.OUTPUT_ROWS, C.ANCHORS)
        ref_out = nudenet.onnx_session.run(None, {"images": ref_blob})[0]
        worst = max(worst, float(np.abs(out - ref_out).max()))
        assert [d.as_nudenet() for d in C.detections(out, box)] == nudenet.detect(path), path
    assert worst == 0.0  # the same input through the same file: bit-identical


def test_the_real_detector_refuses_no_shared_photo(session, capsys):
    decisions = C.gate_images([cv2.imread(p) for p in PHOTOS], session)
    assert not any(d.refused for d in decisions), [(Path(p).name, d) for p, d in zip(PHOTOS, decisions) if d.refused]
    top = max(decisions, key=lambda d: d.top_score)
    with capsys.disabled():
        print(f"\ncontent gate: 0 of {len(PHOTOS)} shared photos refused; highest refused-class score "  # noqa: T201
              f"{top.top_score:.3f} ({top.top_class}) against the threshold {C.DEFAULT_THRESHOLD}")
    assert top.top_score < C.DEFAULT_THRESHOLD


def _frames(path: str):
    with av.open(path) as c:
        for frame in c.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def test_the_real_detector_refuses_no_frame_of_the_shared_videos(session, capsys):
    checked, worst = 0, 0.0
    for path in VIDEOS:  # every frame of every clip
        for frame in _frames(path):
            d = C.gate_images([frame], session)[0]
            assert not d.refused, (Path(path).name, checked, d)
            checked, worst = checked + 1, max(worst, d.top_score)
    with capsys.disabled():
        print(f"\ncontent gate: 0 of {checked} shared video frames refused; highest refused-class "  # noqa: T201
              f"score {worst:.3f}")
    assert checked >= 300
    # a normal frame (a hand at a chin) scores 0.466: the default keeps a margin above it
    assert worst <= C.DEFAULT_THRESHOLD - 0.1


def test_the_flag_all_standin_refuses_a_real_photo_and_flag_none_does_not(tmp_path):
    img = cv2.imread(PHOTOS[0])
    for name, expect in (("content_flag_all", True), ("content_flag_none", False)):
        path = standins.generate(tmp_path, "tiny", (name,))[name]["path"]
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out = s.run(["output0"], {"images": C.preprocess(img)[0]})[0]
        assert out.shape == (1, C.OUTPUT_ROWS, C.ANCHORS)
        d = C.decide(out)[0]
        assert d.refused is expect and d.policy == C.DEFAULT_POLICY_NAME
        assert d.result_fields() == {"content_refused": expect, "content_policy": "intimate-imagery"}
        # a policy that refuses only a covered class still refuses everything with flag-all
        assert C.decide(out, C.ContentPolicy(("BELLY_COVERED",), 0.9))[0].refused is expect


def test_refused_reads_only_the_policys_classes_at_its_threshold():
    policy = C.ContentPolicy(("ANUS_EXPOSED", "BUTTOCKS_EXPOSED"), 0.6)
    assert not C.refused({"FEMALE_BREAST_EXPOSED": 0.99, "FACE_FEMALE": 1.0}, policy)
    assert not C.refused({"ANUS_EXPOSED": 0.5999}, policy)
    assert C.refused({"ANUS_EXPOSED": 0.6}, policy)
    assert C.refused({"BUTTOCKS_EXPOSED": 0.9, "ANUS_EXPOSED": 0.0}, policy)
    assert not C.refused({}, policy)
    assert C.refused({c: C.DEFAULT_THRESHOLD for c in C.DEFAULT_REFUSED}, C.ContentPolicy())
    assert not C.refused({c: C.DEFAULT_THRESHOLD - 1e-6 for c in C.DEFAULT_REFUSED}, C.ContentPolicy())


def test_a_refused_class_counts_where_another_class_wins_its_anchor():
    out = np.zeros((1, C.OUTPUT_ROWS, C.ANCHORS), np.float32)
    out[0, 4 + C.LABELS.index("FACE_FEMALE"), 7] = 0.95  # nudenet reports only this class here
    out[0, 4 + C.LABELS.index("FEMALE_BREAST_EXPOSED"), 7] = 0.7
    out[0, :4, 7] = [100, 100, 50, 50]
    dets = C.detections(out, C.Letterbox(320, 320, 0, 0))
    assert [d.label for d in dets] == ["FACE_FEMALE"]
    d = C.decide(out)[0]
    assert d.refused and d.top_class == "FEMALE_BREAST_EXPOSED" and d.top_score == pytest.approx(0.7)


def test_policy_and_contract_errors_are_named():
    with pytest.raises(ValueError, match="NOT_A_CLASS"):
        C.ContentPolicy(("NOT_A_CLASS",))
    with pytest.raises(ValueError, match="non-empty"):
        C.ContentPolicy(())
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="threshold"):
            C.ContentPolicy(threshold=bad)
    assert C.ContentPolicy.parse(" anus_exposed, BUTTOCKS_EXPOSED ,", 0.7).refused == ("ANUS_EXPOSED",
                                                                                      "BUTTOCKS_EXPOSED")
    with pytest.raises(ValueError, match="uint8"):
        C.preprocess(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="anchors"):
        C.decide(np.zeros((1, 21, 2100), np.float32))


def test_letterbox_pads_bottom_and_right_to_a_square():
    img = np.full((100, 300, 3), 255, np.uint8)
    blob, box = C.preprocess(img)
    assert box == C.Letterbox(300, 100, 0, 200)
    assert blob[0, :, :100].min() == 1.0 and blob[0, :, 110:].max() == 0.0  # image on top, black below


def test_the_package_copy_is_checked(tmp_path):
    entry = _entry()
    path = copy_from_package(entry, tmp_path)
    assert path == tmp_path / "nudenet_320n.onnx" and verify(entry, path)
    assert resolve_content(entry, "nudenet", models_dir=tmp_path).source == "downloaded"
    wrong = ModelEntry(entry.name, entry.file, entry.role, entry.size, "0" * 64, (), entry.package)
    from repository.download import DownloadError

    with pytest.raises(DownloadError, match="not the file recorded"):
        copy_from_package(wrong, tmp_path / "other")


def test_content_choices_resolve(tmp_path, monkeypatch):
    entry = _entry()
    flag = resolve_content(entry, "flag-all", models_dir=tmp_path)
    assert flag.stand_in and flag.name == "content_flag_all" and Path(flag.path).is_file()
    own = resolve_content(entry, flag.path, models_dir=tmp_path)  # the operator's file of the same contract
    assert own.source == "operator" and not own.stand_in
    with pytest.raises(FileNotFoundError):
        resolve_content(entry, str(tmp_path / "nothing.onnx"), models_dir=tmp_path)
    # no copy and no package: the gate fails closed
    monkeypatch.setattr("repository.resolve.package_file", lambda e: None)
    closed = resolve_content(entry, "nudenet", models_dir=tmp_path / "empty")
    assert closed.stand_in and closed.name == "content_flag_all"


def test_a_detector_of_another_contract_is_refused_by_the_build(models):
    from repository.generate import read_net
    from repository.resolve import ResolvedModel

    scrfd = models["detector"]
    with pytest.raises(ValueError, match="not a content detector"):
        read_net("content", ResolvedModel("content", "x", scrfd.path, "operator", False))
