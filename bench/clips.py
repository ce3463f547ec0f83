"""Media for tests and benchmarks, made from real photos: a face moving across frames, tones as audio (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def moving_face_frames(face: np.ndarray, size: tuple[int, int], n: int, missing: set[int] = frozenset(),
                       marker: bool = False) -> list[np.ndarray]:
    """n BGR frames of ``size`` (w, h) with ``face`` sliding left to right; frames in
    ``missing`` show no face. ``marker`` paints a red square in the top-left corner."""
    w, h = size
    fh = int(h * 0.8)
    fw = int(face.shape[1] * fh / face.shape[0])
    if fw > w * 0.6:
        fw = int(w * 0.6)
        fh = int(face.shape[0] * fw / face.shape[1])
    small = cv2.resize(face, (fw, fh), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[:, :, 1] = 110
        if i not in missing:
            x = int((w - fw) * i / max(n - 1, 1))
            y = (h - fh) // 2
            img[y:y + fh, x:x + fw] = small
        if marker:
            img[: h // 10, : w // 10] = (0, 0, 255)
        frames.append(img)
    return frames


def write_clip(path: Path, frames: list[np.ndarray], rate: Fraction = Fraction(30), pts: list[int] | None = None,
               time_base: Fraction | None = None, audio: list[tuple[str, int, float]] = (), rotation: int = 0,
               container: str | None = None, pix_fmt: str = "yuv420p") -> None:
    """Write H.264 video (optionally VFR via ``pts`` in ``time_base``, display ``rotation``) and
    audio tracks given as (codec, sample rate, seconds) of a 440/660 Hz tone. Odd sizes need
    ``pix_fmt="yuv444p"`` (4:2:0 has no odd sizes)."""
    out = av.open(str(path), "w", format=container)
    h, w = frames[0].shape[:2]
    v = out.add_stream("libx264", rate=rate)
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    tb = time_base or Fraction(1, int(rate * 1000) if rate.denominator == 1 else rate.numerator)
    v.time_base = tb
    v.codec_context.time_base = tb
    if rotation:
        v.set_display_rotation(rotation)
    a_streams = []
    for codec, sr, secs in audio:
        s = out.add_stream(codec, rate=sr)
        s.layout = "stereo" if codec != "libopus" else "stereo"
        a_streams.append((s, sr, secs))
    for i, img in enumerate(frames):
        f = av.VideoFrame.from_ndarray(img, format="bgr24")
        f.pts = pts[i] if pts is not None else int(round(i / rate / tb))
        f.time_base = tb
        for p in v.encode(f):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    for k, (s, sr, secs) in enumerate(a_streams):
        fmt = s.codec_context.codec.audio_formats[0].name if s.codec_context.codec.audio_formats else "fltp"
        n = int(sr * secs)
        t = np.arange(n) / sr
        tone = (0.2 * np.sin(2 * np.pi * (440 + 220 * k) * t)).astype(np.float32)
        resampler = av.AudioResampler(format=fmt, layout="stereo", rate=sr)
        step = 1024
        for start in range(0, n, step):
            chunk = np.stack([tone[start:start + step]] * 2)
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
            af.sample_rate = sr
            af.pts = start
            af.time_base = Fraction(1, sr)
            for rf in resampler.resample(af):
                for p in s.encode(rf):
                    out.mux(p)
        for p in s.encode():
            out.mux(p)
    out.close()


def probe(path: Path) -> dict:
    """Frame timestamps (s), count, rotation, duration, audio streams and their durations, all via PyAV;
    also checks that the file decodes to the end."""
    c = av.open(str(path))
    v = c.streams.video[0]
    times, rotation = [], 0
    for f in c.decode(v):
        times.append(float(f.pts * f.time_base))
        rotation = int(getattr(f, "rotation", 0) or 0)
    audio = []
    for k, a in enumerate(c.streams.audio):
        with av.open(str(path)) as c2:
            samples = sum(af.samples for af in c2.decode(c2.streams.audio[k]))
        audio.append({"codec": a.codec_context.name, "seconds": samples / a.codec_context.sample_rate})
    info = {"frames": len(times), "times": times, "rotation": rotation, "width": v.codec_context.width,
            "height": v.codec_context.height, "audio": audio,
            "duration": float(c.duration / av.time_base) if c.duration else None}
    c.close()
    return info
