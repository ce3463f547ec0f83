"""Precision chosen by a parity self-check when a network loads (CPU profile).

When ``face_detector``, ``face_recognizer``, ``face_swapper`` or ``content_detector`` loads with
precision ``auto`` (the default), it runs a built-in probe (``precision_probe.npz`` in the model
repository: letterboxed photos for the detector, and the same photos through
``pipeline.content.preprocess`` for the content detector, aligned 112 crops for ArcFace, aligned
128 crops with source latents for inswapper, all cut from our test photos by ``make_probe``) through the
network in fp32 and in each faster precision this CPU runs natively, and serves the fastest
one whose output stays within ``THRESHOLDS`` of fp32:

- ``bf16``: OpenVINO with ``INFERENCE_PRECISION_HINT=bf16``; native with AVX512_BF16 or AMX-BF16.
- ``int8``: the network quantized by ``repository.quantize`` (QDQ ONNX, cached by the fp32 file's
  SHA-256 and the recipe's version) run by OpenVINO; native with AVX512-VNNI, AVX-VNNI or AMX-INT8.

Native support is read from ``/proc/cpuinfo`` flags, never assumed. A precision without native
instructions is not tried (it would be emulated, slower than fp32). ``FACESWAP_PRECISION``
(``f32``, ``bf16``, ``int8``) forces one and skips the probe. The decision and its figures are
cached (``<cache_dir>/precision/<key>.json``; the key covers the model files, the probe, the CPU
flags, the engine versions and the thresholds), so a restart on the same machine costs no probe.
A record that does not parse, or names a file that is not one of the candidates, is ignored and
the probe runs again. The cache folder must be writable by the service alone: a record is the
self-check's verdict.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PRECISIONS = ("f32", "bf16", "int8", "fp16")
SETTINGS = ("auto",) + PRECISIONS
#: /proc/cpuinfo flags that make a precision native, in order of preference.
NATIVE_FLAGS = {
    "f32": ("avx512f", "avx2", "fma"),
    "bf16": ("amx_bf16", "avx512_bf16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni"),
}
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
                  "amx_int8", "avx512_fp16")
#: Parity a faster precision must keep against fp32 on every probe item (issue 13):
#: swapper output finite with PSNR >= 40 dB (peak 1: the face is RGB in [0, 1]); ArcFace
#: embedding cosine >= 0.999; detector: the same faces, boxes and key points within 1 px.
#: Content detector (the gate, ``pipeline.content``): every class score within 0.01 of fp32's
#: on every anchor (scores are in [0, 1]; the default threshold is 0.6). The int8 candidate is
#: not made for it (``repository.generate.prepare_precision``).
THRESHOLDS = {"swapper": {"psnr_db": 40.0}, "recognizer": {"cosine": 0.999}, "detector": {"box_px": 1.0},
              "content": {"score_diff": 0.01}}
ROLE_OF_MODEL = {"face_detector": "detector", "face_recognizer": "recognizer", "face_swapper": "swapper",
                 "content_detector": "content"}
#: Probe items run per network: enough faces to catch a bad layer, few enough to load fast.
PROBE_ITEMS = {"detector": 2, "recognizer": 8, "swapper": 4, "content": 2}
PROBE_FILE = "precision_probe.npz"
#: Timing: each passing candidate first runs WARMUP_RUNS more times untimed (OpenVINO's bf16
#: and int8 kernels take a few inferences to reach their speed: a det_2.5g in bf16 on AMX ran
#: 148, 30, 44, 20, 18, 17 ms for its first six); then rounds over the candidates repeat (best
#: taken) at least MIN_TIMED_REPS times and until TIMED_S seconds per candidate are spent, at
#: most MAX_TIMED_REPS rounds.
TIMED_S, MIN_TIMED_REPS, MAX_TIMED_REPS, WARMUP_RUNS = 0.3, 3, 10, 3
#: Version of the cached decisions' format and method (2: warm-up runs before timing; the
#: decisions of version 1 timed a cold bf16 detector at 5x its speed and are probed again).
CACHE_VERSION = 2
#: Version of repository.quantize's recipe, part of the int8 file's name: a new recipe makes new files.
INT8_RECIPE = 2


# ---------------------------------------------------------------------------- the CPU


def cpu_info(cpuinfo: str | None = None) -> dict:
    """Model name, the relevant feature flags and the core count (from /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = platform.processor() or "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("unknown", "", "x86_64"):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {"model": model, "cores": cores, "flags": sorted(f for f in REPORTED_FLAGS if f in flags),
            "all_flags": sorted(flags)}


