"""Where a request's time goes inside Triton, from two snapshots of Triton's own statistics.

Triton counts, per model, the compute time of its executions (input + infer + output). Each entry
point (``face_swap``, ``face_swap_kps``, ``face_embed``) is one Python model that calls every
network through BLS, so its compute time includes the networks', and its own work (decode,
alignment, paste-back, watermark, encode, and the BLS hops) is its compute time less theirs.
The stages also report their own milliseconds per step in each result (``stage_ms``):
``steps`` averages those.
"""

from __future__ import annotations

#: Every network an entry point calls through BLS, the content gate's detector included (its
#: compute is a network's, not the stage's own work)
NETWORKS = ("face_detector", "face_recognizer", "face_swapper", "content_detector")
#: The entry points, each a Python model (the names clients call)
STAGES = ENTRY_POINTS = ("face_swap", "face_embed", "face_swap_kps")
_COMPUTE = ("compute_input", "compute_infer", "compute_output")


def _delta(before: dict, after: dict, model: str, field: str, keys: tuple[str, ...]) -> int:
    a, b = after.get(model, {}), before.get(model, {})
    if field in ("inference_count", "execution_count"):
        return int(a.get(field, 0)) - int(b.get(field, 0))
    return sum(int(a.get(field, {}).get(k, {}).get("ns", 0)) - int(b.get(field, {}).get(k, {}).get("ns", 0))
               for k in keys)


def breakdown(before: dict, after: dict, frames: int | None = None) -> dict:
    """Milliseconds per request: ``networks`` (per network), ``stages_with_bls`` (per entry
    point, the networks it calls included), ``stages_own`` (all entry points, those calls taken
    out), ``queues_and_hops`` (Triton's request time less networks and stages' own work) and
    ``triton_request`` (the entry points' request time); ``requests``: how many it averages.
    ``before``/``after``: ``FaceSwapClient.statistics()`` snapshots ({model: Triton's stats}).
    ``frames``: average per video frame instead (a frame may make two calls: the
    detection for tracking and the swap); ``unit`` says which."""
    requests = sum(_delta(before, after, m, "inference_count", ()) for m in ENTRY_POINTS)
    if requests <= 0:
        return {"requests": 0}
    unit, count = ("frame", frames) if frames else ("request", requests)

    def compute_ms(model: str) -> float:
        return _delta(before, after, model, "inference_stats", _COMPUTE) / 1e6

    nets = {m: compute_ms(m) for m in NETWORKS}
    stages = {m: compute_ms(m) for m in STAGES if _delta(before, after, m, "execution_count", ()) > 0}
    own = sum(stages.values()) - sum(nets.values())
    triton = sum(_delta(before, after, m, "inference_stats", ("success",)) for m in ENTRY_POINTS) / 1e6
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
        return "no request counted"
    nets = sum(b["networks"].values())
    share = f"{100 * nets / b['triton_request']:.0f}%" if b["triton_request"] else "-"
    return (f"per {b['unit']} in Triton {b['triton_request']:.1f} ms: networks {nets:.1f} ms ("
            + ", ".join(f"{k.removeprefix('face_')} {v:.1f}" for k, v in b["networks"].items())
            + f"), Python stages' own work {b['stages_own']:.1f} ms (with their BLS calls: "
            + ", ".join(f"{k} {v:.1f}" for k, v in b["stages_with_bls"].items())
            + f"), queues and hops {b['queues_and_hops']:.1f} ms; networks {share} of it")


def steps(results) -> dict[str, float]:
    """Mean milliseconds per step over ``results`` (``client.SwapResult``s, or the ``stage_ms``
    dicts of the stages' answers): decode, detect, align, swap, paste, quality, watermark,
    encode (a step's time includes the networks it calls); {} when none reported them."""
    sums: dict[str, float] = {}
    n = 0
    for r in results:
        ms = r if isinstance(r, dict) else getattr(r, "stage_ms", {})
        if not ms:
            continue
        n += 1
        for k, v in ms.get("steps", {}).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: round(v / n, 2) for k, v in sums.items()} if n else {}


def describe_steps(mean: dict[str, float]) -> str:
    """One line: the stage's milliseconds per step."""
    if not mean:
        return "no step times reported"
    return "steps inside the stage (ms, networks included): " + ", ".join(f"{k} {v:.1f}" for k, v in mean.items())
