"""The benchmark tools' own logic: FLOP counting, CPU feature detection, peak probes, photos,
targets, and the GPU check's ONNX -> PyTorch converter (where torch is installed). Fast: no server."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest

from bench import gpu_check, peak
from bench import vs_insightface as bench
from repository import standins
from repository.layout import shared_models_dir


@pytest.mark.parametrize("builder", ["inswapper_128", "w600k_r50", "det_10g"])
def test_counted_flops_equal_the_builders_count(builder):
    model, gflop = standins.BUILDERS[builder]("tiny")
    shapes = {"input.1": [1, 3, 640, 640]} if builder == "det_10g" else None
    counted = peak.graph_flops(model, shapes)
    assert counted["uncounted"] == []
    assert counted["gflop"] == pytest.approx(gflop, rel=1e-9)
    if builder == "inswapper_128":
        assert peak.graph_flops(model, batch=4)["gflop"] == pytest.approx(4 * gflop, rel=1e-9)


def test_flops_of_a_graph_with_computed_shapes_are_all_counted():
    path = shared_models_dir() / "det_500m.onnx"
    assert path.exists(), f"{path} is needed: provide ../shared/models (the shared SCRFD detectors)"
    counted = peak.graph_flops(onnx.load(str(path)), {"input.1": [1, 3, 640, 640]})
    assert counted["uncounted"] == [] and counted["nodes"] > 40
    # SCRFD-500M: about 0.5 G multiply-adds at 640x480, so about 1.47 GFLOP at 640x640
    assert 1.3 < counted["gflop"] < 1.6


def test_native_precisions_come_from_cpu_flags():
    plain = peak.native_support(["avx2", "fma"])
    assert plain["f32"]["native"] and not plain["bf16"]["native"] and not plain["int8"]["native"]
    assert "avx512_bf16" in plain["bf16"]["reason"]
    zen4 = peak.native_support(["avx512f", "avx512_bf16", "avx512_vnni"])
    assert zen4["bf16"]["isa"] == ["avx512_bf16"] and zen4["int8"]["isa"] == ["avx512_vnni"]
    amx = peak.native_support(["avx512f", "amx_bf16", "amx_int8", "amx_tile"])
    assert amx["bf16"]["isa"] == ["amx_bf16"] and amx["int8"]["isa"] == ["amx_int8"]
    assert peak.native_support(["avx_vnni"])["int8"]["native"]


def test_cpu_info_reads_model_and_flags():
    text = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n"
    info = peak.cpu_info(text)
    assert info["model"] == "Test CPU 9000" and info["cores"] >= 1
    assert info["flags"] == ["avx2", "avx512_vnni", "avx512f", "fma"]


def test_precisions_without_native_support_get_no_figure():
    result = peak.run_probes(0.01, scale="test", flags=["avx2", "fma"])
    assert result["peak"]["f32"]["gflops"] > 0
    for prec in ("bf16", "int8"):
        assert result["peak"][prec]["gflops"] is None and "no " in result["peak"][prec]["reason"]
        assert all(p["gflops"] is None and not p["native"] for p in result["probes"] if p["precision"] == prec)


def test_probes_measure_what_this_cpu_runs_natively():
    flags = peak.cpu_info()["all_flags"]
    result = peak.run_probes(0.01, scale="test")
    support = peak.native_support(flags)
    for prec in peak.PRECISIONS:
        assert (result["peak"][prec]["gflops"] is not None) == support[prec]["native"], prec
    for p in result["probes"]:
        if p["engine"] == "openvino" and p["gflops"] is not None:  # the plugin ran what was asked
            assert set(p["runtime_precision"].split(",")) & set(peak.OV_RUNTIME[p["precision"]])


def test_benchmark_photos_have_the_issue_sizes(tmp_path):
    photos = bench.make_photos(("1080p_1face", "4k_6faces"), tmp_path)
    for name, (w, h) in (("1080p_1face", (1920, 1080)), ("4k_6faces", (3840, 2160))):
        img = cv2.imread(str(tmp_path / f"{name}.jpg"))
        assert img.shape[:2] == (h, w) == (photos[name].height, photos[name].width)
        assert img[:, :20].max() < 20  # black side bars: the picture was upscaled to the height, not stretched


def test_served_engine_is_read_from_the_config(tmp_path):
    (tmp_path / "face_swapper").mkdir()
    (tmp_path / "face_swapper" / "config.pbtxt").write_text(
        'parameters {\n  key: "engine"\n  value {\n    string_value: "openvino"\n  }\n}\n'
        'parameters {\n  key: "precision"\n  value {\n    string_value: "bf16"\n  }\n}\n')
    assert bench.served_engine(tmp_path) == {"engine": "openvino", "precision": "bf16"}
    assert bench.served_engine(tmp_path / "missing") == {}


def test_swapper_share_of_peak_is_judged_against_its_precision():
    swapper = {"precision": "f32", "engine": "onnxruntime", "gflop_per_face": 170.0,
               "batches": {"1": {"gflops": 190.0}, "6": {"gflops": 150.0}}}
    peak = {"peak": {"f32": {"gflops": 220.0, "probe": "ort_conv_f32"}, "bf16": {"gflops": 450.0}}}
    targets, shares = bench.peak_targets(swapper, 1000.0, peak)  # 1 s per face in the server: 170 GFLOP/s
    assert [t["pass"] for t in targets] == [True, False, False]
    assert shares["standalone batch 1"]["share"] == pytest.approx(190 / 220)
    assert shares["in the server (4K photo)"]["gflops"] == pytest.approx(170.0)
    missing, _ = bench.peak_targets({**swapper, "precision": "int8"}, None, peak)
    assert all(t["value"] is None and not t["pass"] for t in missing)


def test_synthetic_gpu_inputs_are_images_and_unit_latents():
    target, source = gpu_check.synthetic_inputs(3)
    assert target.shape == (3, 3, 128, 128) and 0 <= target.min() and target.max() <= 1
    assert np.allclose(np.linalg.norm(source, axis=1), 1, atol=1e-5)
    crops = np.zeros((2, 128, 128, 3), np.uint8)
    crops[..., 2] = 255  # BGR red
    target, _ = gpu_check.synthetic_inputs(3, crops=crops)
    assert target[:, 0].min() == 1 and target[:, 2].max() == 0  # RGB order, as inswapper's blob
    assert gpu_check.compare(target, target)["psnr_db"] == float("inf")


def test_breakdown_counts_every_network_called_through_bls_as_a_network():
    """The content gate's detector is a network: its compute comes off the stage's own work."""
    from bench.stages import breakdown

    def stats(compute_ms: dict[str, float], requests: int) -> dict:
        out = {}
        for model, ms in compute_ms.items():
            ns = int(ms * 1e6)
            out[model] = {"inference_count": requests if model == "face_swap" else 0,
                          "execution_count": requests,
                          "inference_stats": {"compute_infer": {"ns": ns}, "success": {"ns": ns + int(5e6)}}}
        return out

    before = stats({m: 0 for m in ("face_swap", "face_detector", "face_swapper", "content_detector")}, 0)
    after = stats({"face_swap": 100, "face_detector": 20, "face_swapper": 50, "content_detector": 20}, 2)
    b = breakdown(before, after)
    assert b["networks"] == {"face_detector": 10.0, "face_swapper": 25.0, "content_detector": 10.0}
    assert b["stages_own"] == 5.0 and b["triton_request"] == 50.0 and b["queues_and_hops"] == 0.0
