"""Provenance marks (issue 12): C2PA manifest, XMP DigitalSourceType, pixel watermark, verify."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

try:
    import c2pa
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from defusedxml import ElementTree  # noqa: F401  (Pillow's getxmp needs it)
except ImportError as exc:  # pragma: no cover - an environment without the lock's packages
    pytest.fail(f"provenance needs {exc.name}: install the pinned set with `pip install -r requirements.lock` "
                "(c2pa-python, cryptography, defusedxml)", pytrace=False)

import av

import pipeline.watermark as wm
from pipeline.quality import psnr
from provenance import (
    COMPOSITE_SYNTHETIC,
    COMPOSITE_WITH_TRAINED_MEDIA,
    MODELS_ASSERTION,
    Payload,
    ProvenanceSigner,
    mark_encoded,
    mark_image,
    mark_video_file,
    verify,
    watermark_frame,
)
from provenance.c2pa_manifest import sdk_context
from provenance.devcert import C2PA_CLAIM_SIGNING
from provenance.xmp import read_digital_source_type
from tests.support.photos import IMAGES, ROOT, image_path, load

MODELS = [{"name": "det_2.5g", "sha256": "a" * 64, "stand_in": False},
          {"name": "inswapper_128", "sha256": "b" * 64, "stand_in": True}]
EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "mp4": "video/mp4"}
#: Photos of several sizes and contents for the watermark figures (all from ../shared/images).
ROBUSTNESS_PHOTOS = ["two_obama_biden_stage.jpg", "portrait_obama_official.jpg", "group_voc_2008_004176.jpg",
                     "noface_coffee.png", "noface_hard_dogs.jpg", "portrait_obama_small_320x240.jpg"]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("provenance-state")


@pytest.fixture(scope="module")
def signer(state_dir) -> ProvenanceSigner:
    return ProvenanceSigner.development(state_dir)


@pytest.fixture(scope="module")
def target() -> bytes:
    return image_path("portrait_obama_official.jpg").read_bytes()


@pytest.fixture(scope="module")
def output_bgr() -> np.ndarray:
    return load("two_obama_biden.jpg")


@pytest.fixture(scope="module")
def marked(signer, target, output_bgr) -> dict[str, bytes]:
    out = {}
    for fmt in ("jpeg", "png", "webp"):
        data = cv2.imencode(EXT[fmt], output_bgr)[1].tobytes()
        out[fmt] = mark_image(data, fmt, target, MODELS, 4242, signer)
    return out


def sdk_read(data: bytes, mime: str) -> tuple[str, dict, list[str]]:
    """(validation state, active manifest, failure codes) from the SDK's own reader."""
    with c2pa.Reader(mime, io.BytesIO(data), context=sdk_context()) as r:
        store = json.loads(r.json())
        state = r.get_validation_state()
        failures = [f["code"] for f in r.get_validation_results()["activeManifest"]["failure"]]
    return state, store["manifests"][store["active_manifest"]], failures


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def jpeg(img: np.ndarray, q: int) -> np.ndarray:
    return decode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes())


