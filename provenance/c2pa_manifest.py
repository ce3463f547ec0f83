"""C2PA manifests with the C2PA SDK for Python (``c2pa-python``): what every output says about itself.

Each manifest holds (C2PA 2.2, claim v2):

- claim generator ``faceswap-serving`` with the package version;
- ``c2pa.actions.v2``: ``c2pa.opened`` on the target (the ``parentOf`` ingredient, linked by the
  hashed URI the SDK makes), then ``c2pa.edited`` with ``digitalSourceType``
  ``compositeWithTrainedAlgorithmicMedia`` (IPTC NewsCodes: a real capture edited with a trained
  model), then ``c2pa.watermarked`` when the pixels carry the invisible watermark. Without a
  target, ``c2pa.created`` comes first, as the specification requires of a manifest with no parent.
  (Until issue 21 the edit said ``compositeSynthetic`` and there was no ``c2pa.watermarked``;
  ``verify`` reads both forms);
- ``c2pa.soft-binding``: the watermark as a soft binding, ``alg`` ``WATERMARK_ALG``, one block
  over the whole asset whose ``value`` is the payload (service id, result id) in hex. **Not
  standard:** the specification takes ``alg`` from the C2PA soft binding algorithm list, and ours
  (a DCT quantisation-index watermark, ``provenance.watermark``) is not on it, so a C2PA
  manifest repository will not know how to read it; the SDK signs and validates the assertion;
- the target as ingredient: read by the SDK from its bytes when it is a format the SDK parses
  (so a target that carries its own manifest keeps its history), always with its SHA-256 in
  the ingredient's ``metadata`` (``faceswap-serving.sha256``) and ``description``; no thumbnail
  of it is stored;
- ``faceswap-serving.models``: the models used (name, SHA-256, ``stand_in``), the service id,
  result id and watermark payload.

Signing uses the operator's certificate chain and key, or the development chain of
``devcert``. No timestamp authority is configured (``ta_url`` None) and OCSP, remote-manifest
fetching and every network host are off in the SDK settings, so nothing is fetched: manifests
carry the signing time from the claim only.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import threading
from importlib import metadata
from pathlib import Path

import c2pa
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificates
from cryptography.x509.oid import NameOID

from media import formats
from pipeline.precision import file_sha256
from pipeline.watermark import MIN_SIDE, Payload

from .devcert import ensure_development_credentials
from .xmp import COMPOSITE_WITH_TRAINED_MEDIA

log = logging.getLogger("provenance")

GENERATOR = "faceswap-serving"
#: Label of our own assertion (the C2PA specification asks entity-specific labels to be
#: prefixed by the entity; this project has no domain of its own, so its name is the prefix).
MODELS_ASSERTION = "faceswap-serving.models"
TARGET_SHA256_KEY = "faceswap-serving.sha256"
#: Service id carried by the watermark when none is configured: ASCII "FSWS".
DEFAULT_SERVICE_ID = 0x46535753
MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "mp4": "video/mp4"}
#: SDK settings (c2pa-rs settings schema): no network of any kind, no thumbnails (the target's
#: would put the user's photo into the output's manifest).
SDK_SETTINGS = {
    "builder": {"thumbnail": {"enabled": False}},
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "core": {"allowed_network_hosts": []},
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: digitalSourceType of the edit (and of ``c2pa.created`` without a target).
DIGITAL_SOURCE_TYPE = COMPOSITE_WITH_TRAINED_MEDIA
#: The watermark's algorithm name, in our assertion and as the soft binding's ``alg`` (ours, not
#: on the C2PA soft binding algorithm list).
WATERMARK_ALG = "faceswap-dct-qim-v1"
SOFT_BINDING = "c2pa.soft-binding"


@functools.cache
def generator_version() -> str:
    """This package's version (``importlib.metadata``: about 0.3 ms a call, so read once)."""
    try:
        return metadata.version(GENERATOR)
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class _PerThread:
    """One SDK object per thread and process, made by ``make()`` at first use and kept: the SDK's
    handles are not valid in a forked child, and a thread never waits on another's."""

    def __init__(self, make) -> None:
        self._make, self._local = make, threading.local()

    def get(self):
        obj = getattr(self._local, "obj", None)
        if obj is None or self._local.pid != os.getpid() or not obj.is_valid:
            self._local.obj, self._local.pid = self._make(), os.getpid()
        return self._local.obj


