"""The product on one GPU, end to end: the wheel's ``tritonserver`` serving the
``torch`` profile (networks on engine ``torch``, frames kept on the GPU by the swap entry
points, tensors passed by DLPack; ``--profile cpu`` keeps the frames on the host), driven at
rising concurrency with 1080p JPEGs of six faces; then the device path's parity against
onnxruntime on the host; one JSON report.

Three steps:

1. Here, once (needs the package registry for one wheel; about 61 MiB, under the device tool's
   64 MiB): ``python -m bench.gpu_run pack`` writes ``.gpu/`` (git-ignored): the wheel's server
   trimmed to what runs (``tritonserver``, its libraries, the Python backend and the Python 3.12
   stub; xz), numpy 1.26.4 for Python 3.12 (the stub of Triton 2.51 breaks with numpy 2, which
   the GPU machine has: a JPEG input arrived as 255s), tritonclient's Python package, the real
   detector and the content gate's detector, and two shared photos.
2. On the GPU machine (device tool ``run`` with ``carry: [".gpu"]``, ``timeout_s`` 450):
   ``PYTHONUNBUFFERED=1 python3 -m bench.gpu_run run --out $OUT/gpu_run.json``: unpacks into
   /tmp/gpu, checks in seconds what it needs there (numpy 1.26 beside torch, OpenCV,
   onnxruntime, onnx, tritonclient's gRPC config, libpython3.12, CUDA, /dev/shm) and stops with
   the versions if anything is missing, makes the full stand-ins, builds the repository
   (profile ``torch``, the precision self-check choosing bf16/fp16 against f32 on the
   GPU; 8 instances of each entry point, their queue as deep as the most callers, the swapper's
   batch 64), starts Triton, and drives ``face_swap`` over KServe v2 HTTP (httpx) at each
   concurrency for ``--seconds``, within ``--budget-s``; then, with Triton stopped, runs the
   test frame through ``pipeline.tensor_frames`` with the networks as torch f32 modules on the
   GPU and through ``pipeline.frames`` with onnxruntime on the host, and reports boxes and
   swapped faces against each other (issue 20's parity: within 1 px, >= 40 dB); then drives the
   same frame path in this one process without Triton (``pipeline_alone``: bf16 networks, 1 and
   8 callers): what the server's processes and BLS calls cost. Where the ``torch`` profile
   failed or answered with errors (CUDA IPC of GPU tensors between the stubs is its one part
   never run before), ``torch-host-bls`` follows it: the same profile with the networks'
   tensors crossing in host memory (``FACESWAP_BLS_MEMORY=host``), the frames still on the
   GPU. Then, each only if 150 s of the budget are left, the same levels with ``--profile cpu``
   (frames on the host, the same torch networks): what keeping the frames on the GPU is worth.
   The report is written after every level and on any failure, with each profile's Triton log
   beside it; a profile that fails is reported and the next one still runs.
3. The report: swapped faces/s and images/s, ms per request (p50/p90) at each concurrency,
   the GPU's busy share (NVML, sampled every 50 ms), Triton's compute time per model and the
   entry points' own ``stage_ms``, and issue 20's targets (>= 1,000 faces/s, p50 <= 30 ms
   alone, GPU busy >= 60% at the best concurrency) with PASS/FAIL.

``--dry-run`` runs step 2 here on the CPU (tiny stand-ins, torch on the CPU, a few requests,
nothing unpacked): how the tests keep it working (tests/server/test_gpu_run.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".gpu"
UNPACKED = Path("/tmp/gpu/site")
BUDGET_MIB = 64
STUB_PY = "3.12"  # the GPU machine's Python
#: The goals on one H100 or H200 (issue 20): swapped faces/s end to end at the best concurrency, ms per
#: request at p50 with one caller, the GPU's busy share at the best concurrency.
TARGETS = {"faces_per_s": 1000.0, "single_caller_p50_ms": 30.0, "gpu_busy": 0.60}
# Served profiles that are another's with settings: torch-host-bls is the torch profile with
# the networks' tensors crossing in host memory (model_repository.glue.bls_memory), run where
# torch's GPU tensors between the stubs (CUDA IPC) failed: the frames stay on the GPU.
VARIANTS = {"torch-host-bls": ("torch", {"FACESWAP_BLS_MEMORY": "host"})}


def _broken(res: dict) -> bool:
    """A profile's run that failed, answered nothing at some level, or answered with errors."""
    levels = res.get("levels") or []
    return bool(res.get("failed") or res.get("skipped") or not levels
                or any(lv["errors"] or not lv["requests"] for lv in levels))