def half(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def crop10(img: np.ndarray) -> np.ndarray:
    """Keep the central 90% of width and height (5% off each side)."""
    h, w = img.shape[:2]
    return img[h // 20:h - h // 20, w // 20:w - w // 20]


# --- development certificate ---------------------------------------------------------------------

def test_development_certificate_has_the_c2pa_signing_profile_and_is_made_once(state_dir, signer, caplog):
    folder = state_dir / "dev-c2pa"
    ee, ca = x509.load_pem_x509_certificates((folder / "chain.pem").read_bytes())
    assert "DEVELOPMENT" in signer.subject and "not trusted" in signer.subject
    ku = ee.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = ee.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku and C2PA_CLAIM_SIGNING in eku
    assert not ee.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ee.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ee.public_key().curve.name == "secp256r1" and ee.issuer == ca.subject
    assert (folder / "key.pem").stat().st_mode & 0o077 == 0
    before = (folder / "chain.pem").read_bytes()
    with caplog.at_level(logging.WARNING, logger="provenance"):
        again = ProvenanceSigner.development(state_dir)
    assert (folder / "chain.pem").read_bytes() == before, "an existing development chain must be reused"
    assert not caplog.records, "the development certificate is logged once per process, not per signer"
    assert again.development and again.service_id == signer.service_id


def test_self_signed_certificate_is_refused_at_start(tmp_path):
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "self-signed")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "chain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with pytest.raises(c2pa.C2paError):  # C2PA signers need a chain; caught when the service starts
        ProvenanceSigner.from_files(tmp_path / "chain.pem", tmp_path / "key.pem")


def test_operator_credentials_from_files_sign(state_dir, target, output_bgr):
    folder = state_dir / "dev-c2pa"
    s = ProvenanceSigner.from_files(folder / "chain.pem", folder / "key.pem", service_id=7)
    assert not s.development
    out = mark_image(cv2.imencode(".jpg", output_bgr)[1].tobytes(), "jpeg", target, MODELS, 1, s)
    assert verify(out)["watermark"]["payload"]["service_id"] == 7


# --- C2PA manifest -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_sdk_reader_validates_our_manifest(marked, target, fmt):
    state, m, failures = sdk_read(marked[fmt], MIME[fmt])
    assert state == "Valid", failures
    assert failures == ["signingCredential.untrusted"], "a development signer is untrusted, nothing else may fail"
    assert m["claim_generator_info"][0]["name"] == "faceswap-serving"
    assert m["claim_generator_info"][0]["version"]
    actions = next(a for a in m["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["action"] == "c2pa.opened"
    assert actions[0]["parameters"]["ingredients"][0]["url"].endswith("c2pa.ingredient.v3")
    # C2PA 2.2: opened, the edit by a trained model, then the watermark as a soft binding
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited", "c2pa.watermarked"]
    assert actions[1]["digitalSourceType"] == COMPOSITE_WITH_TRAINED_MEDIA
    binding = next(a for a in m["assertions"] if a["label"] == "c2pa.soft-binding")["data"]
    assert binding["alg"] == "faceswap-dct-qim-v1" and binding["blocks"][0]["value"] == Payload(
        signer_id(m), 4242).to_bytes().hex()
    (ing,) = m["ingredients"]
    assert ing["relationship"] == "parentOf" and ing["format"] == "image/jpeg"
    assert ing["metadata"]["faceswap-serving.sha256"] == hashlib.sha256(target).hexdigest()
    assert "thumbnail" not in ing, "the target's picture must not travel in the output's manifest"
    ours = next(a for a in m["assertions"] if a["label"] == MODELS_ASSERTION)["data"]
    assert [x["name"] for x in ours["models"]] == ["det_2.5g", "inswapper_128"]
    assert ours["stand_in_models"] == ["inswapper_128"] and "STAND-IN" in ours["note"]
    assert ours["result_id"] == 4242
    assert "DEVELOPMENT" in m["signature_info"]["common_name"]
    assert "time" not in m["signature_info"], "no timestamp authority may be used"


def test_signers_are_kept_per_thread_and_concurrent_signatures_validate(signer, state_dir, target, output_bgr):
    """Each thread keeps its own SDK signer and context (made once: 0.5 ms of a live frame's
    signature); outputs signed at once from four threads, without the SDK's validation after
    signing, are all valid, each with its own result id."""
    import threading

    from provenance.c2pa_manifest import signing_context

    data = cv2.imencode(".jpg", output_bgr)[1].tobytes()
    assert signer.thread_signer() is signer.thread_signer() and signing_context() is signing_context()
    other = ProvenanceSigner.development(state_dir, service_id=signer.service_id + 1)
    assert other.thread_signer() is not signer.thread_signer()
    out: dict[int, bytes] = {}
    kept: dict[int, object] = {}

    def work(k: int) -> None:
        for i in range(3):
            out[10 * k + i] = mark_encoded(data, "jpeg", target, MODELS, 10 * k + i, signer)
        kept[k] = signer.thread_signer()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 12 and len({id(v) for v in kept.values()}) == 4
    for rid, signed in out.items():
        state, manifest, failures = sdk_read(signed, "image/jpeg")
        assert state == "Valid", (rid, failures)
        ours = next(a for a in manifest["assertions"] if a["label"] == MODELS_ASSERTION)
        assert ours["data"]["result_id"] == rid


def test_manifest_without_target_starts_with_created(signer, output_bgr):
    out = mark_image(cv2.imencode(".png", output_bgr)[1].tobytes(), "png", None, MODELS, 5, signer)
    state, m, _ = sdk_read(out, "image/png")
    actions = next(a for a in m["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert state == "Valid" and actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == COMPOSITE_WITH_TRAINED_MEDIA and not m.get("ingredients")


def signer_id(manifest: dict) -> int:
    """The service id our assertion names."""
    return next(a for a in manifest["assertions"] if a["label"] == MODELS_ASSERTION)["data"]["service_id"]


def test_verify_reads_the_new_form_and_the_form_before_c2pa_2_2(marked, signer, target, output_bgr, monkeypatch):
    new = verify(marked["jpeg"])
    assert new["c2pa"]["valid"] and new["ai_generated"]
    assert new["c2pa"]["soft_binding"] == {"alg": "faceswap-dct-qim-v1", "value": Payload(signer.service_id,
                                                                                          4242).to_bytes().hex()}
    assert new["watermark"]["matches_manifest"] is True
    assert new["xmp"]["digital_source_type"] == COMPOSITE_WITH_TRAINED_MEDIA
    # the form made before issue 21: compositeSynthetic, no c2pa.watermarked, no soft binding
    import provenance.c2pa_manifest as cm
    import provenance.xmp as xmp

    plain = cm._definition

    def old(*args, **kwargs):
        d = plain(*args, **{**kwargs, "watermarked": False})
        for a in d["assertions"][0]["data"]["actions"]:
            if "digitalSourceType" in a:
                a["digitalSourceType"] = COMPOSITE_SYNTHETIC
        return d

    monkeypatch.setattr(cm, "_definition", old)
    monkeypatch.setattr(xmp.xmp_packet, "__defaults__", (COMPOSITE_SYNTHETIC,))
    data = mark_image(cv2.imencode(".jpg", output_bgr)[1].tobytes(), "jpeg", target, MODELS, 77, signer)
    state, m, _ = sdk_read(data, "image/jpeg")
    assert [a["action"] for a in next(a for a in m["assertions"] if a["label"].startswith("c2pa.actions"))["data"][
        "actions"]] == ["c2pa.opened", "c2pa.edited"]
    rep = verify(data)
    assert rep["c2pa"]["valid"] and rep["c2pa"]["soft_binding"] is None and "matches_manifest" not in rep["watermark"]
    assert rep["xmp"]["digital_source_type"] == COMPOSITE_SYNTHETIC and rep["xmp"]["ai_generated"]
    assert rep["ai_generated"] and rep["marks_found"] == ["c2pa", "xmp", "watermark"]
    assert any(a.get("digitalSourceType") == COMPOSITE_SYNTHETIC for a in rep["c2pa"]["actions"])


def _jpeg_header_len(data: bytes) -> int:
    pos = 2
    while data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return pos


def _pixel_data_middle(data: bytes, fmt: str) -> int:
    """Offset of a byte in the middle of the compressed pixels."""
    if fmt == "jpeg":
        sos = data.index(b"\xff\xda", _jpeg_header_len(data))
        return (sos + len(data)) // 2
    kind = b"IDAT" if fmt == "png" else b"VP8 "
    at = data.index(kind)
    n = struct.unpack(">I" if fmt == "png" else "<I", data[at - 4:at] if fmt == "png" else data[at + 4:at + 8])[0]
    return at + 8 + n // 2


def _repaint(signed: bytes, fmt: str) -> bytes:
    """The signed file with changed pixels but every metadata segment/chunk (manifest included) kept."""
    img = decode(signed)
    img[40:120, 40:200] = (0, 0, 255)
    fresh = cv2.imencode(EXT[fmt], img)[1].tobytes()
    if fmt == "jpeg":
        return signed[:_jpeg_header_len(signed)] + fresh[_jpeg_header_len(fresh):]
    if fmt == "png":
        def chunks(d):
            pos, out = 8, []
            while pos < len(d):
                n = struct.unpack(">I", d[pos:pos + 4])[0]
                out.append((d[pos + 4:pos + 8], d[pos:pos + 12 + n]))
                pos += 12 + n
            return out
        new_idat = b"".join(raw for k, raw in chunks(fresh) if k == b"IDAT")
        old = chunks(signed)
        first = next(i for i, (k, _) in enumerate(old) if k == b"IDAT")
        kept = [raw for i, (k, raw) in enumerate(old) if k != b"IDAT" or i == first]
        kept = [new_idat if raw == old[first][1] else raw for raw in kept]
        return signed[:8] + b"".join(kept)
    # webp: swap the image chunk, keep VP8X / XMP / C2PA chunks
    def riff(d):
        pos, out = 12, []
        while pos < len(d):
            n = struct.unpack("<I", d[pos + 4:pos + 8])[0]
            out.append((d[pos:pos + 4], d[pos:pos + 8 + n + (n & 1)]))
            pos += 8 + n + (n & 1)
        return out
    new_img = next(raw for k, raw in riff(fresh) if k in (b"VP8 ", b"VP8L"))
    body = b"WEBP" + b"".join(new_img if k in (b"VP8 ", b"VP8L") else raw for k, raw in riff(signed))
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_changing_bytes_or_pixels_after_signing_invalidates(marked, fmt):
    signed = marked[fmt]
    flipped = bytearray(signed)
    flipped[_pixel_data_middle(signed, fmt)] ^= 0x55
    repainted = _repaint(signed, fmt)
    assert decode(repainted)[80, 100].tolist() != decode(signed)[80, 100].tolist()
    for name, data in (("byte flipped", bytes(flipped)), ("pixels repainted", repainted)):
        state, _, failures = sdk_read(data, MIME[fmt])
        assert state == "Invalid", (name, failures)
        assert any("mismatch" in f for f in failures), (name, failures)
        report = verify(data)
        assert report["c2pa"]["present"] and report["c2pa"]["valid"] is False, name
        assert "INVALID" in report["summary"], name


# --- XMP -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_xmp_digital_source_type_is_in_the_file(marked, fmt):
    assert read_digital_source_type(marked[fmt], fmt) == (True, COMPOSITE_WITH_TRAINED_MEDIA)


def test_xmp_stays_readable_when_a_tool_strips_the_c2pa_manifest(marked):
    data, pos, kept = marked["jpeg"], 2, [marked["jpeg"][:2]]
    while data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] != 0xEB:  # APP11 holds the C2PA JUMBF
            kept.append(data[pos:pos + 2 + n])
        pos += 2 + n
    stripped = b"".join(kept) + data[pos:]
    report = verify(stripped)
    assert not report["c2pa"]["present"]
    assert report["xmp"]["ai_generated"] and report["watermark"]["found"]


# --- watermark -----------------------------------------------------------------------------------

def test_watermark_figures_after_jpeg_q75_half_scale_and_crop():
    payload = Payload(0x46535753, 0x9E3779B9)
    figures = {"q75": [], "half": [], "crop10": [], "psnr": []}
    for name in ROBUSTNESS_PHOTOS:
        img = load(name)
        m = wm.embed(img, payload)
        figures["psnr"].append(psnr(m, img))
        figures["q75"].append(wm.bit_accuracy(jpeg(m, 75), payload))
        figures["half"].append(wm.bit_accuracy(half(m), payload))
        cropped = crop10(m)
        figures["crop10"].append(wm.bit_accuracy(cropped, payload))
        det = wm.detect(cropped)
        assert not det.found or det.payload == payload, "a crop may lose the mark, never misread it"
        for attacked in (jpeg(m, 75), half(m)):
            det = wm.detect(attacked)
            assert det.found and det.payload == payload, (name, det.confidence)
    mean = {k: float(np.mean(v)) for k, v in figures.items()}
    print(json.dumps({k: round(v, 3) for k, v in mean.items()}))  # noqa: T201 - the figures, with -s
    # Targets of issue 12: >= 95% of bits after JPEG q75 and after a 50% downscale (we reach 100%).
    assert min(figures["q75"]) >= 0.95 and mean["q75"] >= 0.99, figures["q75"]
    assert min(figures["half"]) >= 0.95 and mean["half"] >= 0.99, figures["half"]
    assert min(figures["psnr"]) >= 40.0, figures["psnr"]  # invisible: about 42 dB
    # A 10% crop moves the block grid: measured at chance level (about 45%); not a target.
    assert mean["crop10"] < 0.75, "crop robustness improved: update the docs and this figure"


def test_watermark_keeps_alpha_and_rejects_wrong_input():
    rgba = np.dstack([load("noface_coffee.png"), np.full((400, 600), 77, np.uint8)])
    out = wm.embed(rgba, Payload(1, 2))
    assert out.shape == rgba.shape and (out[:, :, 3] == 77).all()
    assert wm.detect(out).payload == Payload(1, 2)
    with pytest.raises(ValueError):
        wm.embed(rgba.astype(np.float32), Payload(1, 2))
    with pytest.raises(ValueError):
        wm.embed(np.zeros((32, 300, 3), np.uint8), Payload(1, 2))
    with pytest.raises(ValueError):
        Payload(2 ** 32, 0)


def test_shared_photos_say_no_marks():
    photos = sorted(glob.glob(str(IMAGES / "*.jpg")) + glob.glob(str(IMAGES / "*.png")))
    assert len(photos) >= 15, f"expected the real photos of {IMAGES}"
    for p in photos:
        report = verify(Path(p).read_bytes(), os.path.basename(p))
        assert report["marks_found"] == [] and not report["ai_generated"], (p, report)
        assert report["summary"] == "no marks found"
        assert report["watermark"]["confidence"] < 0.07, (p, report["watermark"])


def test_verify_marked_reencoded_scaled_and_cropped(marked):
    report = verify(marked["jpeg"], "result.jpg")
    assert report["marks_found"] == ["c2pa", "xmp", "watermark"] and report["ai_generated"]
    assert report["c2pa"]["valid"] and not report["c2pa"]["trusted"]
    assert report["watermark"]["payload"]["result_id"] == 4242
    img = decode(marked["png"])
    for name, attacked in (("q75", jpeg(img, 75)), ("half+q75", jpeg(half(img), 85)),
                           ("webp q60", decode(cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 60])[1]))):
        data = cv2.imencode(".jpg", attacked, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        r = verify(data)
        assert not r["c2pa"]["present"] and not r["xmp"]["present"], name  # re-encoding drops metadata
        assert r["watermark"]["found"] and r["watermark"]["payload"]["result_id"] == 4242, (name, r["watermark"])
        assert r["ai_generated"]
    cropped = cv2.imencode(".jpg", crop10(img))[1].tobytes()
    r = verify(cropped)
    assert not r["c2pa"]["present"]
    assert not r["watermark"]["found"] or r["watermark"]["payload"]["result_id"] == 4242


def test_tiny_image_gets_xmp_and_c2pa_without_watermark(signer):
    tiny = cv2.imencode(".png", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    out = mark_image(tiny, "png", None, MODELS, 9, signer)
    r = verify(out)
    assert r["c2pa"]["valid"] and r["xmp"]["ai_generated"] and not r["watermark"]["found"]
    # no watermark in the pixels: the manifest claims none (no c2pa.watermarked, no soft binding)
    assert r["c2pa"]["soft_binding"] is None
    assert [a["action"] for a in r["c2pa"]["actions"]] == ["c2pa.created", "c2pa.edited"]


# --- video ---------------------------------------------------------------------------------------

def _encodeclip(src: Path, dst: Path, payload: Payload | None, size: tuple[int, int], frames: int, crf: int):
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast"}
        for i, f in enumerate(inp.decode(video=0)):
            if i >= frames:
                break
            bgr = cv2.resize(f.to_ndarray(format="bgr24"), size, interpolation=cv2.INTER_LINEAR)
            if payload is not None:
                bgr = watermark_frame(bgr, payload)
            for p in vs.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


def test_mp4_marked_end_to_end_and_tampering_invalidates(signer, tmp_path):
    src = image_path("video_whitehouse_hamilton_640x360.mp4")
    clip = tmp_path / "out.mp4"
    payload = Payload(signer.service_id, 777)
    _encodeclip(src, clip, payload, (1280, 720), 24, crf=23)  # 720p, stricter than the jobs' crf 18
    mark_video_file(clip, src, MODELS, 777, signer)
    data = clip.read_bytes()
    state, m, failures = sdk_read(data, "video/mp4")
    assert state == "Valid" and failures == ["signingCredential.untrusted"]
    actions = next(a for a in m["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited", "c2pa.watermarked"]
    assert m["ingredients"][0]["format"] == "video/mp4"
    report = verify(data, "out.mp4")
    assert report["marks_found"] == ["c2pa", "xmp", "watermark"], report
    assert report["watermark"]["payload"]["result_id"] == 777 and report["watermark"]["frames_checked"] >= 4
    assert report["watermark"]["matches_manifest"] is True
    with av.open(io.BytesIO(data)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 24  # still a playable file
    tampered = bytearray(data)
    tampered[len(data) // 2] ^= 0xFF
    state, _, failures = sdk_read(bytes(tampered), "video/mp4")
    assert state == "Invalid" and "assertion.bmffHash.mismatch" in failures


def test_unmarked_video_says_no_marks():
    report = verify(image_path("video_astronaut_zoompan_384.mp4").read_bytes(), "clip.mp4")
    assert report["marks_found"] == [] and report["summary"] == "no marks found"


# --- offline -------------------------------------------------------------------------------------

def test_signing_and_verifying_need_no_network(state_dir, tmp_path):
    """Run marking and verify in a network namespace with no interfaces up (root: `unshare -n`)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    code = ("import cv2, sys; from provenance import ProvenanceSigner, mark_image, verify; "
            f"s = ProvenanceSigner.development({str(state_dir)!r}); "
            "img = cv2.imread(sys.argv[1]); "
            "out = mark_image(cv2.imencode('.jpg', img)[1].tobytes(), 'jpeg', None, [], 3, s); "
            "r = verify(out); assert r['c2pa']['valid'] and r['watermark']['found'], r; print('offline ok')")
    cmd = [sys.executable, "-c", code, str(image_path("two_obama_biden.jpg"))]
    if probe.returncode == 0:
        cmd = ["unshare", "-n", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "offline ok" in out.stdout, out.stderr[-2000:]
    assert probe.returncode == 0, "unshare -n is unavailable: ran with the network; run as root to check offline"


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_file_that_never_had_a_manifest_reports_no_c2pa(fmt):
    """A damaged plain file is "no manifest", not "manifest invalid" (issue 18)."""
    ok, enc = cv2.imencode(".png" if fmt == "png" else ".jpg",
                           np.random.default_rng(3).integers(0, 255, (96, 128, 3), np.uint8))
    for cut in (len(enc) // 2, 40):
        report = verify(enc.tobytes()[:cut], f"x.{fmt}")
        assert "c2pa" not in report["marks_found"], report
        assert report["c2pa"]["present"] is False and "INVALID" not in report["summary"], report


def test_truncated_marked_file_still_reports_its_damaged_manifest(marked):
    cut = marked["png"][: len(marked["png"]) * 3 // 4]
    report = verify(cut, "x.png")
    assert report["c2pa"]["present"] and report["c2pa"]["valid"] is False, report["c2pa"]


# --- the visible badge ---------------------------------------------------------------------------

def test_badge_is_burned_in_the_corner_only_and_small_images_get_none(signer, output_bgr):
    from pipeline.badge import badge_box, burn_badge

    out = burn_badge(output_bgr)
    assert out.shape == output_bgr.shape and out.dtype == np.uint8 and out is not output_bgr
    x1, y1, x2, y2 = badge_box(output_bgr.shape[1], output_bgr.shape[0])
    assert x2 <= output_bgr.shape[1] and y2 <= output_bgr.shape[0] and x1 > output_bgr.shape[1] // 2
    changed = np.any(out != output_bgr, axis=2)
    assert changed[y1:y2, x1:x2].mean() > 0.5 and not changed.sum() - changed[y1:y2, x1:x2].sum()
    text = out[y1:y2, x1:x2].max(axis=2)  # white text on a dark box
    assert (text > 200).mean() > 0.05 and np.median(text) < 90
    small = np.full((60, 80, 3), 90, np.uint8)
    assert np.array_equal(burn_badge(small), small)
    with pytest.raises(ValueError, match="uint8"):
        burn_badge(output_bgr.astype(np.float32))
    # under the invisible marks: the watermark is read back through the badge
    marked = mark_image(cv2.imencode(".jpg", out)[1].tobytes(), "jpeg", None, MODELS, 31, signer)
    assert verify(marked)["watermark"]["payload"]["result_id"] == 31