# The SDK reads back and validates every manifest it has just signed unless told not to: 1.3 of
# the 2.7 ms a 1280x720 live frame's signature took. ProvenanceSigner's self-test at start signs
# with validation on (sdk_context()), the data path after it is the same for every output, and
# the tests read results back (tests/unit/test_provenance.py).
_CONTEXT = _PerThread(lambda: sdk_context({"verify": {"verify_after_sign": False}}))


def signing_context() -> c2pa.Context:
    """The context for signing outputs: ``sdk_context()`` without the SDK's validation of each
    manifest just signed; one per thread, kept (making one costs about 0.13 ms)."""
    return _CONTEXT.get()


def sdk_context(extra: dict | None = None) -> c2pa.Context:
    """A ``c2pa.Context`` with ``SDK_SETTINGS`` (merged with ``extra``, e.g. trust anchors)."""
    settings = json.loads(json.dumps(SDK_SETTINGS))
    for k, v in (extra or {}).items():
        settings.setdefault(k, {}).update(v)
    return c2pa.Context.from_dict(settings)


def _alg_for(key_pem: bytes) -> c2pa.C2paSigningAlg:
    key = load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {256: c2pa.C2paSigningAlg.ES256, 384: c2pa.C2paSigningAlg.ES384, 521: c2pa.C2paSigningAlg.ES512}
        if key.curve.key_size not in algs:
            raise ValueError(f"EC curve {key.curve.name} is not one C2PA signs with (P-256, P-384, P-521)")
        return algs[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    raise ValueError(f"unsupported signing key type {type(key).__name__}")


class ProvenanceSigner:
    """Who signs: a certificate chain and key, plus the service id the watermark carries.

    Build one at start (``from_files`` for the operator's credentials, ``development`` for the
    local development chain) and share it; it holds only bytes and makes a ``c2pa.Signer`` per
    thread (``thread_signer``), kept for that thread's next signatures, so it is safe to use
    from several threads.

    Raises (constructors):
        ValueError: the key or chain cannot be read, or the key type is not one C2PA signs with.
        c2pa.C2paError: the SDK refuses the certificate (checked with one test signature).
    """

    def __init__(self, chain_pem: bytes, key_pem: bytes, *, service_id: int = DEFAULT_SERVICE_ID,
                 development: bool = False) -> None:
        Payload(service_id, 0)  # validates the id
        self.chain_pem, self.key_pem = chain_pem, key_pem
        self.service_id = service_id
        self.development = development
        self.alg = _alg_for(key_pem)
        certs = load_pem_x509_certificates(chain_pem)
        cn = certs[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        self.subject = cn[0].value if cn else certs[0].subject.rfc4514_string()
        self._signers = _PerThread(self.c2pa_signer)
        self._self_test()

    @classmethod
    def from_files(cls, chain_path: str | Path, key_path: str | Path, *,
                   service_id: int = DEFAULT_SERVICE_ID) -> ProvenanceSigner:
        """The operator's PEM certificate chain (end-entity first, then intermediates) and key."""
        return cls(Path(chain_path).read_bytes(), Path(key_path).read_bytes(), service_id=service_id)

    @classmethod
    def development(cls, folder: str | Path, *, service_id: int = DEFAULT_SERVICE_ID) -> ProvenanceSigner:
        """The development chain in ``folder/dev-c2pa/``, made at first use (logged; see ``devcert``)."""
        chain, key = ensure_development_credentials(folder)
        return cls(chain.read_bytes(), key.read_bytes(), service_id=service_id, development=True)

    def c2pa_signer(self) -> c2pa.Signer:
        """A new SDK signer (no timestamp authority); close it after use."""
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.alg, self.chain_pem, self.key_pem, None))

    def thread_signer(self) -> c2pa.Signer:
        """This thread's SDK signer for these credentials, made at first use and kept (making one
        costs about 0.4 ms, a tenth of signing a 1280x720 live frame); do not close it."""
        return self._signers.get()

    def _self_test(self) -> None:
        # The SDK checks the certificate profile when it signs; do it once now, not on a request.
        png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
               b"\x00\x00\x00\nIDATx\x9cc\xf8\x0f\x00\x01\x01\x01\x00\x18\xdd\x8d\xb0\x00\x00\x00\x00IEND\xaeB`\x82")
        definition = _definition([], Payload(self.service_id, 0), None, "self-test", watermarked=True)
        with c2pa.Builder(definition, sdk_context()) as b, self.c2pa_signer() as s:
            b.sign(s, "image/png", io.BytesIO(png), io.BytesIO())


