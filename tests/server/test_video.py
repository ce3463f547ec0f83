"""Video and batch jobs through the real server (tiny stand-ins), checked with PyAV."""

from __future__ import annotations

import asyncio
import json
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bench.clips import moving_face_frames, probe, write_clip
from client import AsyncFaceSwapClient
from media.batch import swap_batch
from media.video import VideoOptions, swap_video
from pipeline.quality import psnr
from tests.support.photos import image_path, load


def run_video(triton, latent, src: Path, dst: Path, **kw):
    async def go():
        async with AsyncFaceSwapClient(triton.grpc_url, "grpc", timeout=300) as ac:
            return await swap_video(ac, latent, src, dst, VideoOptions(**kw))

    return asyncio.run(go())


def assert_same_timing(a: dict, b: dict, frame_s: float) -> None:
    assert b["frames"] == a["frames"]
    assert np.abs(np.array(a["times"]) - np.array(b["times"])).max() < 1e-3
    assert abs(b["duration"] - a["duration"]) <= frame_s + 1e-3


@pytest.fixture(scope="module")
def face():
    return load("portrait_obama_official.jpg")


@pytest.mark.parametrize("rate", [Fraction(30), Fraction(30000, 1001)])
def test_cfr_clip_keeps_frames_timestamps_and_aac(triton, source_latent, face, tmp_path, rate):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, moving_face_frames(face, (640, 360), 24), rate, audio=[("aac", 48000, 0.8)])
    rep = run_video(triton, source_latent, src, dst)
    a, b = probe(src), probe(dst)
    assert_same_timing(a, b, float(1 / rate))
    assert len(b["audio"]) == 1 and abs(b["audio"][0]["seconds"] - a["audio"][0]["seconds"]) <= 0.05
    assert rep.frames == 24 and rep.frames_swapped == 24 and not rep.warnings