def _site(package: str) -> Path:
    """The site-packages folder holding ``package`` (not imported)."""
    from launch.server import package_dir

    found = package_dir(package)
    if found is None:
        raise SystemExit(f"{package} is not installed here (make setup)")
    return found.parent


def pack(dest: Path = PACK) -> int:
    """Write ``dest``: what the device run needs besides the checkout (module docstring)."""
    from repository.layout import default_images
    from repository.resolve import resolve

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "models").mkdir(parents=True)
    site = _site("pytriton")
    stubs = site / "pytriton" / "tritonserver" / "python_backend_stubs"
    skip = [f"pytriton/tritonserver/python_backend_stubs/{p.name}" for p in stubs.iterdir() if p.name != STUB_PY]

    def keep(info: tarfile.TarInfo):
        name = info.name
        if any(name.startswith(s) for s in skip) or "/libpython3-" in name or "__pycache__" in name:
            return None
        return info

    print("packing the server (xz, about a minute) ...", flush=True)
    with tarfile.open(dest / "pytriton.tar.xz", "w:xz") as tar:
        for part in ("pytriton/__init__.py", "pytriton/tritonserver", "nvidia_pytriton.libs"):
            tar.add(site / part, arcname=part, filter=keep)
    shutil.copytree(_site("tritonclient") / "tritonclient", dest / "tritonclient",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", STUB_PY, "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", str(dest), "numpy==1.26.4"], check=True)
    models = resolve("tiny")
    if models["detector"].stand_in or models["content"].stand_in:
        raise SystemExit("the real detector and content detector are needed (../shared/models, make models)")
    for role in ("detector", "content"):
        shutil.copy2(models[role].path, dest / "models" / Path(models[role].path).name)
    # under the names default_images() looks for in FACESWAP_SHARED_IMAGES there
    for photo, name in zip(default_images(), ("portrait_obama_official.jpg", "group_insightface_t1.jpg")):
        shutil.copy2(photo, dest / name)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20
    tracked = sum((ROOT / f).stat().st_size for f in subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split() if (ROOT / f).is_file()) / 2**20
    print(f"{dest}: {total:.1f} MiB, with the tracked tree {total + tracked:.1f} of {BUDGET_MIB} MiB")
    return 0 if total + tracked < BUDGET_MIB else 1


def unpack_and_reexec(argv: list[str]) -> None:
    """Unpack ``.gpu`` into /tmp/gpu and run this command again with it first on PYTHONPATH
    (numpy 1.26 for the stub and for this process alike)."""
    if not (UNPACKED / ".complete").exists():
        shutil.rmtree(UNPACKED, ignore_errors=True)
        UNPACKED.mkdir(parents=True)
        with tarfile.open(PACK / "pytriton.tar.xz") as tar:
            tar.extractall(UNPACKED)
        shutil.copytree(PACK / "tritonclient", UNPACKED / "tritonclient")
        wheel = next(PACK.glob("numpy-*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(UNPACKED), str(wheel)], check=True)
        # tritonclient.grpc imports python-rapidjson for its JSON helpers, which the GPU machine
        # lacks; the model config protobufs (all the repository build needs) do not use it
        (UNPACKED / "rapidjson.py").write_text("from json import dumps, loads  # noqa: F401\n")
        (UNPACKED / ".complete").write_text("ok\n")
    env = {**os.environ, "PYTHONPATH": f"{UNPACKED}:{ROOT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"),
           "FACESWAP_GPU_UNPACKED": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "bench.gpu_run", *argv], env)


class V2:
    """KServe v2 over HTTP with the binary data extension (httpx; no tritonclient transport)."""

    def __init__(self, url: str) -> None:
        import httpx

        # identity: Triton would gzip every answer (half a megabyte of JPEG) for httpx's default
        self.http = httpx.Client(base_url=f"http://{url}", timeout=120, headers={"Accept-Encoding": "identity"})

    def infer(self, model: str, arrays: dict[str, np.ndarray], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        from tritonclient.utils import (
            deserialize_bytes_tensor,
            np_to_triton_dtype,
            triton_to_np_dtype,
        )

        inputs, blobs = [], []
        for name, a in arrays.items():
            if a.dtype == np.object_:  # BYTES: each element a 4-byte little-endian length, then its bytes
                raw = b"".join(len(x).to_bytes(4, "little") + x for x in a.reshape(-1))
            else:
                raw = np.ascontiguousarray(a).tobytes()
            inputs.append({"name": name, "shape": list(a.shape), "datatype": np_to_triton_dtype(a.dtype),
                           "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        head = json.dumps({"inputs": inputs, "outputs": [{"name": o, "parameters": {"binary_data": True}}
                                                         for o in outputs]}).encode()
        r = self.http.post(f"/v2/models/{model}/infer", content=head + b"".join(blobs),
                           headers={"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"})
        if r.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {r.status_code}: {r.text[:300]}")
        n = int(r.headers.get("Inference-Header-Content-Length", len(r.content)))
        meta, body, out, at = json.loads(r.content[:n]), r.content[n:], {}, 0
        for o in meta["outputs"]:
            size = o.get("parameters", {}).get("binary_data_size", 0)
            raw, at = body[at:at + size], at + size
            if o["datatype"] == "BYTES":
                out[o["name"]] = deserialize_bytes_tensor(raw).reshape(o["shape"])
            else:
                out[o["name"]] = np.frombuffer(raw, triton_to_np_dtype(o["datatype"])).reshape(o["shape"])
        return out

    def stats(self) -> dict[str, dict]:
        return {m["name"]: m for m in self.http.get("/v2/models/stats").json()["model_stats"]}


def test_image(path: Path, size: tuple[int, int] = (1920, 1080)) -> bytes:
    """A JPEG (q90) of ``size`` with the photo fitted in and padded: the group photo's six faces."""
    import cv2

    img = cv2.imread(str(path))
    s = min(size[0] / img.shape[1], size[1] / img.shape[0])
    fitted = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    canvas[:fitted.shape[0], :fitted.shape[1]] = fitted
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def gpu_sampler():
    """(start, stop) of an NVML busy-share sampler (None, None without NVML or a GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001 - no NVML, no GPU: the report says null
        return None
    samples: list[float] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            time.sleep(0.05)

    th = threading.Thread(target=loop, daemon=True)
    th.start()

    def done() -> float:
        stop.set()
        th.join()
        return round(statistics.fmean(samples), 3) if samples else 0.0

    return done


def drive(url: str, image: bytes, latent: np.ndarray, callers: int, seconds: float, max_requests: int) -> dict:
    """``callers`` threads sending ``face_swap`` back to back for ``seconds`` (or ``max_requests``
    each); images/s, faces/s, ms per request, the GPU's busy share, stage_ms of the last answer."""
    from client.core import SWAP_MODEL, SWAP_OUTPUTS, options_json, parse_swap, swap_arrays

    arrays = swap_arrays(image, latent[None], None, options_json())

    def caller():
        c = V2(url)

        def one() -> tuple[int, dict]:
            res = parse_swap(c.infer(SWAP_MODEL, arrays, SWAP_OUTPUTS))
            return res.faces_swapped, res.stage_ms

        return one

    return load(caller, callers, seconds, max_requests)


def load(caller, callers: int, seconds: float, max_requests: int) -> dict:
    """``callers`` threads, each calling its own ``caller()`` -> f() -> (faces swapped, stage_ms)
    back to back for ``seconds`` (or ``max_requests`` each): images/s, faces/s, ms per request
    (p50/p90), the GPU's busy share (NVML; None without), errors (a refusal for a full queue
    counted apart), stage_ms of the last answer."""
    lat, faces, last, errors, rejected = [], [], {}, [], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one():
        f = caller()
        for _ in range(max_requests):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                n, stage_ms = f()
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                with lock:
                    if "queue" in str(exc) or "HTTP 503" in str(exc):
                        rejected[0] += 1
                    else:
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.05)
                continue
            with lock:
                lat.append(1000 * (time.perf_counter() - t0))
                faces.append(n)
                last.update(stage_ms)

    sampler = gpu_sampler()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    busy = sampler() if sampler else None
    return {"concurrency": callers, "requests": len(lat), "seconds": round(wall, 2),
            "images_per_s": round(len(lat) / wall, 2), "faces_per_s": round(sum(faces) / wall, 1),
            "faces_per_image": round(statistics.fmean(faces), 2) if faces else 0,
            "p50_ms": round(statistics.median(lat), 1) if lat else None,
            "p90_ms": round(float(np.percentile(lat, 90)), 1) if lat else None,
            "gpu_busy": busy, "errors": len(errors), "rejected": rejected[0],
            "first_error": errors[0] if errors else None,
            "stage_ms_last": last}


