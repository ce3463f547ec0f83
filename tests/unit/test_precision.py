"""Precision chosen by the load-time parity self-check (pipeline.precision) and int8
(repository.quantize), without a server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline import engines
from pipeline import precision as prec
from repository import quantize
from repository.onnx_graph import io_names

ZEN4 = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"]


@pytest.fixture(scope="module")
def probe_repo(models, tmp_path_factory):
    """A CPU model repository (tiny stand-ins, real detector) with its probe; the cache in tmp."""
    from repository.generate import build

    out = tmp_path_factory.mktemp("prec") / "repo"
    build(out, "cpu", models)
    assert (out / prec.PROBE_FILE).is_file(), "the repository build wrote no precision probe"
    return out


@pytest.fixture(scope="module")
def probe(probe_repo):
    with np.load(probe_repo / prec.PROBE_FILE) as z:
        return {k: z[k] for k in z.files}


def test_probe_is_cut_from_the_photos(probe):
    assert probe["swap_crops"].shape[1:] == (128, 128, 3) and probe["swap_crops"].dtype == np.uint8
    assert probe["rec_crops"].shape[1:] == (112, 112, 3)
    assert len(probe["swap_crops"]) >= prec.PROBE_ITEMS["swapper"]
    assert probe["det_images"].shape[1:] == (640, 640, 3) and len(probe["det_scales"]) == len(probe["det_images"])
    assert np.allclose(np.linalg.norm(probe["swap_latents"], axis=1), 1, atol=1e-4)
    assert probe["swap_crops"].std() > 20  # faces, not blank canvases


def test_only_native_precisions_are_candidates(tmp_path):
    q = tmp_path / "int8.onnx"
    cands, notes = prec.candidates("m.onnx", "onnxruntime", ["avx2", "fma"], q, True)
    assert [c.precision for c in cands] == ["f32"]
    assert any("bf16" in n and "avx512_bf16" in n for n in notes) and any(n.startswith("int8") for n in notes)
    cands, notes = prec.candidates("m.onnx", "onnxruntime", ZEN4, q, True)
    assert [c.precision for c in cands] == ["f32", "bf16"]
    assert any("faceswap-repository quantize" in n for n in notes)  # int8 is native but no quantized file yet
    q.write_bytes(b"x")
    cands, _ = prec.candidates("m.onnx", "onnxruntime", ZEN4, q, True)
    assert [(c.precision, c.engine, c.path) for c in cands] == [
        ("f32", "onnxruntime", "m.onnx"), ("bf16", "openvino", "m.onnx"), ("int8", "openvino", str(q))]
    cands, notes = prec.candidates("m.onnx", "onnxruntime", ZEN4, q, False)
    assert [c.precision for c in cands] == ["f32"] and any("openvino is not installed" in n for n in notes)
    amx = prec.native_support(["amx_bf16", "amx_int8", "amx_tile"])
    assert amx["bf16"]["native"] and amx["int8"]["native"]


def _fake_load(outputs_by_precision: dict[str, list[np.ndarray]], delay: dict[str, float]):
    import time

    def load(path, names, engine, precision):
        if precision == "boom":
            raise RuntimeError("engine failed to compile")

        def run(feeds):
            time.sleep(delay.get(precision, 0))
            return outputs_by_precision[precision]
        return run
    return load


def test_self_check_serves_the_fastest_precision_that_keeps_parity(probe):
    ref = probe["swap_crops"][:4].transpose(0, 3, 1, 2).astype(np.float32) / 255
    rng = np.random.default_rng(0)
    close = ref + rng.normal(0, 0.002, ref.shape).astype(np.float32)  # ~54 dB
    noisy = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)  # ~26 dB: the fp16-inswapper kind of noise
    cands = [prec.Candidate("f32", "onnxruntime", "a"), prec.Candidate("bf16", "openvino", "a"),
             prec.Candidate("int8", "openvino", "b")]
    names, ranks = ["target", "source"], [4, 2]

    # int8 is the fastest but noisy: bf16 serves.
    load = _fake_load({"f32": [ref], "bf16": [close], "int8": [noisy]}, {"f32": 0.03, "bf16": 0.015, "int8": 0.001})
    choice = prec.self_check("face_swapper", cands, probe, names, ranks, ["output"], load)
    assert (choice.precision, choice.chosen_by) == ("bf16", "self-check")
    rows = {r["precision"]: r for r in choice.results}
    assert rows["int8"]["passed"] is False and "PSNR" in rows["int8"]["reason"]
    assert rows["bf16"]["figures"]["psnr_db"] >= 40 and rows["bf16"]["speedup"] > 1
    assert "ms" not in rows["int8"]  # a failed precision is not even timed
    runs = []
    counting = _fake_load({"f32": [ref], "bf16": [close], "int8": [noisy]}, {})

    def load_counting(path, names_, engine, precision):
        run = counting(path, names_, engine, precision)
        return lambda feeds: runs.append(precision) or run(feeds)
    prec.self_check("face_swapper", cands, probe, names, ranks, ["output"], load_counting)
    # Bounded cost: one parity run each, WARMUP_RUNS untimed runs and between MIN_TIMED_REPS and
    # MAX_TIMED_REPS timed rounds of those that passed.
    assert runs.count("int8") == 1
    fixed = 1 + prec.WARMUP_RUNS
    assert fixed + prec.MIN_TIMED_REPS <= runs.count("f32") == runs.count("bf16") <= fixed + prec.MAX_TIMED_REPS

    # Non-finite output never serves, however fast.
    bad = close.copy()
    bad[0, 0, 0, 0] = np.nan
    load = _fake_load({"f32": [ref], "bf16": [bad], "int8": [close]}, {"f32": 0.02, "int8": 0.005})
    choice = prec.self_check("face_swapper", cands, probe, names, ranks, ["output"], load)
    assert choice.precision == "int8"
    assert {r["precision"]: r for r in choice.results}["bf16"]["reason"] == "output not finite"

    # Nothing passes: fp32 serves; an engine that fails to load is reported, not fatal.
    cands_boom = cands[:2] + [prec.Candidate("boom", "openvino", "b")]
    load = _fake_load({"f32": [ref], "bf16": [noisy]}, {})
    choice = prec.self_check("face_swapper", cands_boom, probe, names, ranks, ["output"], load)
    assert choice.precision == "f32"
    assert "engine failed" in choice.results[2]["error"]


def test_compare_thresholds_for_embedder_and_detector(probe, models):
    import onnxruntime as ort

    emb = np.random.default_rng(1).normal(size=(8, 512)).astype(np.float32)
    tilt = emb + 0.02 * np.linalg.norm(emb, axis=1, keepdims=True) * np.random.default_rng(2).normal(
        size=emb.shape).astype(np.float32) / np.sqrt(512)
    assert prec.compare("recognizer", [[emb]], [[emb]], probe)["passed"]
    far = prec.compare("recognizer", [[emb]], [[emb + 0.2 * np.abs(emb).mean() *
                                                 np.random.default_rng(3).normal(size=emb.shape)]], probe)
    assert not far["passed"] and far["cosine"] < 0.999
    assert prec.compare("recognizer", [[emb]], [[tilt]], probe)["cosine"] > 0.999

    det = ort.InferenceSession(models["detector"].path, providers=["CPUExecutionProvider"])
    feeds = prec.probe_feeds("detector", probe, [det.get_inputs()[0].name], [4])
    ref = [det.run(None, f) for f in feeds]
    same = prec.compare("detector", ref, ref, probe)
    assert same["passed"] and same["box_px"] == 0 and same["same_faces"]
    moved = [[h.copy() for h in heads] for heads in ref]
    for heads in moved:
        for i in (3, 4, 5):  # box distances (in strides): +0.5 stride moves every box edge by 4-16 px
            heads[i] += 0.5
    out = prec.compare("detector", ref, moved, probe)
    assert not out["passed"] and out["box_px"] > 1 and "moved" in out["reason"]


def _damaged_copy(src: str, dst: Path, offset: float) -> Path:
    """The network with ``offset`` added to its output: a wrong model that still runs."""
    m = onnx.load(src)
    out = m.graph.output[0].name
    for node in m.graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    m.graph.initializer.append(numpy_helper.from_array(np.array(offset, np.float32), "damage"))
    m.graph.node.append(onnx.helper.make_node("Add", [f"{out}_raw", "damage"], [out]))
    onnx.save(m, dst)
    return dst


def test_choose_rejects_a_wrong_int8_file_and_caches_the_decision(probe_repo, models, tmp_path):
    sw = models["swapper"].path
    sha = "ab" * 32
    cache = tmp_path / "cache"
    q = prec.int8_path(cache, sha)
    q.parent.mkdir(parents=True)
    _damaged_copy(sw, q, 0.05)  # PSNR 26 dB
    prec.int8_stamp(q, sha)  # stamped as if repository.quantize had made it: only the parity check can tell
    names, ranks, outs = io_names(sw)
    calls = []

    def load(path, output_names, engine, precision):
        calls.append(precision)
        return engines.load(path, output_names, engine, precision)

    args = ("face_swapper", "auto", sw, "onnxruntime", sha, cache, probe_repo / prec.PROBE_FILE, names, ranks, outs)
    choice = prec.choose(*args, load=load, flags=ZEN4)
    rows = {r["precision"]: r for r in choice.results}
    assert rows["int8"]["passed"] is False, rows["int8"]
    assert choice.precision in ("f32", "bf16") and choice.chosen_by == "self-check"
    assert choice.probe_seconds > 0
    assert sorted(set(calls)) == ["bf16", "f32", "int8"]

    calls.clear()
    again = prec.choose(*args, load=load, flags=ZEN4)
    assert again.chosen_by == "cache" and again.precision == choice.precision and calls == []
    record = next((cache / "precision").glob("*.json"))
    assert json.loads(record.read_text())["precision"] == choice.precision
    good = json.loads(record.read_text())
    for poison, why in (({"path": "/tmp/evil.onnx", "precision": "int8", "engine": "openvino"}, "not a candidate"),
                        ({"path": str(q), "precision": "int8", "engine": "openvino"}, "do not show"),  # int8 failed
                        ({"model": "face_detector"}, "another network"),
                        ({"results": "abc"}, "do not show")):
        record.write_text(json.dumps({**good, **poison}))
        again = prec.choose(*args, load=load, flags=ZEN4)
        # (f32 or bf16 by timing; never the int8 that failed)
        assert again.chosen_by == "self-check" and why in again.note and again.precision in ("f32", "bf16")
    record.write_text("{not json")
    again = prec.choose(*args, load=load, flags=ZEN4)
    assert again.chosen_by == "self-check" and "unreadable" in again.note

    other_cpu = prec.choose(*args, load=load, flags=["avx2", "fma", "avx512f", "avx512_vnni"])  # no bf16 here
    assert other_cpu.chosen_by == "self-check" and "bf16" not in {r["precision"] for r in other_cpu.results}

    forced = prec.choose("face_swapper", "bf16", sw, "onnxruntime", sha, cache, None, names, ranks, outs,
                         load=load, flags=["avx2"])
    assert (forced.precision, forced.engine, forced.chosen_by) == ("bf16", "openvino", "setting")
    assert "not native" in forced.note
    with pytest.raises(ValueError, match="faceswap-repository quantize"):
        prec.choose("face_swapper", "int8", sw, "onnxruntime", "cd" * 32, cache, None, names, ranks, outs, load=load)
    # Forced int8 serves only the file made from this model, unchanged since (its stamp).
    other = prec.int8_path(cache, "cd" * 32)
    shutil.copy(q, other)
    shutil.copy(f"{q}.json", f"{other}.json")  # another model's file and stamp copied over
    with pytest.raises(ValueError, match="not made from this model"):
        prec.choose("face_swapper", "int8", sw, "onnxruntime", "cd" * 32, cache, None, names, ranks, outs, load=load)
    with open(q, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="changed after it was made"):
        prec.choose("face_swapper", "int8", sw, "onnxruntime", sha, cache, None, names, ranks, outs, load=load)
    changed = prec.choose(*args, load=load, flags=ZEN4)  # auto: the changed file is no candidate at all
    assert "int8" not in {r["precision"] for r in changed.results} and "changed after" in changed.note
    with pytest.raises(ValueError, match="not one of"):
        prec.choose("face_swapper", "fp8", sw, "onnxruntime", sha, cache, None, names, ranks, outs, load=load)
    with pytest.raises(ValueError, match="fp16 runs on engine torch only"):
        prec.choose("face_swapper", "fp16", sw, "onnxruntime", sha, cache, None, names, ranks, outs, load=load)
    forced = prec.choose("face_swapper", "bf16", sw, "torch", sha, cache, None, names, ranks, outs, load=load)
    assert (forced.precision, forced.engine, forced.chosen_by) == ("bf16", "torch", "setting")
    missing = prec.choose("face_swapper", "auto", sw, "onnxruntime", sha, cache, tmp_path / "none.npz", names,
                          ranks, outs, load=load, flags=ZEN4)
    assert (missing.precision, missing.chosen_by) == ("f32", "no probe")
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes((probe_repo / prec.PROBE_FILE).read_bytes()[:5000])
    broken = prec.choose("face_swapper", "auto", sw, "onnxruntime", sha, cache, damaged, names, ranks, outs,
                         load=load, flags=ZEN4)
    assert (broken.precision, broken.chosen_by) == ("f32", "no probe") and "unreadable" in broken.note
    with np.load(probe_repo / prec.PROBE_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    for name, bad in (("no_swap.npz", {k: v for k, v in arrays.items() if not k.startswith("swap")}),
                      ("empty.npz", {**arrays, "swap_crops": arrays["swap_crops"][:0]}),
                      ("small.npz", {**arrays, "swap_crops": arrays["swap_crops"][:, :50, :50]})):
        np.savez(tmp_path / name, **bad)
        out = prec.choose("face_swapper", "auto", sw, "onnxruntime", sha, cache, tmp_path / name, names, ranks, outs,
                          load=load, flags=ZEN4)
        assert (out.precision, out.chosen_by) == ("f32", "no probe") and "could not run" in out.note, name


def test_int8_swapper_is_quantized_once_and_keeps_parity(probe_repo, models, tmp_path):
    sw = models["swapper"].path
    q = quantize.ensure_int8("face_swapper", sw, "ef" * 32, probe_repo / prec.PROBE_FILE, tmp_path)
    assert q == prec.int8_path(tmp_path, "ef" * 32) and q.is_file()
    kinds = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    stamp = q.stat().st_mtime_ns
    assert quantize.ensure_int8("face_swapper", sw, "ef" * 32, probe_repo / prec.PROBE_FILE, tmp_path) == q
    assert q.stat().st_mtime_ns == stamp  # cached by the fp32 file's hash, not made again
    assert prec.int8_intact(q, "ef" * 32) == (True, prec.file_sha256(q))
    q.write_bytes(q.read_bytes()[:5000])  # damaged: made again on the next build
    assert quantize.ensure_int8("face_swapper", sw, "ef" * 32, probe_repo / prec.PROBE_FILE, tmp_path) == q
    assert prec.int8_intact(q, "ef" * 32) == (True, prec.file_sha256(q))
    assert q.stat().st_size > 5000
    names, ranks, outs = io_names(sw)
    with np.load(probe_repo / prec.PROBE_FILE) as z:
        probe = {k: z[k] for k in z.files}
    cands = [prec.Candidate("f32", "onnxruntime", sw), prec.Candidate("int8", "onnxruntime", str(q)),
             prec.Candidate("int8", "openvino", str(q))]
    choice = prec.self_check("face_swapper", cands, probe, names, ranks, outs, engines.load)
    for row in choice.results[1:]:
        assert row["passed"], row
        assert row["figures"]["psnr_db"] >= 40


def test_metrics_urls_follow_triton_ports():
    from gateway.core.precision import metrics_urls

    assert metrics_urls("127.0.0.1:8001") == ["http://127.0.0.1:8002/metrics"]
    assert metrics_urls("a:9001, b:9101") == ["http://a:9002/metrics", "http://b:9102/metrics"]
    assert metrics_urls("dns:///triton:8001") == []
    assert metrics_urls("x:1", "http://m/metrics,http://n/metrics") == ["http://m/metrics", "http://n/metrics"]
