"""``faceswap``: command line of the client library (the only place that picks exit codes).

Exit codes: 0 success; 2 bad input (unreadable file, corrupt image, no face in the source,
bad option); 3 server unavailable or not ready; 4 timeout; 1 anything else.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path

import numpy as np
import typer

from client.errors import FaceSwapError, InvalidInput, RequestTimeout, ServerUnavailable
from client.library import FaceSwapClient

EXIT_CODES = "Exit codes: 0 ok, 2 bad input, 3 server unavailable or not ready, 4 timeout, 1 other."
app = typer.Typer(add_completion=False, no_args_is_help=True, epilog=EXIT_CODES,
                  help="Face swap through the Triton ensembles (insightface inswapper pipeline).")
EXT_FORMAT = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


class Selection(str, Enum):
    all = "all"
    largest = "largest"
    index = "index"
    similar = "similar"


class Format(str, Enum):
    auto = "auto"
    jpeg = "jpeg"
    png = "png"
    webp = "webp"


URL = typer.Option(None, "--url", envvar="FACESWAP_URL",
                   help="Triton host:port (default 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc).")
PROTO = typer.Option(Protocol.http, "--protocol", "-p", envvar="FACESWAP_PROTOCOL", help="KServe v2 transport.")
TIMEOUT = typer.Option(120.0, "--timeout", help="Seconds to wait for one request.")


def _fail(exc: FaceSwapError) -> None:
    code = 2 if isinstance(exc, InvalidInput) else 3 if isinstance(exc, ServerUnavailable) else \
        4 if isinstance(exc, RequestTimeout) else 1
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _warn_stand_ins(models: list[str]) -> None:
    if models:
        typer.secho(f"note: STAND-IN models in use ({', '.join(models)}): faces are not real swaps",
                    fg=typer.colors.YELLOW, err=True)


@app.command(epilog=EXIT_CODES)
def swap(
    source: Path = typer.Option(..., "--source", "-s", show_default=False,
                                help="Photo of the person whose face is wanted."),
    target: Path = typer.Option(..., "--target", "-t", show_default=False, help="Photo whose faces are replaced."),
    output: Path = typer.Option(..., "--output", "-o", show_default=False,
                                help="Where to write the result (its folder must exist)."),
    selection: Selection = typer.Option(
        Selection.all, help="Which target faces: all, the largest, the one at --face-index, or the one most "
                            "similar to --reference."),
    face_index: int = typer.Option(None, show_default=False,
                                   help="0-based, in detection (score) order; implies --selection index."),
    reference: Path = typer.Option(None, show_default=False,
                                   help="A photo of the target person to swap; implies --selection similar."),
    source_face: int = typer.Option(None, show_default=False,
                                    help="Which face of SOURCE to use (detection order); default: its largest."),
    max_faces: int = typer.Option(0, help="Swap at most this many faces (largest first); 0 = the server's cap "
                                           "(max_faces in face_swap's config, 64 by default)."),
    fmt: Format = typer.Option(Format.auto, "--format",
                               help="Output format; auto = from OUTPUT's extension (.jpg/.png/.webp), "
                                    "else the target's."),
    quality: int = typer.Option(95, min=1, max=100, help="JPEG/WebP quality."),
    url: str = URL, protocol: Protocol = PROTO, timeout: float = TIMEOUT,
) -> None:
    """Put the largest face of SOURCE onto the faces of TARGET and write OUTPUT."""
    if output.is_dir():
        _fail(InvalidInput(f"{output} is a directory: give a file name, e.g. {output / 'swapped.jpg'}"))
    if not output.parent.is_dir():
        _fail(InvalidInput(f"the folder {output.parent} does not exist"))
    out_fmt = fmt.value if fmt != Format.auto else EXT_FORMAT.get(output.suffix.lower(), "auto")
    sel = "index" if face_index is not None else "similar" if reference is not None else selection.value
    try:
        with FaceSwapClient(url, protocol.value, timeout) as c:
            ref = c.embed(reference).largest().embedding if reference is not None else None
            res = c.swap_images(source, target, "largest" if source_face is None else source_face,
                                selection=sel, face_index=face_index or 0, max_faces=max_faces,
                                output_format=out_fmt, quality=quality, reference_embedding=ref)
    except FaceSwapError as exc:
        _fail(exc)
    tmp = output.with_name(output.name + ".part")
    try:
        tmp.write_bytes(res.image)
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _fail(InvalidInput(f"cannot write {output}: {exc.strerror}"))
    if res.no_match:
        typer.secho("note: no face of TARGET is similar enough to --reference (cosine < 0.3): nothing was swapped",
                    fg=typer.colors.YELLOW, err=True)
    _warn_stand_ins(res.stand_in_models)
    trunc = " (truncated: more faces than the cap)" if res.truncated else ""
    typer.echo(f"{len(res.faces)} face(s) found, {res.faces_swapped} swapped{trunc}; wrote {output} "
               f"({res.width}x{res.height} {res.format})")
    if res.face_quality:
        typer.echo("identity transfer / leakage (cosine) per swapped face: " + ", ".join(
            f"{q.face}: {'-' if q.identity_transfer is None else f'{q.identity_transfer:.3f}'} / "
            f"{q.identity_leakage:.3f}" for q in res.face_quality)
            + " (ArcFace of the output face against the source's: high is a good swap; against the target's "
              "original face: low is; meaningless with stand-in models)")


def _source_vectors(c: FaceSwapClient, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """(latent, embedding) of the largest face of SOURCE (the embedding: quality figures)."""
    face = c.embed(source).largest()
    return face.latent, face.embedding


@app.command(epilog=EXIT_CODES)
def video(
    source: Path = typer.Option(..., "--source", "-s", show_default=False, help="Photo of the wanted face."),
    target: Path = typer.Option(..., "--target", "-t", show_default=False, help="Input video."),
    output: Path = typer.Option(..., "--output", "-o", show_default=False,
                                help="Output video (.mp4, .mov or .mkv): H.264, same timestamps, audio kept."),
    selection: str = typer.Option("largest", help="largest: one person, tracked (the largest face of the first "
                                                  "frame with a face); all: every face; or give --reference."),
    reference: Path = typer.Option(None, show_default=False,
                                   help="A photo of the person to swap in the video (most similar face)."),
    smoothing: bool = typer.Option(True, help="Smooth key points across frames (One-Euro) against flicker."),
    in_flight: int = typer.Option(8, min=1, help="Requests outstanding to Triton."),
    crf: int = typer.Option(18, min=0, max=51, help="H.264 quality (lower is better)."),
    url: str = URL, timeout: float = TIMEOUT,
) -> None:
    """Swap the face of SOURCE into a video. Frames without the chosen face pass through
    untouched; the frame count, every timestamp (variable frame rate too), the display rotation
    and every audio stream are kept. Odd widths/heights are padded by one pixel (H.264 4:2:0
    needs even sizes)."""
    import asyncio

    from tqdm import tqdm

    from client.library import AsyncFaceSwapClient
    from media.video import VideoError, VideoOptions, swap_video

    if output.is_dir() or not output.parent.is_dir():
        _fail(InvalidInput(f"{output}: give a file name in an existing folder"))
    try:
        with FaceSwapClient(url or "127.0.0.1:8001", "grpc", timeout) as c:
            latent, embedding = _source_vectors(c, source)
            ref = c.embed(reference).largest().embedding if reference is not None else None
    except FaceSwapError as exc:
        _fail(exc)
    sel = "similar" if reference is not None else selection
    bar = tqdm(total=0, unit="frame", desc="swap", dynamic_ncols=True)

    def progress(done: int, total: int, fps: float) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix(fps=f"{fps:.1f}")
        bar.refresh()

    async def run():
        async with AsyncFaceSwapClient(url or "127.0.0.1:8001", "grpc", timeout) as ac:
            return await swap_video(ac, latent, target, output, VideoOptions(sel, smoothing, in_flight, crf),
                                    reference=ref, progress=progress, source_embedding=embedding)

    try:
        rep = asyncio.run(run())
    except (FaceSwapError, VideoError, ValueError) as exc:
        bar.close()
        _fail(exc if isinstance(exc, FaceSwapError) else InvalidInput(str(exc)))
    bar.close()
    for w in rep.warnings:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    _warn_stand_ins(rep.stand_in_models)
    typer.echo(f"{rep.frames} frames ({rep.frames_swapped} swapped), {rep.audio_streams} audio stream(s), "
               f"{rep.frames / max(rep.seconds, 1e-9):.1f} frames/s; wrote {output}")


@app.command(epilog=EXIT_CODES)
def live(
    source: Path = typer.Option(None, "--source", "-s", show_default=False, help="Photo of the wanted face."),
    source_face_id: str = typer.Option(None, "--source-face-id", show_default=False,
                                       help="Instead of --source: a face registered with POST /v1/faces."),
    input: Path = typer.Option(..., "--input", "-i", show_default=False,
                               help="A video file, sent frame by frame at its own frame rate as a camera would."),
    output: Path = typer.Option(None, "--output", "-o", show_default=False,
                                help="Write the swapped stream (.mp4; a dropped frame holds the previous one)."),
    gateway: str = typer.Option("ws://127.0.0.1:8080", "--gateway", envvar="FACESWAP_GATEWAY",
                                help="The gateway (ws:// or wss://; http(s):// is turned into it)."),
    secret: str = typer.Option(None, envvar="FACESWAP_GATEWAY_HMAC_SECRET", show_default=False,
                               help="Sign the stream with this secret (when the gateway has one)."),
    selection: str = typer.Option("largest", help="largest: one person, tracked; all: every face."),
    max_fps: float = typer.Option(30.0, min=1, max=60, help="Frames the gateway processes per second at most."),
    max_side: int = typer.Option(1280, min=64, help="Frames larger than this are scaled down before sending."),
    smoothing: bool = typer.Option(True, help="Key-point smoothing (One-Euro) against flicker."),
    detect_every: int = typer.Option(1, min=1, max=10, help="Run the detector on every k-th frame."),
) -> None:
    """Stream a video file through the gateway's live endpoint (/v1/stream) as a camera would,
    and print the delivered frame rate, latency and drops."""
    import asyncio

    from client.live import StreamClosed, read_frames, stream_frames, write_video

    if (source is None) == (source_face_id is None):
        _fail(InvalidInput("give exactly one of --source and --source-face-id"))
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        _fail(InvalidInput(f"{output}: give a file name in an existing folder"))
    url = gateway.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    try:
        frames, times, rate = read_frames(input, max_side)
        src = source.read_bytes() if source is not None else None
    except OSError as exc:
        _fail(InvalidInput(f"{source}: {exc.strerror}"))
    except FaceSwapError as exc:
        _fail(exc)
    got: list[tuple[float, bytes]] = []
    typer.echo(f"streaming {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]} at {rate:.2f} fps "
               f"to {url}/v1/stream ...", err=True)
    opts = {"selection": selection, "max_fps": max_fps, "smoothing": smoothing, "detect_every": detect_every}
    try:
        rep = asyncio.run(stream_frames(url, frames, times, source=src, source_face_id=source_face_id, options=opts,
                                        secret=secret,
                                        on_frame=lambda meta, img: got.append((times[meta["seq"]], img))))
    except StreamClosed as exc:
        typer.secho(f"error: the gateway ended the stream: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2 if exc.code in ("no_face_in_source", "bad_request", "face_not_found") else 1) from None
    except FaceSwapError as exc:
        _fail(exc)
    _warn_stand_ins(rep.stand_in_models)
    typer.echo(rep.summary())
    if output is not None:
        n = write_video(output, got, rate)
        typer.echo(f"wrote {output} ({n} swapped frames)")


@app.command(epilog=EXIT_CODES)
def batch(
    source: Path = typer.Option(..., "--source", "-s", show_default=False, help="Photo of the wanted face."),
    targets: Path = typer.Option(..., "--targets", "-t", show_default=False, help="A folder or a .zip of images."),
    output: Path = typer.Option(..., "--output", "-o", show_default=False, help="Output folder."),
    fmt: Format = typer.Option(Format.auto, "--format", help="Output format; auto = each input's."),
    in_flight: int = typer.Option(4, min=1, help="Requests outstanding to Triton."),
    url: str = URL, protocol: Protocol = PROTO, timeout: float = TIMEOUT,
) -> None:
    """Swap every image of a folder or zip; one result per file. A bad file does not stop the
    batch: it is listed with its error in OUTPUT/batch_report.json (exit code 2 if any failed)."""
    import asyncio

    from tqdm import tqdm

    from client.library import AsyncFaceSwapClient
    from media.batch import swap_batch

    try:
        with FaceSwapClient(url, protocol.value, timeout) as c:
            latent, embedding = _source_vectors(c, source)
    except FaceSwapError as exc:
        _fail(exc)
    bar = tqdm(total=0, unit="image", desc="batch", dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    async def run():
        async with AsyncFaceSwapClient(url, protocol.value, timeout) as ac:
            return await swap_batch(ac, latent, targets, output, in_flight, progress, source_embedding=embedding,
                                    output_format=fmt.value)

    try:
        rep = asyncio.run(run())
    except ValueError as exc:
        bar.close()
        _fail(InvalidInput(str(exc)))
    bar.close()
    for item in rep.items:
        if item.error:
            typer.secho(f"failed: {item.name}: {item.error}", fg=typer.colors.RED, err=True)
    _warn_stand_ins(rep.stand_in_models)
    typer.echo(f"{len(rep.items) - rep.failed}/{len(rep.items)} image(s) swapped into {output} "
               f"(report: {output / 'batch_report.json'})")
    if rep.failed:
        raise typer.Exit(2)


@app.command(epilog=EXIT_CODES)
def embed(
    image: Path = typer.Argument(..., help="Image file."),
    full: bool = typer.Option(False, "--full", help="Include the 512-d embeddings and latents in the JSON."),
    url: str = URL, protocol: Protocol = PROTO, timeout: float = TIMEOUT,
) -> None:
    """Print the faces of IMAGE as JSON (boxes, scores, key points; --full adds embeddings)."""
    try:
        with FaceSwapClient(url, protocol.value, timeout) as c:
            res = c.embed(image)
    except FaceSwapError as exc:
        _fail(exc)
    faces = []
    for f in res.faces:
        d = {"box": [round(float(v), 2) for v in f.box], "score": round(f.score, 4),
             "kps": [[round(float(x), 2) for x in p] for p in f.kps]}
        if full:
            d["embedding"] = [float(v) for v in f.embedding]
            d["latent"] = [float(v) for v in f.latent]
        faces.append(d)
    typer.echo(json.dumps({"faces": faces, "stand_in_models": res.stand_in_models}, indent=None if full else 2))


@app.command()
def health(url: str = URL, protocol: Protocol = PROTO, timeout: float = 5.0) -> None:
    """Say whether Triton is live and ready and which models are ready (exit 3 if not ready)."""
    with FaceSwapClient(url, protocol.value, timeout) as c:
        h = c.health()
    typer.echo(json.dumps(h, indent=2))
    if not h["ready"]:
        raise typer.Exit(3)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