def compute_ms(before: dict, after: dict) -> dict:
    """Triton's compute time per execution and executions, per model, between two stats reads."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        n = int(a.get("execution_count", 0)) - int(b.get("execution_count", 0))
        ns = int(a["inference_stats"]["compute_infer"]["ns"]) - int(
            b.get("inference_stats", {}).get("compute_infer", {}).get("ns", 0))
        if n > 0:
            out[name] = {"executions": n, "compute_ms_per_execution": round(ns / n / 1e6, 2)}
    return out


def preflight(detector: Path | None = None) -> dict:
    """What the run needs on the GPU machine, checked in seconds: {check: version or error}.
    The first failure is the answer to a run that would otherwise fail minutes later."""
    import sysconfig

    out: dict = {"numpy": np.__version__}

    def check(name, fn):
        try:
            out[name] = fn()
        except Exception as exc:  # noqa: BLE001 - the report says what failed
            out[name] = f"FAILED: {type(exc).__name__}: {exc}"[:300]

    def torch_cuda():
        import torch

        x = torch.from_numpy(np.arange(4, dtype=np.float32))
        x = x.cuda() if torch.cuda.is_available() else x
        where = f"cuda {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "NO CUDA"
        return f"{torch.__version__} {where}"

    def opencv():
        import cv2

        ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
        assert ok and cv2.imdecode(buf, cv2.IMREAD_COLOR).shape == (8, 8, 3)
        return cv2.__version__

    def onnx_and_ort():
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        det = detector or next((PACK / "models").glob("det_*.onnx"))
        numpy_helper.to_array(onnx.load(str(det)).graph.initializer[0])
        ort.InferenceSession(str(det), providers=["CPUExecutionProvider"])
        return f"onnx {onnx.__version__}, onnxruntime {ort.__version__}"

    def torchvision_jpeg():  # not needed: without it the torch profile decodes and encodes with OpenCV
        try:
            import cv2
            import torch
            import torchvision
            from torchvision.io import decode_jpeg, encode_jpeg

            dev = "cuda" if torch.cuda.is_available() else "cpu"
            buf = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].reshape(-1).copy()
            encode_jpeg(decode_jpeg(torch.from_numpy(buf), device=dev))
            return f"{torchvision.__version__}: JPEG decode and encode on {dev}"
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            return f"not usable ({type(exc).__name__}: {exc}): JPEGs decoded and encoded by OpenCV on the host"[:300]

    def mps():  # several stub processes share the GPU: time-sliced without NVIDIA's MPS, concurrent with it
        found = shutil.which("nvidia-cuda-mps-control")
        return f"nvidia-cuda-mps-control at {found} (not started by this run)" if found else "not installed"

    def model_config():
        from tritonclient.grpc import model_config_pb2

        return str(model_config_pb2.ModelConfig(name="x").name)

    def libpython():
        name = sysconfig.get_config_var("LDLIBRARY") or f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so"
        soname = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
        for d in (sysconfig.get_config_var("LIBDIR"), os.path.join(sys.base_prefix, "lib"),
                  "/usr/lib/x86_64-linux-gnu"):
            if d and (Path(d) / soname).exists():  # the stub finds it through LD_LIBRARY_PATH
                os.environ["LD_LIBRARY_PATH"] = f"{d}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":")
                return str(Path(d) / soname)
        raise FileNotFoundError(f"{soname} (LDLIBRARY {name}) is in none of LIBDIR, base_prefix/lib, "
                                "/usr/lib/x86_64-linux-gnu: the Python backend stub cannot start")

    def shm():
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize / 2**20
        if free < 1024:
            raise OSError(f"/dev/shm has {free:.0f} MiB free; the Python backend needs about 1 GiB")
        return f"{free:.0f} MiB free"

    for name, fn in (("torch", torch_cuda), ("torchvision", torchvision_jpeg), ("opencv", opencv),
                     ("onnx", onnx_and_ort), ("tritonclient.grpc", model_config), ("libpython", libpython),
                     ("/dev/shm", shm), ("mps", mps)):
        check(name, fn)
    return out


def _write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


def _log_lines(log: str, needle: str, cut: str = "") -> list[str]:
    """The messages of Triton's log lines holding ``needle`` (each up to ``cut`` where given;
    tolerant of format), once each: the instances of one network say the same. The
    self-check's choice per network: ``needle`` "chosen by", ``cut`` ";"."""
    lines = []
    for ln in log.splitlines():
        if needle in ln:
            text = (ln.split('"', 1)[1] if '"' in ln else ln).rstrip('"')
            lines.append((text.split(cut)[0] if cut else text).strip()[:300])
    return list(dict.fromkeys(lines))


