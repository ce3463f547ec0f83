"""The GPU run's dry run (bench.gpu_run, issue 20) here on the CPU: the same server build
(profile torch), the same KServe v2 HTTP driver, the same parity check and the same report as on
the GPU machine, so the prepared device run stays working between the sessions that have a
GPU."""

from __future__ import annotations

import json
import subprocess
import sys

from repository.layout import ROOT


def test_the_gpu_run_dry_runs_here_and_reports_every_figure(models, tmp_path):
    out = tmp_path / "gpu_run.json"
    p = subprocess.run([sys.executable, "-m", "bench.gpu_run", "run", "--dry-run", "--concurrency", "1", "2",
                        "--seconds", "5", "--instances", "1", "--budget-s", "400", "--out", str(out),
                        "--profile", "torch", "torch-host-bls", "cpu", "--alone-concurrency", "1", "3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["device"] == "cpu" and r["entry_point_instances"] == 1
    assert [lv["concurrency"] for lv in r["levels"]] == [1, 2]
    for lv in r["levels"]:
        assert lv["requests"] >= 1 and lv["errors"] == 0 and lv["faces_per_image"] == 6
        assert lv["faces_per_s"] > 0 and lv["p50_ms"] > 0 and lv["gpu_busy"] is None  # no NVML on the CPU
        assert {"face_swap", "face_detector", "face_swapper"} <= set(lv["triton_compute"])
        assert {"decode", "detect", "swap", "paste", "encode"} <= set(lv["stage_ms_last"]["steps"])
    assert r["precision"] and all("(torch)" in line for line in r["precision"])
    assert set(r["targets"]) == {"faces_per_s", "single_caller_p50_ms", "gpu_busy", "best_concurrency", "note"}
    assert "dry run" in r["targets"]["note"] and "first profile that answered without errors" in r["profile_rule"]
    assert len(set(r["precision"])) == len(r["precision"])  # one line per network, not per instance
    assert r["entry_point_queue"] >= 8 and r["swapper_max_batch"] == 64 and r["total_s"] > 0
    assert r["profile"] == "torch" and set(r["runs"]) == {"torch", "torch-host-bls", "cpu"}
    for run in r["runs"].values():  # frames on the device (tensors by DLPack where they are, then in host
        # memory: the fallback where CUDA IPC fails), then on the host: the comparison
        assert [lv["concurrency"] for lv in run["levels"]] == [1, 2] and run["ready_s"] > 0
        assert all(lv["errors"] == 0 and lv["faces_per_image"] == 6 for lv in run["levels"])
        assert run["cuda_graphs"] == []  # no CUDA here: nothing captured, nothing fell back
    logs = {p: (tmp_path / f"gpu_run_triton_{p}.log").read_text() for p in r["runs"]}
    assert "frames on cpu (pipeline.tensor_frames), networks called by DLPack in device memory" in logs["torch"]
    assert "frames on cpu (pipeline.tensor_frames), networks called by DLPack in host memory" in \
        logs["torch-host-bls"]
    assert "pipeline.tensor_frames" not in logs["cpu"]
    alone = r["pipeline_alone"]  # the same frame path in one process, no Triton: what serving costs
    assert alone["device"] == "cpu" and alone["precision"] == "f32"
    assert [lv["concurrency"] for lv in alone["levels"]] == [1, 3]  # --alone-concurrency
    assert all(lv["requests"] >= 1 and lv["errors"] == 0 and lv["faces_per_image"] == 6 for lv in alone["levels"])
    assert {"decode", "detect", "swap", "paste", "encode"} <= set(alone["levels"][0]["stage_ms_last"]["steps"])
    parity = r["parity"]  # the device path against onnxruntime on the host, here both on the CPU
    assert parity["device"] == "cpu" and parity["faces_found"] == [6, 6] and parity["faces_swapped"] == [6, 6]
    assert parity["pass"] and parity["box_px"] <= 1.0 and min(parity["face_db"]) >= 40, parity
    assert parity["cuda_graphs"] == "no CUDA here"


def test_a_broken_profile_run_is_one_that_failed_or_answered_with_errors():
    """What makes the run add torch-host-bls after torch and pick the report's main profile."""
    from bench.gpu_run import _broken

    ok = {"concurrency": 1, "requests": 3, "errors": 0}
    assert not _broken({"levels": [ok, {**ok, "concurrency": 8}]})
    assert _broken({"failed": "RuntimeError: no swap answered"}) and _broken({"skipped": "out of time"})
    assert _broken({"levels": []}) and _broken({"levels": [ok, {**ok, "errors": 2}]})
    assert _broken({"levels": [ok, {**ok, "requests": 0}]})


def test_the_preflight_names_what_the_gpu_machine_lacks(models):
    """The device run's first seconds: every check answers, and here (no GPU) torch says so."""
    code = ("import json, sys; from pathlib import Path; from bench.gpu_run import preflight; "
            "print(json.dumps(preflight(Path(sys.argv[1]))))")
    p = subprocess.run([sys.executable, "-c", code, models["detector"].path], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(r) == {"numpy", "torch", "torchvision", "opencv", "onnx", "tritonclient.grpc", "libpython", "/dev/shm",
                      "mps"}
    assert "by OpenCV on the host" in r["torchvision"]  # not installed here: reported, not a failure
    assert r["numpy"].startswith("1.") and "NO CUDA" in r["torch"]
    assert not [k for k, v in r.items() if str(v).startswith("FAILED")], r
