"""Where a request's time goes inside Triton, from two snapshots of Triton's own statistics.

Triton counts, per model, the compute time of its executions (input + infer + output). A Python
stage's compute time includes the networks it calls through BLS (the swapper and ArcFace from
``face_paster``, ArcFace and tiled detector passes from ``face_aligner``), so a stage's own work is
its compute time less those networks'. The detector's first call per request comes from the
ensemble itself; any further call is a tiled pass by a Python stage.
"""

from __future__ import annotations

NETWORKS = ("face_detector", "face_recognizer", "face_swapper")
STAGES = ("image_decoder", "face_aligner", "face_analyzer", "landmark_aligner", "face_paster")
ENSEMBLES = ("face_swap", "face_embed", "face_swap_kps")
_COMPUTE = ("compute_input", "compute_infer", "compute_output")


def _delta(before: dict, after: dict, model: str, field: str, keys: tuple[str, ...]) -> int:
    a, b = after.get(model, {}), before.get(model, {})
    if field in ("inference_count", "execution_count"):
        return int(a.get(field, 0)) - int(b.get(field, 0))
    return sum(int(a.get(field, {}).get(k, {}).get("ns", 0)) - int(b.get(field, {}).get(k, {}).get("ns", 0))
               for k in keys)


def breakdown(before: dict, after: dict, frames: int | None = None) -> dict:
    """Milliseconds per ensemble request: ``networks`` (per network), ``stages_with_bls`` (per
    Python stage, the networks it calls included), ``stages_own`` (all stages, those calls taken
    out), ``queues_and_hops`` (Triton's request time less networks and stages' own work) and
    ``triton_request`` (the ensembles' request time); ``requests``: how many it averages.
    ``before``/``after``: ``FaceSwapClient.statistics()`` snapshots ({model: Triton's stats}).
    ``frames``: average per video frame instead (a frame may make two ensemble calls: the
    detection for tracking and the swap); ``unit`` says which."""
    requests = sum(_delta(before, after, m, "inference_count", ()) for m in ENSEMBLES)
    if requests <= 0:
        return {"requests": 0}
    unit, count = ("frame", frames) if frames else ("request", requests)

    def compute_ms(model: str) -> float:
        return _delta(before, after, model, "inference_stats", _COMPUTE) / 1e6

    nets = {m: compute_ms(m) for m in NETWORKS}
    det_calls = _delta(before, after, "face_detector", "execution_count", ())
    det_bls = nets["face_detector"] * max(det_calls - requests, 0) / det_calls if det_calls > 0 else 0.0
    bls = nets["face_recognizer"] + nets["face_swapper"] + det_bls
    stages = {m: compute_ms(m) for m in STAGES if _delta(before, after, m, "execution_count", ()) > 0}
    own = sum(stages.values()) - bls
    triton = sum(_delta(before, after, m, "inference_stats", ("success",)) for m in ENSEMBLES) / 1e6
    per = 1.0 / count
    return {"requests": requests, "unit": unit, "count": count,
            "networks": {m: round(v * per, 2) for m, v in nets.items() if v},
            "stages_with_bls": {m: round(v * per, 2) for m, v in stages.items()},
            "stages_own": round(own * per, 2),
            "triton_request": round(triton * per, 2),
            "queues_and_hops": round(max(triton - sum(nets.values()) - own, 0.0) * per, 2)}


def describe(b: dict) -> str:
    """One line: the networks, the stages' own work, queues and hops, per request."""
    if not b.get("requests"):
        return "no ensemble request counted"
    nets = sum(b["networks"].values())
    share = f"{100 * nets / b['triton_request']:.0f}%" if b["triton_request"] else "-"
    return (f"per {b['unit']} in Triton {b['triton_request']:.1f} ms: networks {nets:.1f} ms ("
            + ", ".join(f"{k.removeprefix('face_')} {v:.1f}" for k, v in b["networks"].items())
            + f"), Python stages' own work {b['stages_own']:.1f} ms (with their BLS calls: "
            + ", ".join(f"{k} {v:.1f}" for k, v in b["stages_with_bls"].items())
            + f"), queues and hops {b['queues_and_hops']:.1f} ms; networks {share} of it")