def run(args) -> int:
    dry = args.dry_run
    if not dry and not os.environ.get("FACESWAP_GPU_UNPACKED"):
        if not PACK.exists():
            raise SystemExit(f"{PACK} is missing: run `python -m bench.gpu_run pack` here first and carry it")
        unpack_and_reexec(sys.argv[1:])
    t0 = time.perf_counter()
    out = Path(args.out)
    report: dict = {"dry_run": dry, "levels": []}
    if not dry:
        report["preflight"] = preflight()
        _write(report, out)
        failed = {k: v for k, v in report["preflight"].items() if str(v).startswith("FAILED") or "NO CUDA" in str(v)}
        print(json.dumps(report["preflight"], indent=1), flush=True)
        if failed:
            print(f"preflight failed: {failed}", file=sys.stderr)
            return 2
    os.environ.update({"FACESWAP_ENGINE": "torch", "FACESWAP_STANDIN_SIZE": "tiny" if dry else "full",
                       "FACESWAP_STAGE_INSTANCES": str(args.instances),
                       "FACESWAP_STAGE_QUEUE": str(max(8, max(args.concurrency))),
                       "FACESWAP_SWAPPER_MAX_BATCH": str(args.swapper_batch)})
    if dry:
        os.environ["FACESWAP_TORCH_DEVICE"] = "cpu"
    else:
        os.environ["FACESWAP_CUDA_POOL_MB"] = "1024"  # GPU tensors between the stubs (launch.server.cuda_pool_args)
        os.environ["FACESWAP_SHARED_MODELS"] = str(PACK / "models")
        os.environ["FACESWAP_SHARED_IMAGES"] = str(PACK)  # the precision probe's photos
        os.environ["FACESWAP_CONTENT_DETECTOR"] = str(next((PACK / "models").glob("nudenet*.onnx")))
    from repository.layout import default_images
    from repository.resolve import resolve

    source, group = default_images()  # there: the two photos carried in .gpu (FACESWAP_SHARED_IMAGES)
    report.update({"stand_ins": os.environ["FACESWAP_STANDIN_SIZE"], "entry_point_instances": args.instances,
                   "entry_point_queue": int(os.environ["FACESWAP_STAGE_QUEUE"]),
                   "swapper_max_batch": args.swapper_batch, "runs": {}})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # serve()'s finally stops Triton
    image, latent = test_image(group), None
    try:
        models = resolve()
        profiles = list(args.profile)
        for i, profile in enumerate(profiles):  # grows by torch-host-bls where torch failed
            res = report["runs"][profile] = {}
            if i and args.budget_s - (time.perf_counter() - t0) < 150:
                res["skipped"] = "out of time"  # (needs 150 s of the budget)
                continue
            try:
                latent = serve(profile, models, source, image, args, res, t0, dry,
                               lambda: _write(report, out), out.parent)
            except Exception as exc:  # noqa: BLE001 - the next profile still runs; the report says why
                res["failed"] = f"{type(exc).__name__}: {exc}"[:2000]
                print(f"profile {profile} failed: {res['failed']}", file=sys.stderr, flush=True)
            if profile == "torch" and _broken(res) and "torch-host-bls" not in profiles:
                profiles.insert(i + 1, "torch-host-bls")  # frames still on the GPU, no CUDA IPC
            if i == 0:  # issue 20's parity on the device before any comparison run
                if latent is None:  # no server answered: any unit latent shows the pixels' parity
                    latent = np.random.default_rng(0).standard_normal(512).astype(np.float32)
                    latent /= np.linalg.norm(latent)
                for key, step in (("parity", functools.partial(device_parity, models, image, latent)),
                                  ("pipeline_alone", functools.partial(
                                      pipeline_alone, models, image, latent, args.alone_concurrency,
                                      min(args.seconds, 8.0), 2 if dry else 10**6))):
                    try:
                        report[key] = step()
                    except Exception as exc:  # noqa: BLE001 - reported; the comparison still runs
                        report[key] = {"failed": f"{type(exc).__name__}: {exc}"[:2000]}
                    print(json.dumps({key: report[key]}, default=str)[:3000], flush=True)
                    _write(report, out)
            _write(report, out)
        main = next((p for p in profiles if not _broken(report["runs"][p])), profiles[0])
        run_main = report["runs"][main]
        report.update({"profile": main, "levels": run_main.get("levels", []),
                       "precision": run_main.get("precision", []), "device": _device_name()})
        report["targets"] = _targets(report["levels"])
        report["profile_rule"] = ("levels, precision and targets are runs[profile]'s: the first profile that "
                                  "answered without errors")
        if dry:
            report["targets"]["note"] = "a dry run on the CPU with tiny stand-ins: the targets are for one H100"
    except BaseException as exc:
        report["failed"] = f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        report["total_s"] = round(time.perf_counter() - t0, 1)
        _write(report, out)
    print(json.dumps(report.get("targets"), indent=1))
    print(f"wrote {out}")
    failed = [x["concurrency"] for x in report["levels"] if x["errors"] or not x["requests"]]
    if failed:
        print(f"requests failed at concurrency {failed}: see first_error in the report", file=sys.stderr)
    return 1 if failed or not report["levels"] else 0


