"""Config generation: both profiles parse with Triton's ModelConfig protobuf and stay wired."""

from __future__ import annotations

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
    assert set(configs) == {"face_embed", "face_swap", "face_swap_kps", "landmark_aligner", "image_decoder",
                            "face_detector", "face_aligner",
                            "face_analyzer", "face_recognizer", "face_swapper", "face_paster", "content_detector"}
    for name in configs:
        assert (out / name / "1").is_dir()


def test_network_backends_per_profile(repo):
    profile, out, configs = repo
    for name in ("face_detector", "face_recognizer", "face_swapper", "content_detector"):
        cfg = configs[name]
        if profile == "cpu":
            assert cfg.backend == "python" and cfg.parameters["engine"].string_value == "onnxruntime"
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


def test_ensemble_steps_reference_existing_models_and_tensors(repo):
    _, _, configs = repo
    for ens in ("face_embed", "face_swap", "face_swap_kps"):
        cfg = configs[ens]
        produced = {i.name for i in cfg.input}
        for step in cfg.ensemble_scheduling.step:
            model = configs[step.model_name]
            inputs = {i.name for i in model.input}
            outputs = {o.name for o in model.output}
            assert set(step.input_map) <= inputs
            required = {i.name for i in model.input if not i.optional}
            assert required <= set(step.input_map), f"{ens}/{step.model_name} misses inputs"
            assert set(step.input_map.values()) <= produced, f"{ens}/{step.model_name} reads an unproduced tensor"
            assert set(step.output_map) <= outputs
            produced |= set(step.output_map.values())
        assert {o.name for o in cfg.output} <= produced


def test_python_stage_parameters_are_typed_defaults(repo):
    _, _, configs = repo
    p = configs["face_aligner"].parameters
    assert float(p["det_thresh"].string_value) == 0.5 and int(p["max_faces"].string_value) == 64
    assert configs["face_paster"].parameters["stand_in_models"].string_value == "w600k_r50,inswapper_128"


def test_quality_figures_are_wired_in_both_swap_ensembles(repo):
    """face_paster gets every face's key points and the optional source embeddings, and calls the
    recognizer named in its parameters (one batched call for the quality figures)."""
    _, _, configs = repo
    paster = configs["face_paster"]
    inputs = {i.name: i for i in paster.input}
    assert not inputs["kps"].optional and inputs["source_embeddings"].optional
    assert list(inputs["source_embeddings"].dims) == [-1, 512]
    p = {k: v.string_value for k, v in paster.parameters.items()}
    rec = configs["face_recognizer"]
    assert p["recognizer_model"] == "face_recognizer" and p["recognizer_input"] == rec.input[0].name
    assert p["recognizer_output"] == rec.output[0].name and int(p["recognizer_max_batch"]) == rec.max_batch_size
    for ens, kps in (("face_swap", "kps"), ("face_swap_kps", "face_kps")):
        cfg = configs[ens]
        assert {i.name: i.optional for i in cfg.input}["source_embeddings"] is True
        (step,) = [s for s in cfg.ensemble_scheduling.step if s.model_name == "face_paster"]
        assert step.input_map["kps"] == kps and step.input_map["source_embeddings"] == "source_embeddings"


def test_every_model_but_ensembles_has_a_rejecting_bounded_queue(models, tmp_path):
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
STAGE_PARAMS = {"image_decoder": "DecoderParams", "face_aligner": "AlignerParams", "face_analyzer": "AnalyzerParams",
                "face_paster": "PasterParams", "landmark_aligner": "LandmarkAlignerParams"}


def test_every_models_parameters_parse_into_its_contract(repo):
    """What the generator writes is what each model.py reads: every parameter of every config
    parses into the stage's contract (pipeline.contracts) and writes back unchanged."""
    from pipeline import contracts

    profile, out, configs = repo
    for name, cfg in configs.items():
        if cfg.platform == "ensemble":
            continue
        kind = STAGE_PARAMS.get(name, "OnnxNetworkParams" if profile == "cpu" else "NetworkIdentity")
        cls = getattr(contracts, kind)
        strings = {k: v.string_value for k, v in cfg.parameters.items()}
        parsed = cls.from_strings(strings)
        assert parsed.to_config() == strings, name
        source = (out / name / "1" / "model.py")
        if source.exists():
            model_py = source.read_text()
            if name in STAGE_PARAMS or "onnx_model" not in model_py:
                assert f"{kind}.from_config(args)" in model_py, name


def test_stage_contracts_name_what_is_missing_or_malformed():
    from pipeline.contracts import AlignerParams, PasterParams

    with pytest.raises(ValueError, match="'detector_input' is missing"):
        AlignerParams.from_strings({"recognizer_input": "a", "recognizer_output": "b", "detector_outputs": "x"})
    good = {"swapper_target": "target", "swapper_source": "source", "swapper_output": "output",
            "recognizer_input": "input.1", "recognizer_output": "683"}
    p = PasterParams.from_strings({**good, "stand_in_models": "w600k_r50,inswapper_128", "max_pixels": "100"})
    assert p.stand_in_models == ("w600k_r50", "inswapper_128") and p.max_pixels == 100
    assert p.swapper_model == "face_swapper" and p.admission_in_flight == 1  # the contract's defaults
    with pytest.raises(ValueError, match="max_pixels='many'"):
        PasterParams.from_strings({**good, "max_pixels": "many"})
    with pytest.raises(ValueError, match="true or false"):
        AlignerParams.from_strings({**good, "detector_input": "i", "detector_outputs": "x", "close_up_retry": "yes"})