def native_support(flags: set[str] | list[str]) -> dict[str, dict]:
    """{precision: {"native": bool, "isa": flags that give it, "reason": why not}} from CPU flags."""
    flags = set(flags)
    out = {}
    for prec, names in NATIVE_FLAGS.items():
        have = [f for f in names if f in flags]
        native = prec == "f32" or bool(have)  # fp32 runs on any CPU; the flags say how wide
        out[prec] = {"native": native, "isa": have,
                     "reason": "" if native else f"no {' / '.join(names)} in /proc/cpuinfo flags"}
    return out


# ---------------------------------------------------------------------------- the probe


def make_probe(images_bgr: list[np.ndarray], detect: Callable[[np.ndarray], list[np.ndarray]],
               embed: Callable[[np.ndarray], np.ndarray], emap: np.ndarray, det_size: int = 640,
               max_faces: int = 8) -> dict[str, np.ndarray]:
    """The probe's arrays, cut from photos with the fp32 detector and recognizer.

    Args:
        images_bgr: uint8 [H, W, 3] BGR photos with faces (our test photos).
        detect: fp32 detector, float32 [1, 3, S, S] blob -> its 9 SCRFD heads.
        embed: fp32 ArcFace, float32 [N, 3, 112, 112] blob -> [N, 512] embeddings.
        emap: float32 [512, 512], inswapper's emap.
        det_size: detector input side in pixels.
        max_faces: faces kept (the largest first).

    Returns:
        ``det_images`` uint8 [M, S, S, 3] letterboxed BGR photos, ``det_scales`` float32 [M];
        ``rec_crops`` uint8 [K, 112, 112, 3] and ``swap_crops`` uint8 [K, 128, 128, 3] aligned
        BGR faces (insightface norm_crop); ``swap_latents`` float32 [K, 512] unit latents, face
        i swapped with face i+1's identity.

    Raises:
        ValueError: no face was found in any photo.
    """
    from pipeline.align import crops_to_blob, norm_crop
    from pipeline.detection import box_areas, decode_scrfd, detector_blob, letterbox
    from pipeline.embedding import normed, swap_latents

    det_images, det_scales, faces = [], [], []
    for img in images_bgr:
        det_img, scale = letterbox(img, (det_size, det_size))
        dets = decode_scrfd(detect(detector_blob(det_img)), (det_size, det_size), scale)
        det_images.append(det_img)
        det_scales.append(scale)
        order = np.argsort(-box_areas(dets.boxes)) if len(dets) else []
        faces += [(float(box_areas(dets.boxes[i:i + 1])[0]), img, dets.kps[i]) for i in order]
    if not faces:
        raise ValueError("the probe photos hold no face the detector finds")
    faces = sorted(faces, key=lambda f: -f[0])[:max_faces]
    rec = np.stack([norm_crop(img, kps, 112)[0] for _, img, kps in faces])
    swap = np.stack([norm_crop(img, kps, 128)[0] for _, img, kps in faces])
    emb = normed(embed(crops_to_blob(rec, 127.5, 127.5)))
    latents = swap_latents(np.roll(emb, -1, axis=0), emap)
    return {"det_images": np.stack(det_images), "det_scales": np.asarray(det_scales, np.float32),
            "rec_crops": rec, "swap_crops": swap, "swap_latents": latents.astype(np.float32)}


