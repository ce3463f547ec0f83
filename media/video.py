"""Video face swap: PyAV decode -> Triton (bounded asyncio gRPC) -> H.264, timestamps and audio kept.

- Frames are decoded with PyAV, turned upright according to the stream's display rotation
  (so that detection sees faces upright), sent losslessly (BMP) to ``face_embed`` to find the
  faces (boxes and key points; ArcFace only on the frames where the tracker must fix or find
  the identity again: ``FaceTracker.wants_embeddings``), tracked and smoothed
  (``media.tracking``), and sent to ``face_swap_kps`` with the smoothed key points; frames
  where no face is chosen pass through untouched (no call).
- At most ``in_flight`` requests are outstanding; results are written in frame order. Decoding
  and the detection calls, tracking and the swap calls, and writing (figures, watermark,
  libx264, in a worker thread) run as three overlapping stages, so Triton does not wait for
  the encoder nor the encoder for Triton; at most ``in_flight`` frames wait between stages.
- The output is H.264 (libx264, yuv420p) with every input frame's exact timestamp (variable
  frame rate is kept; the frame count is the decodable input frames'), the stored orientation
  and the display rotation of the input. Odd widths/heights are padded by one pixel (edge
  replicated) on the right/bottom, because 4:2:0 H.264 needs even sizes.
- Every audio stream is copied packet for packet (each packet test-decoded, damaged ones
  dropped with a warning); where the output container cannot hold its
  codec (e.g. PCM in MP4) it is re-encoded as AAC, and a warning says so.
- Undecodable packets (damaged bytes) are skipped with a warning; the job completes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from client.library import AsyncFaceSwapClient
from media.tracking import FaceTracker
from pipeline.quality import TrackFigures, flicker_ratio, small_grey, swap_region

#: Audio codecs each output container takes as they are (others are re-encoded to AAC).
COPYABLE_AUDIO = {
    "mp4": {"aac", "mp3", "opus", "alac", "flac", "ac3", "eac3"},
    "mov": {"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le", "ac3"},
    "matroska": {"aac", "mp3", "opus", "vorbis", "flac", "pcm_s16le", "pcm_s24le", "pcm_f32le", "ac3", "eac3"},
}
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
Progress = Callable[[int, int, float], None]


class VideoError(ValueError):
    """The input cannot be processed as a video (no video stream, unreadable container)."""


class VideoLimitError(VideoError):
    """The video passes a limit (``code``: video_too_long, video_too_many_frames,
    video_frame_too_large, video_pixel_rate_too_high)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VideoLimits:
    """What one video may cost (defaults: gateway settings ``VIDEO_*``).

    Attributes:
        max_duration_s: seconds of video.
        max_frames: frames decoded.
        max_frame_pixels: width x height of a frame (default 3840x2160).
        max_pixel_rate: width x height x frames per second (default 4K at 30 fps).
    """

    max_duration_s: float = 300.0
    max_frames: int = 9000
    max_frame_pixels: int = 3840 * 2160
    max_pixel_rate: float = 3840 * 2160 * 30.0

    def check(self, duration_s: float | None, frames: int | None, width: int, height: int,
              fps: float | None) -> None:
        """Raise VideoLimitError for the first limit these figures pass (None: unknown)."""
        if duration_s and duration_s > self.max_duration_s:
            raise VideoLimitError("video_too_long", f"the video lasts {duration_s:.0f} s; the limit is "
                                  f"{self.max_duration_s:.0f} s")
        if frames and frames > self.max_frames:
            raise VideoLimitError("video_too_many_frames", f"the video has {frames} frames; the limit is "
                                  f"{self.max_frames}")
        if width * height > self.max_frame_pixels:
            raise VideoLimitError("video_frame_too_large", f"frames of {width}x{height} pixels; the limit is "
                                  f"{self.max_frame_pixels} pixels")
        if fps and width * height * fps > self.max_pixel_rate:
            raise VideoLimitError("video_pixel_rate_too_high", f"{width}x{height} at {fps:.1f} frames/s is "
                                  f"{width * height * fps / 1e6:.0f} M pixels/s; the limit is "
                                  f"{self.max_pixel_rate / 1e6:.0f} M")


