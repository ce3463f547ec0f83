"""A network output that is not finite in a reduced precision is computed again in f32, once
(``pipeline.engines.checked``); the served NaN case is tests/server/test_model_failures.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engines import OutputNotFinite, checked


def test_reduced_precision_nan_is_recomputed_in_f32_once():
    calls, told = [], []

    def bf16(feeds):
        calls.append("bf16")
        return [np.array([np.nan, 1.0], np.float32)]

    def f32(feeds):
        calls.append("f32")
        return [np.array([0.5, 1.0], np.float32)]

    run = checked(bf16, ["out"], "face_swapper", "bf16", lambda: f32, told.append)
    assert run({})[0].tolist() == [0.5, 1.0] and run({})[0].tolist() == [0.5, 1.0]
    assert calls == ["bf16", "f32", "bf16", "f32"] and len(told) == 2 and "recomputed in f32" in told[0]
    with pytest.raises(OutputNotFinite, match="model_output_invalid: face_swapper"):
        checked(bf16, ["out"], "face_swapper", "f32")({})