def probe_feeds(role: str, probe: dict[str, np.ndarray], input_names: list[str], input_ranks: list[int],
                items: int | None = None) -> list[dict[str, np.ndarray]]:
    """The network's inputs for the probe: one feed per call (detector: one per photo).

    Raises:
        KeyError: the probe file lacks this role's arrays.
    """
    from pipeline.align import crops_to_blob
    from pipeline.detection import detector_blob

    n = items or PROBE_ITEMS[role]
    if role == "detector":
        return [{input_names[0]: detector_blob(img)} for img in probe["det_images"][:n]]
    if role == "content":  # the letterboxed photos, as the gate would see them
        from pipeline.content import preprocess

        return [{input_names[0]: preprocess(img)[0]} for img in probe["det_images"][:n]]
    if role == "recognizer":
        return [{input_names[0]: crops_to_blob(probe["rec_crops"][:n], 127.5, 127.5)}]
    crops = probe["swap_crops"][:n]
    lat = probe["swap_latents"][:len(crops)]
    target = crops_to_blob(crops, 0.0, 255.0)
    return [{name: (target if rank == 4 else lat) for name, rank in zip(input_names, input_ranks)}]


def compare(role: str, ref: list[list[np.ndarray]], out: list[list[np.ndarray]], probe: dict[str, np.ndarray],
            det_size: int = 640) -> dict:
    """Figures of one precision's outputs against fp32's, per call; ``passed`` per THRESHOLDS.

    Returns:
        swapper: ``psnr_db`` (the worst face), ``finite``; recognizer: ``cosine`` (the worst
        face); content: ``score_diff`` (the largest class-score change on any anchor); detector:
        ``box_px`` (largest box or key-point move, in pixels of the photo), ``same_faces``.
        Always ``passed`` (bool) and ``reason`` (why not, else "").
    """
    finite = all(np.isfinite(o).all() for call in out for o in call)
    if not finite:
        return {"finite": False, "passed": False, "reason": "output not finite"}
    if role == "swapper":
        from pipeline.quality import psnr

        r, o = ref[0][0], out[0][0]
        worst = min(psnr(o[i], r[i], peak=1.0) for i in range(len(r)))
        ok = bool(worst >= THRESHOLDS["swapper"]["psnr_db"])
        return {"psnr_db": round(float(worst), 2), "finite": True, "passed": ok,
                "reason": "" if ok else f"PSNR {worst:.1f} dB < {THRESHOLDS['swapper']['psnr_db']} dB"}
    if role == "content":
        diff = max(float(np.abs(o[0][:, 4:] - r[0][:, 4:]).max()) for r, o in zip(ref, out))
        ok = bool(diff <= THRESHOLDS["content"]["score_diff"])
        return {"score_diff": round(diff, 5), "finite": True, "passed": ok,
                "reason": "" if ok else f"class scores moved {diff:.4f} > {THRESHOLDS['content']['score_diff']}"}
    if role == "recognizer":
        from pipeline.embedding import normed

        cos = float(np.min(np.sum(normed(ref[0][0]) * normed(out[0][0]), axis=1)))
        ok = bool(cos >= THRESHOLDS["recognizer"]["cosine"])
        return {"cosine": round(cos, 6), "finite": True, "passed": ok,
                "reason": "" if ok else f"cosine {cos:.5f} < {THRESHOLDS['recognizer']['cosine']}"}
    from pipeline.detection import decode_scrfd

    worst, same = 0.0, True
    for r_heads, o_heads, scale in zip(ref, out, probe["det_scales"]):
        a = decode_scrfd(r_heads, (det_size, det_size), float(scale))
        b = decode_scrfd(o_heads, (det_size, det_size), float(scale))
        if len(a) != len(b):
            same = False
            continue
        for i in range(len(a)):  # match each fp32 face to the nearest candidate face
            d = np.abs(b.boxes - a.boxes[i]).max(axis=1)
            j = int(np.argmin(d))
            worst = max(worst, float(d[j]), float(np.abs(b.kps[j] - a.kps[i]).max()))
    ok = bool(same and worst <= THRESHOLDS["detector"]["box_px"])
    reason = "" if ok else ("a different number of faces" if not same else
                            f"boxes moved {worst:.2f} px > {THRESHOLDS['detector']['box_px']} px")
    return {"box_px": round(worst, 3), "same_faces": same, "finite": True, "passed": ok, "reason": reason}