def test_vfr_timestamps_kept(triton, source_latent, face, tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    pts = np.cumsum([0] + [33 if i % 3 else 80 for i in range(1, 20)]).tolist()
    write_clip(src, moving_face_frames(face, (480, 320), 20), Fraction(25), pts=pts, time_base=Fraction(1, 1000))
    run_video(triton, source_latent, src, dst)
    a, b = probe(src), probe(dst)
    assert_same_timing(a, b, 0.08)
    assert len(set(np.round(np.diff(b["times"]), 3))) > 1  # still variable


def test_odd_size_is_padded_by_one_pixel(triton, source_latent, face, tmp_path):
    src, dst = tmp_path / "in.mkv", tmp_path / "out.mkv"
    frames = moving_face_frames(face, (641, 359), 12)
    write_clip(src, frames, Fraction(30), container="matroska", pix_fmt="yuv444p")
    assert (probe(src)["width"], probe(src)["height"]) == (641, 359)
    rep = run_video(triton, source_latent, src, dst)
    info = probe(dst)
    assert (info["width"], info["height"]) == (642, 360) and info["frames"] == 12 and rep.frames_swapped == 12
    import av

    with av.open(str(src)) as ci, av.open(str(dst)) as co:
        a = next(ci.decode(video=0)).to_ndarray(format="bgr24").astype(float)
        b = next(co.decode(video=0)).to_ndarray(format="bgr24").astype(float)
    assert np.abs(b[:359, 640] - b[:359, 639]).mean() < 8  # the added column repeats the edge
    assert np.abs(b[:359, :641] - a).mean() < 8


def test_rotation_honoured_for_detection_and_kept(triton, source_latent, face, tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    shown = moving_face_frames(face, (360, 480), 12, marker=True)  # portrait, as displayed
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in shown]  # sideways on disk
    write_clip(src, stored, Fraction(30), rotation=90)
    assert probe(src)["rotation"] == 90
    rep = run_video(triton, source_latent, src, dst)
    assert rep.frames_swapped >= 0.9 * 12 and rep.rotation == 90
    info = probe(dst)
    assert info["rotation"] == 90 and (info["width"], info["height"]) == (480, 360)
    import av

    with av.open(str(dst)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    displayed = np.rot90(frame, 1)
    assert displayed.shape[:2] == (480, 360)
    b, g, r = displayed[:10, :10].reshape(-1, 3).mean(axis=0)
    assert r > 150 and g < 80 and b < 80  # the red marker is still top-left


def test_two_audio_tracks_longer_audio_and_pcm(triton, source_latent, face, tmp_path):
    src, dst = tmp_path / "in.mov", tmp_path / "out.mp4"
    write_clip(src, moving_face_frames(face, (320, 240), 15), Fraction(15),
               audio=[("aac", 44100, 2.0), ("pcm_s16le", 48000, 1.5)], container="mov")
    rep = run_video(triton, source_latent, src, dst)
    a, b = probe(src), probe(dst)
    assert [x["codec"] for x in b["audio"]] == ["aac", "aac"] and rep.audio_reencoded == 1
    for x, y in zip(a["audio"], b["audio"]):
        assert abs(x["seconds"] - y["seconds"]) <= 0.05
    assert b["frames"] == 15 and any("re-encoded" in w for w in rep.warnings)


def test_no_audio_and_missing_face_frames_untouched(triton, source_latent, face, tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    missing = {5, 6, 7, 8}
    write_clip(src, moving_face_frames(face, (480, 270), 16, missing=missing), Fraction(30))
    rep = run_video(triton, source_latent, src, dst)
    assert rep.frames_swapped == 16 - len(missing) and probe(dst)["audio"] == []
    import av

    with av.open(str(src)) as ci, av.open(str(dst)) as co:
        fi = [f.to_ndarray(format="bgr24").astype(float) for f in ci.decode(video=0)]
        fo = [f.to_ndarray(format="bgr24").astype(float) for f in co.decode(video=0)]
    for i in missing:
        assert psnr(fo[i], fi[i]) > 35  # only re-encoding noise


def test_zeroed_bytes_mid_stream_completes_with_warning(triton, source_latent, face, tmp_path):
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, moving_face_frames(face, (480, 270), 30), Fraction(30), audio=[("aac", 48000, 1.0)])
    raw = bytearray(src.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 200] = bytes(200)
    src.write_bytes(bytes(raw))
    rep = run_video(triton, source_latent, src, dst)
    info = probe(dst)
    assert 0 < info["frames"] <= 30 and rep.frames == info["frames"]
    assert any("damaged" in w for w in rep.warnings), rep.warnings


def test_batch_lists_bad_files_and_never_uses_client_names_as_paths(triton, source_latent, tmp_path):
    zpath = tmp_path / "in.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("../../x.jpg", image_path("portrait_biden_official.jpg").read_bytes())
        z.writestr("тест_人脸_é ü.jpg", image_path("group_insightface_t1.jpg").read_bytes())
        z.writestr("notes.txt", b"not an image")
    out = tmp_path / "out"

    async def go():
        async with AsyncFaceSwapClient(triton.grpc_url, "grpc") as ac:
            return await swap_batch(ac, source_latent, zpath, out)

    rep = asyncio.run(go())
    assert [i.error is None for i in rep.items] == [True, True, False]
    assert rep.items[0].faces_swapped == 1 and rep.items[1].faces_swapped == 6
    assert all((out / i.output).resolve().parent == out.resolve() for i in rep.items if i.output)
    report = json.loads((out / "batch_report.json").read_text())
    assert report["failed"] == 1 and "unsupported" in report["items"][2]["error"]
    assert not (tmp_path.parent / "x.jpg").exists()


def test_video_limits_from_the_header_and_from_what_is_decoded(triton, source_latent, face, tmp_path):
    from media.video import VideoLimitError, VideoLimits

    mkv = tmp_path / "forty.mkv"  # Matroska declares no frame count: only decoding can count them
    write_clip(mkv, moving_face_frames(face, (160, 120), 40), container="matroska")
    with pytest.raises(VideoLimitError) as e:
        run_video(triton, source_latent, mkv, tmp_path / "o.mp4", limits=VideoLimits(max_frames=30))
    assert e.value.code == "video_too_many_frames" and not (tmp_path / "o.mp4").exists()
    mp4 = tmp_path / "forty.mp4"
    write_clip(mp4, moving_face_frames(face, (160, 120), 40))
    for limits, code in [(VideoLimits(max_duration_s=1.0), "video_too_long"),
                         (VideoLimits(max_frame_pixels=160 * 119), "video_frame_too_large"),
                         (VideoLimits(max_pixel_rate=160 * 120 * 29.0), "video_pixel_rate_too_high")]:
        with pytest.raises(VideoLimitError) as e:
            run_video(triton, source_latent, mp4, tmp_path / "o.mp4", limits=limits)
        assert e.value.code == code
    progress = []

    async def go():
        async with AsyncFaceSwapClient(triton.grpc_url, "grpc", timeout=300) as ac:
            await swap_video(ac, source_latent, mkv, tmp_path / "ok.mp4",
                             progress=lambda d, t, fps: progress.append((d, t)))

    asyncio.run(go())
    assert progress[-1] == (40, 40)  # the total is what was decoded
