"""``faceswap``: command line of the client library (the only place that picks exit codes).

Exit codes: 0 success; 2 bad input (unreadable file, corrupt image, no face in the source,
bad option); 3 server unavailable or not ready; 4 timeout; 1 anything else.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path

import typer

from client.errors import FaceSwapError, InvalidInput, RequestTimeout, ServerUnavailable
from client.library import FaceSwapClient

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Face swap through the Triton ensembles (insightface inswapper pipeline).")


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


class Selection(str, Enum):
    all = "all"
    largest = "largest"
    index = "index"


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


@app.command()
def swap(
    source: Path = typer.Option(..., "--source", "-s", help="Photo of the person whose face is wanted."),
    target: Path = typer.Option(..., "--target", "-t", help="Photo whose faces are replaced."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the result."),
    selection: Selection = typer.Option(Selection.all, help="Which target faces: all, the largest, or --face-index."),
    face_index: int = typer.Option(0, help="With --selection index: 0-based, in detection (score) order."),
    max_faces: int = typer.Option(0, help="Swap at most this many faces (largest first); 0 = server cap."),
    fmt: Format = typer.Option(Format.auto, "--format", help="Output format; auto = same as the target."),
    quality: int = typer.Option(95, min=1, max=100, help="JPEG/WebP quality."),
    url: str = URL, protocol: Protocol = PROTO, timeout: float = TIMEOUT,
) -> None:
    """Put the largest face of SOURCE onto the faces of TARGET and write OUTPUT."""
    try:
        with FaceSwapClient(url, protocol.value, timeout) as c:
            res = c.swap_images(source, target, selection=selection.value, face_index=face_index,
                                max_faces=max_faces, output_format=fmt.value, quality=quality)
    except FaceSwapError as exc:
        _fail(exc)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    tmp.write_bytes(res.image)
    os.replace(tmp, output)
    _warn_stand_ins(res.stand_in_models)
    trunc = " (truncated: more faces than the cap)" if res.truncated else ""
    typer.echo(f"{len(res.faces)} face(s) found, {res.faces_swapped} swapped{trunc}; wrote {output} "
               f"({res.width}x{res.height} {res.format})")


@app.command()
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