# ---------------------------------------------------------------------------- the self-check


@dataclass
class Candidate:
    """One way to serve a network: ``precision`` with ``engine`` on the ONNX file ``path``."""

    precision: str
    engine: str
    path: str


@dataclass
class Choice:
    """What serves a network and why (also the cached record and the report's source)."""

    model: str
    precision: str
    engine: str
    path: str
    chosen_by: str  # "self-check", "setting", "cache" or "no probe"
    probe_seconds: float = 0.0
    results: list[dict] = field(default_factory=list)  # per precision: ms, speedup, figures, passed
    note: str = ""

    def summary(self) -> str:
        """One line for the startup log."""
        parts = []
        for r in self.results:
            figs = ", ".join(f"{k} {v}" for k, v in r.get("figures", {}).items() if k not in ("passed", "reason",
                                                                                            "finite"))
            state = "reference" if r["precision"] == "f32" else ("pass" if r.get("passed") else
                                                                 f"FAIL: {r.get('reason') or r.get('error')}")
            ms = f"{r['ms']:.0f} ms" if r.get("ms") is not None else "-"
            parts.append(f"{r['precision']} ({r.get('engine', '?')}) {ms}{' ' + figs if figs else ''} ({state})")
        return (f"{self.model}: {self.precision} ({self.engine}) chosen by {self.chosen_by}"
                + (f" in {self.probe_seconds:.1f} s" if self.chosen_by == "self-check" else "")
                + (f": {'; '.join(parts)}" if parts else "") + (f" [{self.note}]" if self.note else ""))


def int8_path(cache_dir: str | Path, model_sha256: str) -> Path:
    """Where ``repository.quantize`` keeps the int8 (QDQ) version of the fp32 file with this SHA-256."""
    return Path(cache_dir) / "int8" / f"{model_sha256[:16]}.r{INT8_RECIPE}.onnx"


def int8_stamp(int8_file: Path, model_sha256: str) -> None:
    """Write ``<int8 file>.json``: the fp32 file's SHA-256 it was made from and its own SHA-256."""
    side = Path(f"{int8_file}.json")
    side.write_text(json.dumps({"source_sha256": model_sha256, "sha256": file_sha256(int8_file),
                                "recipe": INT8_RECIPE}))


def int8_intact(int8_file: Path | None, model_sha256: str) -> tuple[bool, str]:
    """(True, its SHA-256) when ``int8_file`` is the file ``repository.quantize`` made from the fp32
    file with this SHA-256 (its ``.json`` stamp matches both); else (False, why)."""
    if int8_file is None or not int8_file.is_file():
        return False, f"no quantized model at {int8_file}"
    try:
        stamp = json.loads(Path(f"{int8_file}.json").read_text())
    except (OSError, ValueError):
        return False, f"{int8_file.name} has no readable stamp ({int8_file.name}.json)"
    if not isinstance(stamp, dict) or stamp.get("source_sha256") != model_sha256:
        return False, f"{int8_file.name} was not made from this model"
    if stamp.get("sha256") != file_sha256(int8_file):
        return False, f"{int8_file.name} changed after it was made"
    return True, stamp["sha256"]


