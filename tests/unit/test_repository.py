"""Config generation: both profiles parse with Triton's ModelConfig protobuf and stay wired."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from repository.generate import PROFILES, build


@pytest.fixture(scope="module", params=PROFILES)
def repo(request, models, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "model_repository"
    build(out, request.param, models)
    configs = {}
    for path in sorted(out.glob("*/config.pbtxt")):
        cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
        assert cfg.name == path.parent.name
        configs[cfg.name] = cfg
    return request.param, out, configs


def test_every_model_has_a_parsable_config(repo):
    profile, out, configs = repo
    assert set(configs) == {"face_embed", "face_swap", "face_swap_kps", "face_detector", "face_recognizer",
                            "face_swapper", "content_detector"}
    for name in configs:
        assert (out / name / "1").is_dir()


def test_network_backends_per_profile(repo):
    profile, out, configs = repo
    for name in ("face_detector", "face_recognizer", "face_swapper", "content_detector"):
        cfg = configs[name]
        if profile in ("cpu", "torch"):
            engine = {"cpu": "onnxruntime", "torch": "torch"}[profile]
            assert cfg.backend == "python" and cfg.parameters["engine"].string_value == engine
            assert (out / name / "1" / "model.py").exists()
        elif profile == "gpu":
            assert cfg.platform == "onnxruntime_onnx" and (out / name / "1" / "model.onnx").exists()
            assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        else:
            assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
    for name in ("face_recognizer", "face_swapper", "content_detector"):
        assert configs[name].max_batch_size > 0 and configs[name].HasField("dynamic_batching")
    gate = configs["content_detector"]  # pipeline.content's contract, whatever the graph leaves open
    assert [list(t.dims) for t in (*gate.input, *gate.output)] == [[3, 320, 320], [22, 2100]]
    if profile == "gpu":
        accel = gate.optimization.execution_accelerators.gpu_execution_accelerator[0]
        assert accel.parameters["precision_mode"] == "FP32"


def test_python_stage_parameters_are_typed_defaults(repo):
    _, _, configs = repo
    p = configs["face_swap"].parameters
    assert float(p["det_thresh"].string_value) == 0.5 and int(p["max_faces"].string_value) == 64
    assert p["pixels"].string_value == ("device" if repo[0] == "torch" else "host")
    assert p["stand_in_models"].string_value == "w600k_r50,inswapper_128"


def test_entry_points_are_python_models_that_call_the_networks_they_name(repo):
    """No ensembles: each entry point is one Python model (the frame is decoded once, inside it)
    that calls each network through BLS by the names and tensors in its parameters;
    face_swap_kps takes the caller's key points, face_swap does not (it detects), and both the
    optional source embeddings (the quality figures)."""
    _, out, configs = repo
    assert not [c.name for c in configs.values() if c.platform == "ensemble"]
    rec, swp, det = configs["face_recognizer"], configs["face_swapper"], configs["face_detector"]
    for name in ("face_swap", "face_swap_kps", "face_embed"):
        cfg = configs[name]
        assert cfg.backend == "python" and (out / name / "1" / "model.py").exists()
        inputs = {i.name: i for i in cfg.input}
        p = {k: v.string_value for k, v in cfg.parameters.items()}
        assert p["recognizer_model"] == "face_recognizer" and p["recognizer_input"] == rec.input[0].name
        assert p["recognizer_output"] == rec.output[0].name and int(p["recognizer_max_batch"]) == rec.max_batch_size
        assert p["detector_input"] == det.input[0].name
        assert p["detector_outputs"].split(",") == [o.name for o in det.output]
        if name == "face_embed":
            continue
        assert p["swapper_target"] == swp.input[0].name and p["swapper_output"] == swp.output[0].name
        assert inputs["source_embeddings"].optional and list(inputs["source_embeddings"].dims) == [-1, 512]
        assert ("face_kps" in inputs) == (name == "face_swap_kps")
        assert ("boxes" in {o.name for o in cfg.output}) == (name == "face_swap")


def test_every_model_has_a_rejecting_bounded_queue(models, tmp_path):
    from google.protobuf import text_format

    from repository.generate import PROFILES, build

    for profile in PROFILES:
        build(tmp_path / profile, profile, models)
        for path in (tmp_path / profile).glob("*/config.pbtxt"):
            cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
            if cfg.platform == "ensemble":
                continue
            pol = cfg.dynamic_batching.default_queue_policy
            assert pol.timeout_action == mc.ModelQueuePolicy.REJECT, (profile, cfg.name)
            assert pol.max_queue_size > 0 and pol.default_timeout_microseconds > 0 and pol.allow_timeout_override


#: The parameters class each Python model reads in ``initialize`` (its model.py).
STAGE_PARAMS = {"face_swap": "FrameSwapperParams", "face_swap_kps": "FrameSwapperParams",
                "face_embed": "AnalyzerParams"}


def test_every_models_parameters_parse_into_its_contract(repo):
    """What the generator writes is what each model.py reads: every parameter of every config
    parses into the stage's contract (pipeline.contracts) and writes back unchanged."""
    from pipeline import contracts

    profile, out, configs = repo
    for name, cfg in configs.items():
        if cfg.platform == "ensemble":
            continue
        kind = STAGE_PARAMS.get(name, "OnnxNetworkParams" if profile in ("cpu", "torch") else "NetworkIdentity")
        cls = getattr(contracts, kind)
        strings = {k: v.string_value for k, v in cfg.parameters.items()}
        # the Python backend's own key: the torch profile's models take tensors where they are
        assert strings.pop("FORCE_CPU_ONLY_INPUT_TENSORS", "no" if profile == "torch" else None) == \
            ("no" if profile == "torch" else None), name
        parsed = cls.from_strings(strings)
        assert parsed.to_config() == strings, name
        source = (out / name / "1" / "model.py")
        if source.exists():
            model_py = source.read_text()
            if "model_repository.frame_swapper import" in model_py:  # face_swap, face_swap_kps: one class
                model_py = (Path(__file__).parents[2] / "model_repository" / "frame_swapper.py").read_text()
            if name in STAGE_PARAMS or "onnx_model" not in model_py:
                assert f"{kind}.from_config(args)" in model_py, name