def header_figures(container) -> tuple[float | None, int | None, int, int, float | None]:
    """(duration s, frames, width, height, fps) of a PyAV container's first video stream, as its
    headers declare them (None where unknown)."""
    v = container.streams.video[0]
    duration = None
    if v.duration and v.time_base:
        duration = float(v.duration * v.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    fps = float(v.average_rate) if v.average_rate else None
    return duration, int(v.frames) or None, v.codec_context.width, v.codec_context.height, fps


@dataclass
class VideoOptions:
    """Options of a video job.

    Attributes:
        selection: "largest" (one person, tracked), "similar" (the person of
            ``reference``), or "all" faces.
        smoothing: One-Euro smoothing of key points across frames (against flicker).
        in_flight: requests outstanding to Triton at most.
        crf, preset: libx264 quality (lower crf = better) and speed.
        limits: checked on the headers and again on what is decoded.
        frame_hook: applied to every output frame (BGR uint8 [H, W, 3], upright) before it is
            encoded, swapped or not; the gateway's invisible watermark goes in here.
        content_policy: the content gate's policy (``SwapOptions.content_policy``: None is the
            stage's default policy, "off" none), applied to the first frame with a face to swap
            and then to one such frame every ``content_every_s`` seconds of the video (the
            documented sampling rate); a refusal ends the job (``ContentRefusedError``) and no
            output is kept.
    """

    selection: str = "largest"
    smoothing: bool = True
    in_flight: int = 8
    crf: int = 18
    preset: str = "veryfast"
    limits: VideoLimits = field(default_factory=VideoLimits)
    frame_hook: Callable[[np.ndarray], np.ndarray] | None = None
    content_policy: dict | str | None = None
    content_every_s: float = 1.0


class ContentRefusedError(VideoError):
    """A sampled frame was refused by the content gate (``policy``: its name); nothing is kept."""

    code = "content_refused"

    def __init__(self, policy: str) -> None:
        super().__init__(f"a frame of the video was refused by the content policy {policy!r}: this service does not "
                         "swap faces into intimate imagery; nothing was kept")
        self.policy = policy


@dataclass
class VideoReport:
    """What a video job did. ``tracks``: quality figures per face track (``track``, ``frames``,
    ``identity_transfer_mean``/``_min``, ``identity_leakage_mean``/``_min``, ``flicker_score``,
    ``flicker_input``; see ``pipeline.quality.TrackFigures``): with selection "largest" or
    "similar" one entry (track 0: the one person swapped), with "all" one per IoU track of the
    tracker (a face lost and found again may start a new track)."""

    frames: int = 0
    frames_swapped: int = 0
    audio_streams: int = 0
    audio_reencoded: int = 0
    rotation: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    stand_in_models: list[str] = field(default_factory=list)
    tracks: list[dict] = field(default_factory=list)


class _VideoFigures:
    """Quality figures of a video as its frames are written: each swapped face's figures from
    the ensemble, and the flicker ratios of consecutive frames (on small grey copies of the
    input and output frames, the output taken before ``frame_hook``)."""

    def __init__(self) -> None:
        self.tracks = TrackFigures()
        self._prev: tuple[np.ndarray, np.ndarray, dict] | None = None

    def frame(self, before: np.ndarray, after: np.ndarray, faces: list[tuple[int, np.ndarray]], quality) -> None:
        grey_in, scale = small_grey(before)
        grey_out = grey_in if after is before else small_grey(after)[0]
        regions = {tid: swap_region(k, grey_in.shape[:2], scale) for tid, k in faces}
        for (tid, _), q in zip(faces, quality or []):
            self.tracks.add(tid, q.identity_transfer, q.identity_leakage)
        if self._prev is not None and self._prev[0].shape == grey_in.shape:
            prev_in, prev_out, prev_regions = self._prev
            both = {tid: (min(r[0], p[0]), min(r[1], p[1]), max(r[2], p[2]), max(r[3], p[3]))
                    for tid, r in regions.items() if (p := prev_regions.get(tid)) is not None}
            if both:
                others = [*prev_regions.values(), *regions.values()]
                out_r = flicker_ratio(prev_out, grey_out, both, others)
                in_r = flicker_ratio(prev_in, grey_in, both, others)
                for tid in out_r:
                    self.tracks.add_flicker(tid, out_r[tid], in_r[tid])
        self._prev = (grey_in, grey_out, regions)


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _stored(img: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, -k)) if k else img