def candidates(f32_path: str, f32_engine: str, flags: set[str] | list[str], int8_file: Path | None,
               have_openvino: bool, int8_problem: str | None = None) -> tuple[list[Candidate], list[str]]:
    """(candidates in the order tried, fp32 first; notes on the precisions left out).
    ``int8_problem``: why the int8 file may not be used (``int8_intact``), if it may not."""
    out, notes = [Candidate("f32", f32_engine, f32_path)], []
    if f32_engine == "torch":  # torch's own reduced types on a GPU; f32 only on the CPU
        from pipeline.engines import torch_device

        if torch_device().startswith("cuda"):
            out += [Candidate(p, "torch", f32_path) for p in ("bf16", "fp16")]
        else:
            notes.append("bf16, fp16: engine torch runs them on a GPU only (here: the CPU)")
        return out, notes
    native = native_support(flags)
    for prec in ("bf16", "int8"):
        if not native[prec]["native"]:
            notes.append(f"{prec}: {native[prec]['reason']}")
        elif not have_openvino:
            notes.append(f"{prec}: openvino is not installed")
        elif prec == "int8" and (int8_file is None or not int8_file.is_file()):
            notes.append("int8: no quantized model (make it with faceswap-repository quantize)")
        elif prec == "int8" and int8_problem:
            notes.append(f"int8: {int8_problem} (delete it; the next repository build makes it again)")
        else:
            out.append(Candidate(prec, "openvino", str(int8_file) if prec == "int8" else f32_path))
    return out, notes


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB chunks): the one file hasher (model downloads,
    repository builds, precision caches, C2PA ingredients)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def cache_key(model: str, cands: list[Candidate], probe_path: str | Path, flags: list[str],
              known: dict[str, str] | None = None) -> str:
    """Key of a cached decision: the files (``known``: path -> SHA-256 already computed), the
    probe, the CPU, the engines and the thresholds."""
    known = known or {}
    import onnxruntime

    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = "-"
    files = [(c.precision, c.engine, known.get(c.path) or file_sha256(c.path)) for c in cands]
    parts = {"v": CACHE_VERSION, "model": model, "files": files,
             "probe": file_sha256(probe_path), "cpu": cpu_info()["model"], "flags": sorted(flags),
             "ort": onnxruntime.__version__, "ov": ov_version, "thresholds": THRESHOLDS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def self_check(model: str, cands: list[Candidate], probe: dict[str, np.ndarray], input_names: list[str],
               input_ranks: list[int], output_names: list[str], load: Callable, notes: list[str] | None = None
               ) -> Choice:
    """Run the probe in every candidate; the fastest that passes (fp32 always does) serves.

    Args:
        model: Triton model name (``face_swapper``...).
        cands: from ``candidates``, fp32 first.
        probe: the probe's arrays (``make_probe``).
        input_names, input_ranks, output_names: the network's tensors (ranks with the batch dim).
        load: ``pipeline.engines.load``-like: (path, output_names, engine, precision) -> run.
        notes: precisions left out and why (reported).

    Returns:
        The choice with, per candidate: ``ms`` (the best of up to MAX_TIMED_REPS timed probe
        runs, interleaved with the other candidates', after the run that gave its outputs; only
        for candidates that passed),
        ``speedup`` against fp32, ``figures`` (``compare``), ``passed``.
    """
    role = ROLE_OF_MODEL[model]
    t0 = time.perf_counter()
    feeds = probe_feeds(role, probe, input_names, input_ranks)
    if not feeds or any(np.asarray(a).shape[:1] == (0,) for f in feeds for a in f.values()):
        raise ValueError("the probe holds no item for this network")
    results, runs, ref = [], [], None
    for cand in cands:  # parity first: each candidate's outputs (this call also warms it up)
        row: dict = {"precision": cand.precision, "engine": cand.engine}
        try:
            run = load(cand.path, output_names, cand.engine, cand.precision)
            outs = [run(f) for f in feeds]
        except Exception as exc:  # an engine that cannot run this network is not a candidate
            if cand.precision == "f32":
                raise
            row.update(passed=False, error=f"{type(exc).__name__}: {exc}"[:300])
            results.append(row)
            runs.append(None)
            continue
        if cand.precision == "f32":
            ref = outs
            row["passed"] = True
        else:
            figs = compare(role, ref, outs, probe)
            row.update(figures={k: v for k, v in figs.items() if k not in ("passed", "reason")},
                       passed=figs["passed"], reason=figs["reason"])
        results.append(row)
        runs.append(run if row["passed"] else None)
    # Speed of those that passed, in interleaved rounds: whatever else loads beside us (Triton
    # starts every model at once) slows them alike; the best round of each counts.
    best = {i: float("inf") for i, r in enumerate(runs) if r is not None}
    for i in best:
        for _ in range(WARMUP_RUNS):
            runs[i](feeds[0])
    spent, rounds = 0.0, 0
    while rounds < MAX_TIMED_REPS and (rounds < MIN_TIMED_REPS or spent < TIMED_S * len(best)):
        for i in best:
            t = time.perf_counter()
            for f in feeds:
                runs[i](f)
            took = time.perf_counter() - t
            best[i], spent = min(best[i], took), spent + took
        rounds += 1
    for i, ms in best.items():
        results[i]["ms"] = round(1000 * ms, 2)
        results[i]["speedup"] = round(best[0] / max(ms, 1e-9), 2)
    passing = [(r, c) for r, c in zip(results, cands) if r.get("passed") and r.get("ms") is not None]
    best_row, best = min(passing, key=lambda rc: rc[0]["ms"])
    return Choice(model, best.precision, best.engine, best.path, "self-check",
                  round(time.perf_counter() - t0, 2), results, "; ".join(notes or []))


def choose(model: str, setting: str, f32_path: str, f32_engine: str, model_sha256: str, cache_dir: str | Path,
           probe_path: str | Path | None, input_names: list[str], input_ranks: list[int], output_names: list[str],
           load: Callable, flags: list[str] | None = None) -> Choice:
    """The precision a network serves in: forced by ``setting``, else from the cache or a self-check.

    Args:
        setting: "auto" or one of PRECISIONS (``FACESWAP_PRECISION``).
        f32_engine: engine of the fp32 reference ("onnxruntime", "openvino" or "torch").
        model_sha256: SHA-256 of the fp32 file (names the cached int8 file).
        probe_path: ``precision_probe.npz``; None or missing: fp32 serves ("no probe").
        flags: CPU flags (default: this CPU's).

    Raises:
        ValueError: an unknown setting, or ``int8`` forced without a quantized model.
    """
    if setting not in SETTINGS:
        raise ValueError(f"precision {setting!r} is not one of {SETTINGS}")
    flags = cpu_info()["all_flags"] if flags is None else flags
    int8_file = int8_path(cache_dir, model_sha256) if model_sha256 else None
    if setting != "auto" and f32_engine == "torch":
        if setting == "int8":
            raise ValueError(f"{model}: engine torch runs f32, bf16 or fp16, not int8")
        return Choice(model, setting, "torch", f32_path, "setting")
    if setting == "fp16":
        raise ValueError(f"{model}: fp16 runs on engine torch only (FACESWAP_ENGINE=torch)")
    if setting != "auto":
        native = native_support(flags)[setting]
        note = "" if native["native"] else f"forced although not native here ({native['reason']})"
        if setting == "f32":
            return Choice(model, "f32", f32_engine, f32_path, "setting", note=note)
        if setting == "int8":
            ok, why = int8_intact(int8_file, model_sha256)
            if not ok:
                raise ValueError(f"{model}: precision int8 forced but {why} (delete it if it exists, then make it "
                                 "with faceswap-repository quantize)")
        path = str(int8_file) if setting == "int8" else f32_path
        return Choice(model, setting, "openvino", path, "setting", note=note)
    try:
        import openvino  # noqa: F401

        have_ov = True
    except ImportError:
        have_ov = False
    int8_ok, int8_why = int8_intact(int8_file, model_sha256) if int8_file is not None else (False, "")
    cands, notes = candidates(f32_path, f32_engine, flags, int8_file, have_ov, None if int8_ok else int8_why)
    known = {f32_path: model_sha256} if model_sha256 else {}
    if int8_ok:
        known[str(int8_file)] = int8_why  # its SHA-256, just checked: not hashed twice
    if probe_path is None or not Path(probe_path).is_file():
        return Choice(model, "f32", f32_engine, f32_path, "no probe",
                      note="no precision_probe.npz in the model repository: fp32 serves")
    if len(cands) == 1:
        return Choice(model, "f32", f32_engine, f32_path, "self-check", note="; ".join(notes))
    key = cache_key(model, cands, probe_path, flags, known)
    record = Path(cache_dir) / "precision" / f"{key}.json"
    try:
        with np.load(probe_path) as z:
            probe = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - a damaged probe (BadZipFile, EOFError...) never stops a load
        return Choice(model, "f32", f32_engine, f32_path, "no probe",
                      note=f"{Path(probe_path).name} unreadable ({type(exc).__name__}): fp32 serves")
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        lock = open(record.parent / ".lock", "a")
    except OSError as exc:  # a read-only or missing cache folder: probe every time, say so
        notes = [*notes, f"decision not cached ({cache_dir}: {exc.strerror})"]
        return _checked(model, cands, probe, input_names, input_ranks, output_names, load, notes, f32_engine, f32_path)
    # Triton loads the networks in parallel: one probe at a time, or each would time the others.
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.is_file():
            cached, why = _cached(record, model, cands)
            if cached is not None:
                return cached
            notes = [*notes, f"cached decision ignored ({why}): probed again"]
        choice = _checked(model, cands, probe, input_names, input_ranks, output_names, load, notes, f32_engine,
                          f32_path)
        if choice.chosen_by != "self-check":
            return choice  # a probe that could not run is not remembered
        tmp = record.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(choice), indent=1))
        os.replace(tmp, record)
    return choice


