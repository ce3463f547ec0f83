"""Through a real tritonserver (embedded, CPU), over HTTP and gRPC, with the tiny stand-ins."""

from __future__ import annotations

import asyncio
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from client import AsyncFaceSwapClient, FaceSwapClient, InvalidInput
from tests.support.photos import image_path, load


def png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def jpg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def decode(data: bytes) -> np.ndarray:
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert out is not None
    return out


def test_swap_without_face_returns_input_unchanged(client, source_latent):
    data = image_path("noface_coffee.png").read_bytes()
    res = client.swap(data, source_latent)
    assert (len(res.faces), res.faces_swapped, res.truncated) == (0, 0, False)
    assert res.image == data
    np.testing.assert_array_equal(decode(res.image), decode(data))


def test_faceless_reencoded_png_is_pixel_identical(client, source_latent):
    img = np.dstack([np.tile(np.linspace(0, 255, 97, dtype=np.uint8), (61, 1))] * 3)
    img[..., 0] = 30  # a coloured gradient catches a BGR/RGB slip
    res = client.swap(jpg(img), source_latent, output_format="png")
    assert res.format == "png" and res.faces_swapped == 0
    np.testing.assert_array_equal(decode(res.image), cv2.imdecode(np.frombuffer(jpg(img), np.uint8), 1))


def test_one_face_swapped_only_around_the_face(client, source_latent):
    img = load("portrait_biden_official.jpg")
    res = client.swap(png(img), source_latent)
    assert res.faces_swapped == 1 and len(res.faces) == 1 and res.format == "png"
    out = decode(res.image)
    assert out.shape == img.shape
    diff = np.abs(out.astype(int) - img.astype(int)).max(axis=2) > 0
    assert diff.any()
    ys, xs = np.where(diff)
    x1, y1, x2, y2 = res.faces[0].box
    w, h = x2 - x1, y2 - y1
    assert xs.min() >= x1 - w and xs.max() <= x2 + w and ys.min() >= y1 - h and ys.max() <= y2 + h
    assert "inswapper_128" in res.stand_in_models


def test_group_photo_every_face_swapped(client, source_latent):
    res = client.swap(image_path("group_insightface_t1.jpg"), source_latent)
    assert len(res.faces) == 6 and res.faces_swapped == 6 and res.selected == list(range(6))
    assert res.format == "jpeg" and (res.width, res.height) == (1280, 886)


def test_more_faces_than_swapper_batch_are_chunked(client, source_latent):
    face = load("portrait_obama_small_320x240.jpg")
    grid = np.vstack([np.hstack([face] * 6)] * 4)  # 24 faces, swapper batch is 8
    res = client.swap(jpg(grid), source_latent)
    assert len(res.faces) == 24 and res.faces_swapped == 24 and not res.truncated


def test_cap_sets_truncated_flag(client, source_latent):
    res = client.swap(image_path("group_insightface_t1.jpg"), source_latent, max_faces=4)
    assert len(res.faces) == 6 and res.faces_swapped == 4 and res.truncated
    areas = [f.area for f in res.faces]
    assert sorted(res.selected) == sorted(np.argsort(areas)[::-1][:4].tolist())