def _pad_even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def _frame_total(stream) -> int:
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.average_rate:
        return int(float(stream.duration * stream.time_base) * float(stream.average_rate))
    return 0


async def swap_video(client: AsyncFaceSwapClient, source_latent: np.ndarray, src: Path, dst: Path,
                     opts: VideoOptions | None = None, reference: np.ndarray | None = None,
                     progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                     source_embedding: np.ndarray | None = None) -> VideoReport:
    """Swap the faces of video ``src`` with ``source_latent`` (float32 [512]) into ``dst``.
    ``source_embedding`` (the source's normed ArcFace embedding) gives the per-track quality
    figures of the report their identity transfer (else null).

    The container of ``dst`` comes from its extension (.mp4, .mov, .mkv). ``dst`` is written
    to ``dst.part`` and renamed when complete.

    Raises:
        VideoError: the input has no video stream or cannot be opened.
        client.errors.FaceSwapError: Triton failed (typed, see client.errors).
        asyncio.CancelledError: ``cancelled()`` became true.
    """
    opts = opts or VideoOptions()
    fmt = CONTAINERS.get(dst.suffix.lower())
    if fmt is None:
        raise VideoError(f"output must end in one of {', '.join(CONTAINERS)}, not {dst.suffix!r}")
    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise VideoError(f"the video cannot be opened (corrupt, truncated or not a video): {reason}") from None
    report = VideoReport()
    t0 = time.perf_counter()
    tmp = dst.with_name(dst.name + ".part")
    try:
        if not inp.streams.video:
            raise VideoError("the file has no video stream")
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        out = av.open(str(tmp), "w", format=fmt)
        try:
            await _transcode(client, source_latent, inp, vin, out, fmt, opts, reference, report, progress, cancelled,
                             source_embedding)
        finally:
            out.close()
        os.replace(tmp, dst)
    finally:
        inp.close()
        if tmp.exists():
            tmp.unlink()
    report.seconds = time.perf_counter() - t0
    return report


def _first_frame(path: str):
    """Size and display rotation of the first decodable frame (all streams must exist before
    the first packet is written, so the video stream is set up from this peek)."""
    with av.open(path) as c:
        try:
            for frame in c.decode(video=0):
                return frame.width, frame.height, int(getattr(frame, "rotation", 0) or 0)
        except av.error.FFmpegError:
            pass
    raise VideoError("no decodable video frame in the input")