def serve(profile: str, models: dict, source: Path, image: bytes, args, res: dict, t0: float, dry: bool,
          save, logs: Path) -> np.ndarray:
    """Build ``profile``'s repository, start Triton, warm it and drive each concurrency level that
    fits the budget, filling ``res`` (``save()`` after each level); Triton's log is copied to
    ``logs/gpu_run_triton_<profile>.log`` and the server stopped on the way out. Returns the
    source latent it embedded."""
    from client.core import EMBED_MODEL, EMBED_OUTPUTS, embed_arrays, parse_embed
    from launch.server import TritonServer, free_ports
    from repository.generate import build

    t1 = time.perf_counter()
    run_dir = ROOT / ".run" / f"gpu_run_{profile}{'_dry' if dry else ''}"
    served, env = VARIANTS.get(profile, (profile, {}))
    build(run_dir / "model_repository", served, models)
    res["build_s"] = round(time.perf_counter() - t1, 1)
    server = TritonServer(run_dir / "model_repository", free_ports(), run_dir=run_dir)
    with mock.patch.dict(os.environ, env):  # the stubs inherit Triton's environment
        try:
            server.start(max(60.0, args.budget_s - (time.perf_counter() - t0) - 60))
            res["ready_s"] = round(time.perf_counter() - t1, 1)
            log_text = server.log_file.read_text()
            res["precision"] = _log_lines(log_text, "chosen by", ";")
            res["cuda_graphs"] = _log_lines(log_text, "CUDA graph")  # captured at load, or a shape run eagerly
            save()
            c = V2(server.http_url)
            embedded = c.infer(EMBED_MODEL, embed_arrays(source.read_bytes()), EMBED_OUTPUTS)
            latent = parse_embed(embedded).largest().latent
            warm = max(args.concurrency)  # every entry-point instance and the batch shapes see work
            first = drive(server.http_url, image, latent, 1, 60, 2)
            if not first["requests"]:
                raise RuntimeError(f"no swap answered: {first['first_error']}")
            drive(server.http_url, image, latent, warm, 30, 1 if dry else 2)
            res["levels"] = []
            for callers in args.concurrency:
                if time.perf_counter() - t0 + args.seconds > args.budget_s:
                    res.setdefault("skipped_levels", []).append(callers)
                    continue
                before = c.stats()
                level = drive(server.http_url, image, latent, callers, args.seconds, 2 if dry else 10**6)
                level["triton_compute"] = compute_ms(before, c.stats())
                res["levels"].append(level)
                save()
                print(json.dumps({"profile": profile, **{k: v for k, v in level.items()
                                                         if k not in ("stage_ms_last", "triton_compute")}}), flush=True)
            res["targets"] = _targets(res["levels"])
            return latent
        finally:
            try:
                shutil.copy2(server.log_file, logs / f"gpu_run_triton_{profile}.log")
            except OSError:
                pass
            server.stop()  # its GPU memory back before the next profile and the parity check


