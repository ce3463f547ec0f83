"""``python -m bench.marking``: what marking adds per output (issue 12), written to out/bench_marking.json.

Per 1920x1080 image (a real photo resized), for JPEG (q95), PNG and WebP (q95), the median
over ``--repeats`` runs of each step ``provenance.mark_image`` takes, measured separately:

- ``watermark_ms``: embedding the mark in the decoded pixels (``watermark.embed``);
- ``reencode_ms``: decoding the output and encoding it once more (marking pixels of an output
  that is already encoded costs this; an encoder that marks before its one encode does not);
- ``xmp_ms``: writing the XMP packet into the encoded bytes;
- ``c2pa_ms``: building and signing the manifest (dev EC P-256 chain, no timestamp authority);
- ``total_ms``: ``mark_image`` end to end.

Per 1280x720 video frame: ``watermark_frame`` in the encoder loop; and for a whole MP4
(``--frames`` frames of 720p H.264, crf 18 as the jobs use) XMP + C2PA signing per file, per
frame and per MB. Plus ``verify`` times and the watermark's bit accuracy after JPEG q75, a 50%
downscale and a 10% crop on the shared photos. Timings are on this machine; compare within one run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from bench import summary
from pipeline import watermark
from pipeline.quality import psnr
from provenance import (
    Payload,
    ProvenanceSigner,
    c2pa_manifest,
    mark_image,
    mark_video_file,
    verify,
    watermark_frame,
    xmp,
)
from provenance.mark import output_xmp_packet
from repository.layout import shared_dir

MODELS = [{"name": "det_2.5g", "sha256": "0" * 64, "stand_in": False},
          {"name": "w600k_r50", "sha256": "1" * 64, "stand_in": True},
          {"name": "inswapper_128", "sha256": "2" * 64, "stand_in": True}]
EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def _encode(img: np.ndarray, fmt: str) -> bytes:
    params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95], "png": [cv2.IMWRITE_PNG_COMPRESSION, 1],
              "webp": [cv2.IMWRITE_WEBP_QUALITY, 95]}[fmt]
    return cv2.imencode(EXT[fmt], img, params)[1].tobytes()


def bench_images(img: np.ndarray, target: bytes, signer: ProvenanceSigner, repeats: int) -> dict:
    payload = Payload(signer.service_id, 1)
    out = {}
    for fmt in ("jpeg", "png", "webp"):
        data = _encode(img, fmt)
        with_xmp = xmp.add_xmp(data, fmt, output_xmp_packet())
        row = {
            "watermark_ms": _median_ms(lambda: watermark.embed(img, payload), repeats),
            "reencode_ms": _median_ms(lambda d=data, f=fmt: _encode(cv2.imdecode(np.frombuffer(d, np.uint8), 1), f),
                                      repeats),
            "xmp_ms": _median_ms(lambda d=data, f=fmt: xmp.add_xmp(d, f, output_xmp_packet()), repeats),
            "c2pa_ms": _median_ms(lambda d=with_xmp, f=fmt: c2pa_manifest.sign_bytes(
                d, f, target=target, models=MODELS, result_id=1, signer=signer), repeats),
            "total_ms": _median_ms(lambda d=data, f=fmt: mark_image(d, f, target, MODELS, 1, signer), repeats),
        }
        marked = mark_image(data, fmt, target, MODELS, 1, signer)
        row["bytes_added"] = len(marked) - len(data)
        row["verify_ms"] = _median_ms(lambda m=marked: verify(m), repeats)
        out[fmt] = row
    return out


def bench_video(src: Path, target: Path, signer: ProvenanceSigner, frames: int, repeats: int) -> dict:
    payload = Payload(signer.service_id, 2)
    bgr_frames = []
    with av.open(str(src)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= frames:
                break
            bgr_frames.append(cv2.resize(f.to_ndarray(format="bgr24"), (1280, 720), interpolation=cv2.INTER_LINEAR))
    per_frame = []
    for bgr in bgr_frames:
        t = time.perf_counter()
        watermark_frame(bgr, payload)
        per_frame.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        t_enc = time.perf_counter()
        with av.open(str(clip), "w") as out:
            vs = out.add_stream("libx264", rate=24)
            vs.width, vs.height, vs.pix_fmt = 1280, 720, "yuv420p"
            vs.options = {"crf": "18", "preset": "veryfast"}
            for bgr in bgr_frames:
                for p in vs.encode(av.VideoFrame.from_ndarray(watermark_frame(bgr, payload), format="bgr24")):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)
        encode_s = time.perf_counter() - t_enc
        size_mb = clip.stat().st_size / 1e6
        sign_ms = _median_ms(lambda: mark_video_file(clip, target, MODELS, 2, signer, out_path=Path(tmp) / "m.mp4"),
                             max(3, repeats // 3))
        marked = (Path(tmp) / "m.mp4").read_bytes()
        verify_ms = _median_ms(lambda: verify(marked, "m.mp4"), max(3, repeats // 3))
        report = verify(marked, "m.mp4")
    n = len(bgr_frames)
    return {
        "frame": "1280x720",
        "watermark_ms_per_frame": round(statistics.median(per_frame) * 1000, 2),
        "encode_ms_per_frame_libx264_veryfast": round(encode_s / n * 1000, 2),
        "clip_frames": n, "clip_mb": round(size_mb, 2),
        "xmp_c2pa_ms_per_file": sign_ms,
        "xmp_c2pa_ms_per_frame": round(sign_ms / n, 3),
        "xmp_c2pa_ms_per_mb": round(sign_ms / max(size_mb, 1e-6), 2),
        "verify_ms": verify_ms,
        "verify_found": report["watermark"]["found"], "verify_confidence": report["watermark"]["confidence"],
    }


def robustness(images: list[str]) -> dict:
    payload = Payload(0x46535753, 0x12345678)
    acc: dict[str, list[float]] = {"q75": [], "half": [], "crop10": [], "psnr_db": []}
    for p in images:
        img = cv2.imread(p)
        if img is None or min(img.shape[:2]) < 200:
            continue
        m = watermark.embed(img, payload)
        acc["psnr_db"].append(psnr(m, img))
        q75 = cv2.imdecode(cv2.imencode(".jpg", m, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], 1)
        acc["q75"].append(watermark.bit_accuracy(q75, payload))
        half = cv2.resize(m, (m.shape[1] // 2, m.shape[0] // 2), interpolation=cv2.INTER_AREA)
        acc["half"].append(watermark.bit_accuracy(half, payload))
        h, w = m.shape[:2]
        acc["crop10"].append(watermark.bit_accuracy(m[h // 20:h - h // 20, w // 20:w - w // 20], payload))
    return {"photos": len(acc["q75"]),
            **{f"{k}_mean": round(float(np.mean(v)), 4) for k, v in acc.items()},
            **{f"{k}_min": round(float(np.min(v)), 4) for k, v in acc.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--out", type=Path, default=summary.out_path("marking"))
    args = ap.parse_args()
    images = Path(os.environ.get("FACESWAP_SHARED_IMAGES", shared_dir() / "images"))
    photo = cv2.imread(str(images / "two_obama_biden_stage.jpg"))
    if photo is None:
        raise SystemExit(f"needs the shared photos in {images} (set FACESWAP_SHARED_IMAGES)")
    img = cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_AREA)
    target = (images / "two_obama_biden_stage.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as state:
        signer = ProvenanceSigner.development(state)
        result = {
            "machine": f"{os.cpu_count()} cpus",
            "threads_opencv": cv2.getNumThreads(),
            "image_1080p": bench_images(img, target, signer, args.repeats),
            "video_720p": bench_video(images / "video_whitehouse_hamilton_640x360.mp4",
                                      images / "video_whitehouse_hamilton_640x360.mp4", signer, args.frames,
                                      args.repeats),
            "watermark_robustness": robustness(sorted(glob.glob(str(images / "*.jpg")) +
                                                      glob.glob(str(images / "*.png")))),
        }
    summary.write("marking", result, args.out)
    print(f"{'1080p image':12} {'watermark':>10} {'re-encode':>10} {'xmp':>8} {'c2pa':>8} {'total':>8} {'verify':>8}")
    for fmt, r in result["image_1080p"].items():
        print(f"{fmt:12} {r['watermark_ms']:10.2f} {r['reencode_ms']:10.2f} {r['xmp_ms']:8.3f} {r['c2pa_ms']:8.2f} "
              f"{r['total_ms']:8.2f} {r['verify_ms']:8.2f}  ms")
    v = result["video_720p"]
    print(f"720p frame: watermark {v['watermark_ms_per_frame']} ms/frame (x264 veryfast encode "
          f"{v['encode_ms_per_frame_libx264_veryfast']} ms/frame); XMP+C2PA {v['xmp_c2pa_ms_per_file']} ms per "
          f"{v['clip_frames']}-frame file = {v['xmp_c2pa_ms_per_frame']} ms/frame; verify {v['verify_ms']} ms")
    print("watermark bits:", json.dumps(result["watermark_robustness"]))


if __name__ == "__main__":
    main()