def _checked(model: str, cands: list[Candidate], probe: dict, input_names: list[str], input_ranks: list[int],
             output_names: list[str], load: Callable, notes: list[str], f32_engine: str, f32_path: str) -> Choice:
    """``self_check``, or fp32 with a note when the probe itself cannot run (wrong or empty arrays):
    a bad probe never stops a network from loading."""
    try:
        return self_check(model, cands, probe, input_names, input_ranks, output_names, load, notes)
    except Exception as exc:  # noqa: BLE001
        return Choice(model, "f32", f32_engine, f32_path, "no probe",
                      note=f"the probe could not run ({type(exc).__name__}: {str(exc)[:120]}): fp32 serves")


def _cached(record: Path, model: str, cands: list[Candidate]) -> tuple[Choice | None, str]:
    """A cached decision if it is sound: this network's, one of today's candidates, a precision
    that passed in its own figures; else (None, why)."""
    try:
        data = json.loads(record.read_text())
        cached = Choice(**data)
    except (OSError, ValueError, TypeError) as exc:
        return None, f"unreadable: {type(exc).__name__}"
    if cached.model != model:
        return None, "another network's record"
    if (cached.precision, cached.engine, cached.path) not in {(c.precision, c.engine, c.path) for c in cands}:
        return None, "names a file that is not a candidate"
    rows = cached.results if isinstance(cached.results, list) else []
    if not all(isinstance(r, dict) for r in rows) or not any(
            r.get("precision") == cached.precision and r.get("engine") == cached.engine and r.get("passed") is True
            for r in rows):
        return None, "its figures do not show the precision passing"
    cached.chosen_by = "cache"
    return cached, ""