def device_parity(models: dict, image: bytes, latent: np.ndarray) -> dict:
    """Issue 20's parity on this machine: ``image`` through ``pipeline.tensor_frames`` (the frame
    and the networks, torch f32 modules, on ``engines.torch_device()``) against
    ``pipeline.frames`` with onnxruntime f32 sessions on the host (the reference numerics), PNG
    out so no encoder stands between them: faces found and swapped on each side, the largest
    box and key-point difference (px), PSNR of the frame and of each swapped face's region
    (dB), and whether it holds (within 1 px, >= 40 dB)."""
    import cv2

    from pipeline import frames, tensor_frames
    from pipeline.engines import torch_device
    from pipeline.local import onnxruntime_networks, torch_networks
    from pipeline.quality import face_psnr, psnr
    from pipeline.selection import SwapOptions

    t0 = time.perf_counter()
    device = torch_device()
    opts = SwapOptions(output_format="png", face_quality=False)
    lat = np.asarray(latent, np.float32).reshape(1, 512)
    ref = frames.swap_frame(image, opts, onnxruntime_networks(models), frames.DetectSettings(), lat)
    dev = tensor_frames.swap_frame(image, opts, torch_networks(models, device), frames.DetectSettings(), lat,
                                   device=device)
    a, b = (cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR) for r in (ref, dev))
    faces = [round(db, 2) for db in face_psnr(a, b, ref.dets.kps[ref.aligned.selected])]
    same = len(ref.dets) == len(dev.dets) > 0
    box = float(np.abs(ref.dets.boxes - dev.dets.boxes).max()) if same else None
    kps = float(np.abs(ref.dets.kps - dev.dets.kps).max()) if same else None
    return {"device": device, "cuda_graphs": graph_check(models) if device.startswith("cuda") else "no CUDA here",
            "faces_found": [len(ref.dets), len(dev.dets)],
            "faces_swapped": [int(ref.aligned.crops.shape[0]), int(dev.aligned.crops.shape[0])],
            "box_px": box, "kps_px": kps, "frame_db": round(psnr(a, b), 2), "face_db": faces,
            "pass": bool(same and box <= 1.0 and kps <= 1.0 and faces and min(faces) >= 40.0),
            "seconds": round(time.perf_counter() - t0, 1)}