def test_stage_contracts_name_what_is_missing_or_malformed():
    from pipeline.contracts import AnalyzerParams, FrameSwapperParams

    with pytest.raises(ValueError, match="'detector_input' is missing"):
        AnalyzerParams.from_strings({"recognizer_input": "a", "recognizer_output": "b", "detector_outputs": "x"})
    good = {"swapper_target": "target", "swapper_source": "source", "swapper_output": "output",
            "recognizer_input": "input.1", "recognizer_output": "683", "detector_input": "i", "detector_outputs": "x",
            "content_input": "images", "content_output": "output0"}
    p = FrameSwapperParams.from_strings({**good, "stand_in_models": "w600k_r50,inswapper_128", "max_pixels": "100"})
    assert p.stand_in_models == ("w600k_r50", "inswapper_128") and p.max_pixels == 100
    assert p.swapper_model == "face_swapper" and p.admission_in_flight == 1  # the contract's defaults
    with pytest.raises(ValueError, match="max_pixels='many'"):
        FrameSwapperParams.from_strings({**good, "max_pixels": "many"})
    with pytest.raises(ValueError, match="true or false"):
        FrameSwapperParams.from_strings({**good, "close_up_retry": "yes"})


def test_entry_points_and_swapper_follow_the_operators_settings(models, tmp_path, monkeypatch):
    """FACESWAP_STAGE_INSTANCES, FACESWAP_STAGE_QUEUE and FACESWAP_SWAPPER_MAX_BATCH
    (bench.gpu_run: a GPU whose networks wait on the host's pixel work) set the entry points'
    instances and queue and the swapper's batch; the rest keep theirs; 0 is refused."""
    monkeypatch.setenv("FACESWAP_STAGE_INSTANCES", "8")
    build(tmp_path / "r", "cpu", models)
    counts = {p.parent.name: text_format.Parse(p.read_text(), mc.ModelConfig()).instance_group[0].count
              for p in (tmp_path / "r").glob("*/config.pbtxt")}
    assert counts["face_swap"] == counts["face_swap_kps"] == counts["face_embed"] == 8
    assert counts["face_detector"] == 2 and counts["face_swapper"] == 1
    monkeypatch.setenv("FACESWAP_STAGE_QUEUE", "64")
    monkeypatch.setenv("FACESWAP_SWAPPER_MAX_BATCH", "128")
    build(tmp_path / "r2", "cpu", models)
    cfgs = {p.parent.name: text_format.Parse(p.read_text(), mc.ModelConfig())
            for p in (tmp_path / "r2").glob("*/config.pbtxt")}
    assert cfgs["face_swap"].dynamic_batching.default_queue_policy.max_queue_size == 64
    assert cfgs["face_detector"].dynamic_batching.default_queue_policy.max_queue_size == 32
    assert cfgs["face_swapper"].max_batch_size == 128 and cfgs["face_recognizer"].max_batch_size == 32
    for bad in ("0", "many"):
        monkeypatch.setenv("FACESWAP_STAGE_INSTANCES", bad)
        with pytest.raises(ValueError, match="at least 1"):
            build(tmp_path / "r0", "cpu", models)


def test_frames_stay_on_the_gpu_where_asked_and_nowhere_without_one(models, tmp_path):
    """``--pixels device``: the torch profile's default, offered to gpu and gpu-trt (TensorRT or
    onnxruntime networks, the frame on the GPU in the entry points), refused for cpu."""
    for profile, pixels, want in (("torch", None, "device"), ("gpu", None, "host"), ("gpu-trt", "device", "device"),
                                  ("gpu", "device", "device"), ("torch", "host", "host")):
        out = tmp_path / f"{profile}_{pixels}"
        assert build(out, profile, models, pixels)["pixels"] == want
        for name in ("face_swap", "face_swap_kps", "face_embed"):
            cfg = text_format.Parse((out / name / "config.pbtxt").read_text(), mc.ModelConfig())
            strings = {k: v.string_value for k, v in cfg.parameters.items()}
            if name != "face_embed":
                assert strings["pixels"] == want, (profile, pixels, name)
            assert strings.get("FORCE_CPU_ONLY_INPUT_TENSORS") == ("no" if want == "device" else None), (profile, name)
        swapper = text_format.Parse((out / "face_swapper" / "config.pbtxt").read_text(), mc.ModelConfig())
        assert ("FORCE_CPU_ONLY_INPUT_TENSORS" in swapper.parameters) == (profile == "torch")  # a Python network
    with pytest.raises(ValueError, match="use profile torch, gpu or gpu-trt"):
        build(tmp_path / "cpu", "cpu", models, "device")
    with pytest.raises(ValueError, match="pixels must be host or device, got 'gpu'"):
        build(tmp_path / "cpu", "torch", models, "gpu")


def test_the_clients_health_asks_for_every_model_the_repository_serves(repo):
    """``faceswap health`` is ready only when every served model is (the content gate included)."""
    from client.library import REQUIRED_MODELS

    _, _, configs = repo
    assert set(REQUIRED_MODELS) == set(configs)