def check_models(models: list[dict]) -> list[dict]:
    """Validated copies of model entries: ``name`` (str), ``sha256`` (64 lowercase hex),
    ``stand_in`` (bool, default False); other keys (e.g. ``file``, ``version``) are kept.

    Raises:
        ValueError: a missing or malformed field.
    """
    out = []
    for m in models:
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
            raise ValueError(f"model entry needs a non-empty 'name': {m!r}")
        sha = str(m.get("sha256", "")).lower()
        if not _SHA256.match(sha):
            raise ValueError(f"model {m['name']!r} needs a 'sha256' of 64 hex digits, got {m.get('sha256')!r}")
        out.append({**m, "sha256": sha, "stand_in": bool(m.get("stand_in", False))})
    return out


def _definition(models: list[dict], payload: Payload, target_sha256: str | None, title: str, *,
                watermarked: bool) -> dict:
    """The manifest definition (module docstring); ``watermarked``: the pixels carry the watermark
    (a ``c2pa.watermarked`` action and the ``c2pa.soft-binding`` assertion)."""
    version = generator_version()
    agent = {"name": GENERATOR, "version": version}
    edited = {"action": "c2pa.edited", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent,
              "description": "faces replaced with a face-swap model"}
    if target_sha256 is None:
        first = {"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent}
    else:
        first = {"action": "c2pa.opened", "parameters": {"ingredientIds": ["target"]}}
    actions = [first, edited]
    if watermarked:
        actions.append({"action": "c2pa.watermarked", "softwareAgent": agent,
                        "description": f"invisible watermark {WATERMARK_ALG} carrying the service and result ids "
                                       "(the c2pa.soft-binding assertion)"})
    stand_ins = [m["name"] for m in models if m["stand_in"]]
    ours = {
        "models": models,
        "stand_in_models": stand_ins,
        "note": ("STAND-IN models (seeded random weights): not a real face swap" if stand_ins else
                 "real models"),
        "service_id": payload.service_id,
        "result_id": payload.result_id,
        "watermark": {"scheme": WATERMARK_ALG, "payload": payload.to_bytes().hex(), "embedded": watermarked},
        "target_sha256": target_sha256,
    }
    assertions = [{"label": "c2pa.actions", "data": {"actions": actions}}, {"label": MODELS_ASSERTION, "data": ours}]
    if watermarked:
        assertions.append({"label": SOFT_BINDING, "data": {
            "alg": WATERMARK_ALG, "blocks": [{"scope": {}, "value": payload.to_bytes().hex()}], "pad": [0]}})
    return {"claim_generator_info": [agent], "title": title, "assertions": assertions}


def carries_watermark(data: bytes | None, fmt: str, path: str | Path | None = None) -> bool:
    """Whether an output of this size carries the watermark (``mark`` embeds it when both sides are
    at least ``watermark.MIN_SIDE`` px): the image header of ``data``, or the MP4 at ``path``'s
    first video stream. False when the size cannot be read."""
    try:
        if fmt == "mp4":
            import av

            with av.open(str(path) if path is not None else io.BytesIO(data)) as c:
                s = c.streams.video[0].codec_context
                return min(s.width, s.height) >= MIN_SIDE
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return min(im.size) >= MIN_SIDE
    except Exception:  # noqa: BLE001 - an unreadable size: claim no watermark
        return False


def _ingredient(sha: str, mime: str | None) -> dict:
    return {"title": "target", "format": mime or "application/octet-stream", "relationship": "parentOf",
            "label": "target", "description": f"the target the faces were swapped into; SHA-256 {sha}",
            "metadata": {TARGET_SHA256_KEY: sha}}


def _sign(source, dest, mime: str, target_stream, target_sha: str | None, models: list[dict],
          result_id: int, signer: ProvenanceSigner, title: str, watermarked: bool) -> None:
    payload = Payload(signer.service_id, result_id)
    definition = _definition(check_models(models), payload, target_sha, title, watermarked=watermarked)
    target_fmt = formats.sniff(target_stream.read(formats.HEAD)) if target_stream is not None else None
    target_mime = target_fmt.mime if target_fmt is not None and target_fmt.kind in ("image", "video") else None
    parsed = target_mime is not None and target_mime in c2pa.Builder.get_supported_mime_types()
    if target_sha is not None and not parsed:
        definition["ingredients"] = [_ingredient(target_sha, target_mime)]
    s = signer.thread_signer()
    with c2pa.Builder(definition, signing_context()) as builder:
        if target_sha is not None and parsed:
            target_stream.seek(0)
            try:
                builder.add_ingredient(_ingredient(target_sha, target_mime), target_mime, target_stream)
            except c2pa.C2paError as exc:  # a corrupt target: keep it by hash only
                log.info("C2PA: target not parsed by the SDK (%s); recorded by hash only", exc)
                definition["ingredients"] = [_ingredient(target_sha, target_mime)]
                return _sign_plain(source, dest, mime, definition, s)
        builder.sign(s, mime, source, dest)


def _sign_plain(source, dest, mime: str, definition: dict, s: c2pa.Signer) -> None:
    with c2pa.Builder(definition, signing_context()) as builder:
        builder.sign(s, mime, source, dest)


def sign_bytes(data: bytes, fmt: str, *, target: bytes | None, models: list[dict], result_id: int,
               signer: ProvenanceSigner) -> bytes:
    """``data`` with an embedded, signed C2PA manifest (see the module docstring).

    Args:
        data: encoded JPEG, PNG, WebP or MP4 bytes (already watermarked and with XMP).
        fmt: "jpeg", "png", "webp" or "mp4".
        target: the target image/video bytes the faces were swapped into (None: no target).
        models: ``[{"name", "sha256", "stand_in"}, ...]`` (see ``check_models``).
        result_id: 32-bit id of this result (also in the watermark).
        signer: the ``ProvenanceSigner``.

    Raises:
        ValueError: an unknown format or malformed models.
        c2pa.C2paError: the SDK could not parse ``data`` or sign.
    """
    if fmt not in MIME:
        raise ValueError(f"C2PA signing supports {', '.join(MIME)}, not {fmt!r}")
    sha = hashlib.sha256(target).hexdigest() if target is not None else None
    out = io.BytesIO()
    _sign(io.BytesIO(data), out, MIME[fmt], io.BytesIO(target) if target is not None else None, sha,
          models, result_id, signer, f"result-{result_id}.{fmt}", carries_watermark(data, fmt))
    return out.getvalue()


def sign_file(src: str | Path, dst: str | Path, fmt: str, *, target_path: str | Path | None,
              models: list[dict], result_id: int, signer: ProvenanceSigner) -> None:
    """Like ``sign_bytes`` for files (video): reads ``src``, writes the signed copy to ``dst``.

    Raises:
        ValueError, c2pa.C2paError: as ``sign_bytes``; OSError: a file cannot be read or written.
    """
    if fmt not in MIME:
        raise ValueError(f"C2PA signing supports {', '.join(MIME)}, not {fmt!r}")
    sha = file_sha256(target_path) if target_path is not None else None
    with open(src, "rb") as source, open(dst, "w+b") as dest:
        tstream = open(target_path, "rb") if target_path is not None else None
        try:
            _sign(source, dest, MIME[fmt], tstream, sha, models, result_id, signer, f"result-{result_id}.{fmt}",
                  carries_watermark(None, fmt, src))
        finally:
            if tstream is not None:
                tstream.close()