def graph_check(models: dict, budget_s: float = 0.5) -> dict:
    """The swapper (bf16, as the self-check usually serves it on a GPU) eager against replayed
    from CUDA graphs (``torch_net.CudaGraphed``, what engine torch serves): largest output
    difference and ms per call at batch 6 (one frame's faces) and 64 (the batch limit), timed
    with CUDA events as ``bench.gpu_check`` times (about ``budget_s`` each)."""
    import onnx
    import torch

    from bench.gpu_check import _time_cuda
    from pipeline.torch_net import CudaGraphed, OnnxModule

    module = OnnxModule(onnx.load(models["swapper"].path), torch.bfloat16, "cuda")
    told: list[str] = []
    graphed = CudaGraphed(module, told.append)
    out: dict = {}
    with torch.inference_mode():
        for b in (6, 64):
            feeds = {"target": torch.rand((b, 3, 128, 128), device="cuda"),
                     "source": torch.nn.functional.normalize(torch.randn((b, 512), device="cuda"), dim=1)}
            args = [feeds[n] for n in module.inputs]
            row = {"max_abs_diff": float((graphed(*args)[0].float() - module(*args)[0].float()).abs().max())}
            for name, fn in (("eager_ms", module), ("graph_ms", graphed)):
                row[name] = round(_time_cuda(functools.partial(fn, *args), budget_s)[0], 3)
            out[f"batch_{b}"] = row
    out["fallbacks"] = told
    return out