async def _transcode(client, source_latent, inp, vin, out, fmt, opts, reference, report, progress, cancelled,
                     source_embedding=None):
    limits = opts.limits
    limits.check(*header_figures(inp))
    total = min(_frame_total(vin), limits.max_frames)  # a header may claim 2^31 frames: corrected as we go
    width, height, rotation = _first_frame(inp.name)
    limits.check(None, None, width, height, None)
    report.rotation = rotation
    vout = out.add_stream("libx264", rate=vin.average_rate or Fraction(30, 1))
    vout.width, vout.height = width + width % 2, height + height % 2
    vout.pix_fmt = "yuv420p"
    vout.time_base = vin.time_base
    vout.codec_context.time_base = vin.time_base
    vout.options = {"crf": str(opts.crf), "preset": opts.preset}
    if rotation:
        vout.set_display_rotation(rotation)
    audio_map: dict[int, tuple] = {}
    for a in inp.streams.audio:
        name = a.codec_context.name
        if name in COPYABLE_AUDIO.get(fmt, set()):
            audio_map[a.index] = (out.add_stream_from_template(a), None)
        else:
            enc = out.add_stream("aac", rate=a.codec_context.sample_rate or 48000)
            enc.layout = a.codec_context.layout.name if a.codec_context.layout else "stereo"
            audio_map[a.index] = (enc, av.AudioResampler(format="fltp", layout=enc.layout, rate=enc.rate))
            report.audio_reencoded += 1
            report.warnings.append(f"audio stream {a.index} ({name}) cannot go into {fmt} as it is: re-encoded as AAC")
    report.audio_streams = len(audio_map)
    tracker = FaceTracker(opts.selection, reference, opts.smoothing)
    figures = _VideoFigures()
    bad_packets = 0
    sem = asyncio.Semaphore(max(opts.in_flight, 1))
    t_start = time.perf_counter()
    tb = float(vin.time_base or 0)
    # Three stages overlap, so that Triton is never idle while this process decodes or encodes:
    # decode + detection calls (below) -> tracking, in frame order, + swap calls (track) ->
    # results in frame order, figures, watermark and libx264 in a worker thread (write). The
    # queues between them hold at most in_flight frames each: memory stays bounded.
    tracked: asyncio.Queue = asyncio.Queue(max(opts.in_flight, 1))
    written: asyncio.Queue = asyncio.Queue(max(opts.in_flight, 1))

    calls: set[asyncio.Future] = set()  # Triton calls not yet answered
    sent: set[asyncio.Future] = set()  # those of them sent to Triton (at most in_flight)

    def call(fn, *args, **kw) -> asyncio.Future:
        async def run():
            async with sem:
                sent.add(fut)
                try:
                    return await fn(*args, **kw)
                finally:
                    sent.discard(fut)

        fut = asyncio.ensure_future(run())
        calls.add(fut)
        fut.add_done_callback(calls.discard)
        return fut

    def encode_frame(frame, img: np.ndarray, res, faces) -> list:
        """Figures, watermark and libx264 for one frame (a worker thread); the packets to mux."""
        before, quality = img, None
        if res is not None:
            img = cv2.imdecode(np.frombuffer(res.image, np.uint8), cv2.IMREAD_COLOR)
            quality = res.face_quality
        # one person is swapped unless selection is "all": its track may change id when the
        # tracker re-identifies it (fast motion, a gap), so its figures are kept as track 0
        keyed = [(tid if opts.selection == "all" else 0, k) for tid, k in faces] if res is not None else []
        figures.frame(before, img, keyed, quality)
        if opts.frame_hook is not None:
            img = opts.frame_hook(img)
        new = av.VideoFrame.from_ndarray(_pad_even(_stored(img, rotation)), format="bgr24")
        new.pts, new.time_base = frame.pts, frame.time_base
        return list(vout.encode(new))

    gate_at: list[float] = []  # video time of the last frame sent to the content gate

    def content_policy(t: float) -> dict | str | None:
        """The policy for a frame at ``t`` s: the job's at the sampling rate, else "off"."""
        if opts.content_policy == "off" or (gate_at and t - gate_at[0] < opts.content_every_s):
            return "off"
        gate_at[:] = [t]
        return opts.content_policy

    async def track() -> None:
        while (item := await tracked.get()) is not None:
            frame, img, blob, found = item
            faces = (await asyncio.shield(found)).faces
            if tracker.wants_embeddings(faces):  # the identity is to be fixed or found again: ArcFace
                faces = (await asyncio.shield(call(client.embed, blob))).faces
            chosen = tracker.update_tracks((frame.pts or 0) * tb, faces)
            job = None
            if chosen:
                policy = content_policy((frame.pts or 0) * tb)
                job = call(client.swap_at, blob, source_latent, np.stack([k for _, k in chosen]),
                           output_format="bmp", source_embedding=source_embedding,
                           **({} if policy is None else {"content_policy": policy}))
            await written.put((frame, img, job, chosen))
        await written.put(None)

    async def write() -> None:
        while (item := await written.get()) is not None:
            frame, img, job, chosen = item
            res = await asyncio.shield(job) if job is not None else None
            if res is not None and res.content_refused:
                raise ContentRefusedError(res.content_policy)
            if res is not None:
                report.frames_swapped += 1
                report.stand_in_models = res.stand_in_models
            for pkt in await asyncio.to_thread(encode_frame, frame, img, res, chosen):
                out.mux(pkt)
            report.frames += 1
            if progress and (report.frames % max(opts.in_flight, 1) == 0):
                elapsed = time.perf_counter() - t_start
                progress(report.frames, max(total, report.frames), report.frames / elapsed if elapsed else 0.0)

    async def submit(frame) -> None:
        img = _upright(frame.to_ndarray(format="bgr24"), rotation)
        blob = cv2.imencode(".bmp", img)[1].tobytes()
        # the faces only (no ArcFace): the tracker asks for embeddings when it needs them
        await tracked.put((frame, img, blob, call(client.embed, blob, embeddings=False)))

    async def read() -> None:
        nonlocal bad_packets
        first_pts: list[float] = []
        count = 0
        streams = [vin, *[s for s in inp.streams.audio if s.index in audio_map]]
        for packet in inp.demux(*streams):
            if cancelled and cancelled():
                raise asyncio.CancelledError
            if packet.stream.index in audio_map:
                if packet.dts is None:
                    continue
                ostream, resampler = audio_map[packet.stream.index]
                if resampler is None:
                    try:
                        packet.decode()  # a damaged packet would make the output undecodable: drop it
                    except av.error.FFmpegError:
                        bad_packets += 1
                        continue
                    packet.stream = ostream
                    out.mux(packet)
                else:
                    try:
                        for af in packet.decode():
                            for rf in resampler.resample(af):
                                for p in ostream.encode(rf):
                                    out.mux(p)
                    except av.error.FFmpegError:
                        bad_packets += 1
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad_packets += 1
                continue
            for frame in frames:
                t = (frame.pts or 0) * tb
                first_pts[:1] = first_pts[:1] or [t]
                count += 1
                limits.check(t - first_pts[0], count, frame.width, frame.height, None)
                await submit(frame)
        try:
            for frame in vin.codec_context.decode(None):  # demux's final empty packet usually flushed already
                await submit(frame)
        except av.error.EOFError:
            pass
        except av.error.FFmpegError:
            bad_packets += 1
        await tracked.put(None)

    stages = [asyncio.ensure_future(c) for c in (read(), track(), write())]
    try:
        await asyncio.gather(*stages)
    finally:
        for st in stages:
            st.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
        # a stage failed or the job was cancelled: calls not yet sent are dropped, and those sent
        # (at most in_flight) are answered before this returns, so none of them still holds a
        # place in Triton's queues when the next job starts (a cancelled gRPC call may wait there
        # until its turn)
        waiting = [c for c in calls if c not in sent]
        for c in waiting:
            c.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    if progress:  # the real total, whatever the header claimed
        elapsed = time.perf_counter() - t_start
        progress(report.frames, report.frames, report.frames / elapsed if elapsed else 0.0)
    for pkt in vout.encode(None):
        out.mux(pkt)
    for ostream, resampler in audio_map.values():
        if resampler is not None:
            for p in ostream.encode(None):
                out.mux(p)
    if bad_packets:
        report.warnings.append(f"{bad_packets} damaged packet(s) could not be decoded and were skipped")
    report.tracks = figures.tracks.report()