@pytest.mark.parametrize("size", [(641, 481), (333, 777), (1, 1), (32, 32), (4000, 3000)])
def test_odd_and_extreme_sizes(client, source_latent, size):
    face = load("portrait_obama_official.jpg")
    scale = min(size[0] / face.shape[1], size[1] / face.shape[0])
    fw, fh = max(int(face.shape[1] * scale), 1), max(int(face.shape[0] * scale), 1)
    img = np.full((size[1], size[0], 3), 127, np.uint8)
    img[:fh, :fw] = cv2.resize(face, (fw, fh), interpolation=cv2.INTER_AREA)
    res = client.swap(jpg(img), source_latent)
    assert (res.width, res.height) == size
    assert decode(res.image).shape == (size[1], size[0], 3)
    if size in [(641, 481), (333, 777), (4000, 3000)]:
        assert res.faces_swapped == 1


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "half-jpeg"])
def test_corrupt_bytes_clear_error_and_server_stays_ready(client, source_latent, data):
    if data == "half-jpeg":
        raw = image_path("portrait_obama_official.jpg").read_bytes()
        data = raw[: len(raw) // 2]
    if data == b"":
        with pytest.raises(InvalidInput, match="no source latent|empty"):
            client.swap(data, source_latent)
    else:
        with pytest.raises(InvalidInput, match="corrupt|unsupported"):
            client.swap(data, source_latent)
    assert client.health()["ready"]


def test_face_index_out_of_range_names_valid_range(client, source_latent):
    with pytest.raises(InvalidInput, match=r"valid 0\.\.5"):
        client.swap(image_path("group_insightface_t1.jpg"), source_latent, selection="index", face_index=6)


def test_bad_option_is_rejected(client, source_latent):
    with pytest.raises(InvalidInput, match="selection"):
        client.swap(image_path("group_insightface_t1.jpg"), source_latent, selection="everyone")


def test_selection_largest_and_similar(client, source_latent):
    target = image_path("two_obama_biden.jpg")
    faces = client.embed(target).faces
    assert len(faces) >= 2
    largest = client.swap(target, source_latent, selection="largest")
    assert largest.selected == [int(np.argmax([f.area for f in faces]))]
    similar = client.swap(target, source_latent, selection="similar", reference_embedding=faces[1].embedding)
    assert similar.selected == [1] and similar.faces_swapped == 1 and not similar.no_match


def test_similar_swaps_nobody_when_the_reference_is_absent(client, source_latent):
    """Every face is below the threshold (cosine 0.3 by default) to the reference: nothing is
    swapped and the image comes back as it was, instead of the most similar stranger swapped."""
    path = image_path("two_obama_biden.jpg")
    faces = client.embed(path).faces
    absent = -np.mean([f.embedding for f in faces], axis=0)  # cosine < 0 to every face of the image
    res = client.swap(path, source_latent, selection="similar", reference_embedding=absent / np.linalg.norm(absent))
    assert res.selected == [] and res.faces_swapped == 0 and len(res.faces) == len(faces)
    assert res.image == path.read_bytes() and res.no_match
    low = client.swap(path, source_latent, selection="similar", reference_embedding=absent, threshold=-1)
    assert low.faces_swapped == 1 and not low.no_match


def test_embed_returns_normed_embeddings_and_latents(client):
    res = client.embed(image_path("group_insightface_t1.jpg"))
    assert len(res.faces) == 6
    for f in res.faces:
        assert abs(np.linalg.norm(f.embedding) - 1) < 1e-4 and abs(np.linalg.norm(f.latent) - 1) < 1e-4
        assert f.kps.shape == (5, 2) and 0.5 <= f.score <= 1
    assert client.embed(image_path("noface_rocket.jpg")).faces == []


def test_exif_orientation_applied_before_detection(client, source_latent):
    img = load("portrait_obama_official.jpg")
    upright = client.embed(jpg(img)).faces
    rotated = Image.fromarray(cv2.cvtColor(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 8  # displayed rotated 90 degrees counter-clockwise: upright again
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=95, exif=exif)
    faces = client.embed(buf.getvalue()).faces
    assert len(faces) == len(upright) == 1
    assert np.abs(faces[0].box - upright[0].box).max() < 6
    res = client.swap(buf.getvalue(), source_latent)
    assert (res.width, res.height) == (img.shape[1], img.shape[0])


def test_concurrent_requests_each_get_their_own_result(triton, source_latent):
    names = ["portrait_biden_official.jpg", "group_insightface_t1.jpg"]
    with FaceSwapClient(triton.http_url) as c:
        serial = [c.swap(image_path(n), source_latent, output_format="png") for n in names]

    async def both():
        async with AsyncFaceSwapClient(triton.grpc_url, "grpc") as ac:
            return await asyncio.gather(*(ac.swap(image_path(n), source_latent, output_format="png")
                                          for n in names * 2))

    results = asyncio.run(both())
    for i, res in enumerate(results):
        ref = serial[i % 2]
        assert (res.width, res.height, res.faces_swapped) == (ref.width, ref.height, ref.faces_swapped)
        np.testing.assert_array_equal(decode(res.image), decode(ref.image))


def test_async_http_client_and_statistics(triton, source_latent):
    async def run():
        async with AsyncFaceSwapClient(triton.http_url, "http") as ac:
            h = await ac.health()
            r = await ac.swap_images(image_path("portrait_obama_official.jpg"), image_path("group_insightface_t1.jpg"))
            return h, r

    h, r = asyncio.run(run())
    assert h["ready"] and r.faces_swapped == 6
    with FaceSwapClient(triton.http_url) as c:
        stats = c.statistics()
    assert int(stats["face_swapper"]["inference_count"]) > 0


def test_source_without_face_is_no_face_error(client):
    from client import NoFaceError

    with pytest.raises(NoFaceError):
        client.swap_images(image_path("noface_cat_chelsea.png"), image_path("group_insightface_t1.jpg"))


def test_result_json_names_stand_ins(client, source_latent):
    res = client.swap(image_path("portrait_obama_small_320x240.jpg"), source_latent)
    assert set(res.stand_in_models) == {"w600k_r50", "inswapper_128"}
    json.dumps(res.stand_in_models)


def test_pairs_swap_only_faces_matching_a_reference(client, source_latent):
    target = image_path("two_obama_biden.jpg")
    faces = client.embed(target).faces
    refs = np.stack([faces[1].embedding])
    # The stand-in ArcFace does not tell people apart: only a face's own embedding passes 0.999.
    res = client.swap(target, np.stack([source_latent]), reference_embedding=refs, selection="pairs",
                      threshold=0.999)
    assert res.selected == [1] and res.faces_swapped == 1


def test_rgba_png_keeps_alpha_exactly(client, source_latent):
    img = load("portrait_biden_official.jpg")
    h, w = img.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.circle(alpha, (w // 2, h // 2), min(h, w) // 2, 255, -1)
    alpha[: h // 8] = 77
    res = client.swap(cv2.imencode(".png", np.dstack([img, alpha]))[1].tobytes(), source_latent)
    out = cv2.imdecode(np.frombuffer(res.image, np.uint8), cv2.IMREAD_UNCHANGED)
    assert res.faces_swapped == 1 and res.format == "png" and out.shape == (h, w, 4)
    np.testing.assert_array_equal(out[..., 3], alpha)


def test_grey_input_gives_grey_output(client, source_latent):
    grey = cv2.cvtColor(load("portrait_biden_official.jpg"), cv2.COLOR_BGR2GRAY)
    res = client.swap(cv2.imencode(".jpg", grey)[1].tobytes(), source_latent)
    out = decode(res.image).astype(int)
    assert res.faces_swapped == 1
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 3 and np.abs(out[..., 1] - out[..., 2]).max() <= 3


def test_embed_returns_aligned_faces(client):
    res = client.embed(image_path("portrait_obama_official.jpg"))
    assert res.faces[0].aligned.shape == (112, 112, 3) and res.faces[0].aligned.std() > 10


def test_header_bombs_are_refused_before_decoding(client, source_latent):
    import struct

    from tests.support.gateway_calls import solid_png

    raw = bytearray(jpg(load("portrait_obama_small_320x240.jpg")))
    i = raw.find(b"\xff\xc0")
    raw[i + 5:i + 9] = struct.pack(">HH", 65000, 65000)
    for data in (bytes(raw), solid_png(20000, 20000)):
        with pytest.raises(InvalidInput, match="too large"):
            client.swap(data, source_latent)
    assert client.health()["ready"]


@pytest.mark.parametrize("latent", [np.full(512, np.nan, np.float32), np.zeros(100, np.float32)])
def test_bad_latents_are_invalid_input(client, latent):
    with pytest.raises(InvalidInput):
        client.swap(image_path("group_insightface_t1.jpg"), latent)


def test_server_refuses_a_busy_port(triton, tmp_path):
    from launch.server import Ports, TritonServer

    other = TritonServer(triton.repository, Ports(triton.ports.http, triton.ports.grpc, triton.ports.metrics),
                         run_dir=tmp_path)
    with pytest.raises(RuntimeError, match="already in use"):
        other.start(timeout=30)
    assert triton.is_ready()


def test_cli_swap_writes_format_of_extension_and_rejects_directories(triton, tmp_path):
    from typer.testing import CliRunner

    from client.cli import app

    runner = CliRunner()
    args = ["swap", "-s", str(image_path("portrait_obama_official.jpg")), "--url", triton.http_url,
            "-t", str(image_path("portrait_biden_official.jpg"))]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, [*args, "-o", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.output
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "x.jpg"), "--face-index", "3"])
    assert res.exit_code == 2 and "valid 0..0" in res.output
    res = runner.invoke(app, ["health", "--url", "127.0.0.1:9"])
    assert res.exit_code == 3


def test_close_up_face_is_found_and_swapped(client, source_latent):
    data = image_path("aligned112_tom_hanks.png").read_bytes()
    assert len(client.embed(data).faces) == 1
    res = client.swap(data, source_latent)
    assert res.faces_swapped == 1 and (res.width, res.height) == (112, 112)


@pytest.mark.parametrize("side", [300, 160, 112])
def test_downscaled_portraits_still_found(client, source_latent, side):
    face = load("portrait_obama_official.jpg")
    scale = side / max(face.shape[:2])
    small = cv2.resize(face, (int(face.shape[1] * scale), int(face.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    assert client.swap(jpg(small), source_latent).faces_swapped == 1