def pipeline_alone(models: dict, image: bytes, latent: np.ndarray, levels: list[int], seconds: float,
                   max_requests: int) -> dict:
    """The ``torch`` profile's frame path without Triton: ``pipeline.tensor_frames.swap_frame``
    in this one process (the entry point's own function, its default options: JPEG out, quality
    figures, badge, watermark), the networks as engine ``torch`` serves them on
    ``engines.torch_device()`` (``pipeline.local.engine_networks``: bf16 on CUDA, f32 on the
    CPU; CUDA graphs unless ``FACESWAP_CUDA_GRAPHS=0``; one call at a time per network),
    driven by ``levels`` callers in threads. Against the served levels it shows what the
    server's processes and BLS calls cost; faces of concurrent frames are not batched together
    here. {"precision", "levels": [as ``load`` gives]}."""
    import torch

    from pipeline import frames, tensor_frames
    from pipeline.engines import torch_device
    from pipeline.local import engine_networks
    from pipeline.selection import SwapOptions

    device = torch.device(torch_device())
    precision = "bf16" if device.type == "cuda" else "f32"
    nets = engine_networks(models, precision)
    opts, lat = SwapOptions(), np.asarray(latent, np.float32).reshape(1, 512)

    def caller():
        def one() -> tuple[int, dict]:
            r = tensor_frames.swap_frame(image, opts, nets, frames.DetectSettings(), lat, device=device)
            return int(r.aligned.crops.shape[0]), r.stage_ms

        return one

    load(caller, 1, 30.0, 2)  # warm: the graphs captured, the kernels chosen
    return {"device": str(device), "precision": precision,
            "levels": [load(caller, n, seconds, max_requests) for n in levels]}


def _device_name() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - no NVML: the CPU dry run
        return "cpu"


def _targets(levels: list[dict]) -> dict:
    if not levels:
        return {}
    best = max(levels, key=lambda x: x["faces_per_s"])
    alone = next((x for x in levels if x["concurrency"] == 1), levels[0])

    def row(value, target, ok):
        return {"value": value, "target": target, "pass": bool(ok)}

    fps, p50 = best["faces_per_s"], alone["p50_ms"]
    return {"faces_per_s": row(fps, TARGETS["faces_per_s"], fps >= TARGETS["faces_per_s"]),
            "single_caller_p50_ms": row(p50, TARGETS["single_caller_p50_ms"],
                                        p50 is not None and p50 <= TARGETS["single_caller_p50_ms"]),
            "gpu_busy": row(best["gpu_busy"], TARGETS["gpu_busy"],
                            best["gpu_busy"] is not None and best["gpu_busy"] >= TARGETS["gpu_busy"]),
            "best_concurrency": best["concurrency"]}


def main(argv: list[str] | None = None) -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=Formatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack", help="here: write .gpu/ for the device tool to carry")
    r = sub.add_parser("run", help="on the GPU machine (or --dry-run here): serve, drive, report",
                       formatter_class=Formatter)
    r.add_argument("--out", default="out/gpu_run.json",
                   help="the report (JSON, rewritten after every level); each profile's Triton log beside it")
    r.add_argument("--profile", choices=["torch", "torch-host-bls", "cpu"], nargs="+", default=["torch", "cpu"],
                   help="the profiles to serve in turn, each after the first only if 150 s of the budget are "
                        "left. torch: frames on the GPU (pipeline.tensor_frames), tensors between the stubs on "
                        "the GPU. torch-host-bls: the same with the networks' tensors in host memory (added after "
                        "torch by itself where torch failed). cpu: frames on the host, networks on engine torch. "
                        "The report's top-level levels, precision and targets are those of the first profile that "
                        "answered without errors (its name in `profile`); `runs` has every profile's")
    r.add_argument("--dry-run", action="store_true",
                   help="here on the CPU: tiny stand-ins, 2 requests per caller at each level")
    r.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32],
                   help="callers sending face_swap back to back, one level after another")
    r.add_argument("--alone-concurrency", type=int, nargs="+", default=[1, 8],
                   help="callers of pipeline_alone: the same frame path in one process, without Triton")
    r.add_argument("--seconds", type=float, default=15.0,
                   help="per concurrency level (pipeline_alone: at most 8; a dry run stops after 2 requests "
                        "per caller)")
    r.add_argument("--instances", type=int, default=8, help="instances of each entry point (host pixel work)")
    r.add_argument("--swapper-batch", type=int, default=64, help="the swapper's max_batch_size (faces per call)")
    r.add_argument("--budget-s", type=float, default=360.0,
                   help="levels that would end after this many seconds from the start are skipped")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        return pack()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
