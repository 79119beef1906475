"""int8 PTQ in the TFLite scheme: fixed-point primitives, the error gate, clip fraction, QAT, TFLM agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest

from robot_rl.hardware.mcu.qat import QATConfig, quantization_aware_finetune
from robot_rl.hardware.mcu.quantize import (INT32_MAX, INT32_MIN, QuantConfig, gate_passed, int8_forward,
                                            multiply_by_quantized_multiplier, quantization_report, quantize,
                                            quantize_input, quantize_multiplier, rounding_divide_by_pot,
                                            saturating_rounding_doubling_high_mul)


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _srdhm_gemmlowp(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul, transcribed line by line with Python ints."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def _rdbpot_gemmlowp(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def test_fixed_point_primitives_match_gemmlowp():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 4000, dtype=np.int64),
                        [INT32_MIN, INT32_MAX, 0, -1, 1, 1 << 30, -(1 << 30)]])
    b = np.concatenate([rng.integers(1 << 30, INT32_MAX, 4000, dtype=np.int64),
                        [INT32_MIN, INT32_MAX, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30]])
    got = saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [_srdhm_gemmlowp(int(x), int(y)) for x, y in zip(a, b)]
    e = rng.integers(0, 32, len(a))
    got = rounding_divide_by_pot(got, e)
    ref = [_rdbpot_gemmlowp(_srdhm_gemmlowp(int(x), int(y)), int(k)) for x, y, k in zip(a, b, e)]
    assert got.tolist() == ref
    # ties round half away from zero: 5/2 -> 3, -5/2 -> -3, 3/2 -> 2, -3/2 -> -2
    assert rounding_divide_by_pot(np.array([5, -5, 3, -3]), np.array([1, 1, 1, 1])).tolist() == [3, -3, 2, -2]


def test_quantize_multiplier_is_tflite_q31():
    for real in (1e-6, 0.0123, 0.5, 0.75, 0.999999999, 1.0, 3.7):
        q, shift = quantize_multiplier(real)
        assert (1 << 30) <= q < (1 << 31)
        assert math.isclose(q * 2.0 ** (shift - 31), real, rel_tol=2 ** -30)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12) == (0, 0)  # below 2^-31 underflows to zero, as in TFLite
    with pytest.raises(ValueError):
        quantize_multiplier(-1.0)
    # the requantized product tracks the real product within one unit
    acc = np.arange(-100_000, 100_000, 997)
    q, shift = quantize_multiplier(0.00321)
    got = multiply_by_quantized_multiplier(acc, np.int64(q), np.int64(shift))
    assert np.abs(got - acc * 0.00321).max() <= 0.5 + 1e-6


def test_weights_per_channel_symmetric_and_bias_int32(distilled):
    qm, model = distilled.qm, distilled.model
    for i, layer in enumerate(qm.layers):
        assert layer.weight.dtype == np.int8 and layer.bias.dtype == np.int32
        assert layer.weight.min() >= -127  # symmetric: -128 never used
        assert (np.abs(layer.weight).max(axis=1) == 127).all()  # each channel uses its own full range
        assert layer.weight_scale.shape == (layer.weight.shape[0],)
    # dequantized layer-0 weights reproduce W' diag(s) (the input grid folded into the first layer)
    w_e = model.weights[0] * qm.in_step[None, :]
    deq = qm.layers[0].weight * qm.layers[0].weight_scale[:, None]
    assert np.abs(deq - w_e).max() <= 0.5 * qm.layers[0].weight_scale.max() + 1e-7


def test_error_within_gate_and_clip_fraction(distilled):
    rep = quantization_report(distilled.model, distilled.qm, distilled.holdout)
    cfg = QuantConfig()
    assert gate_passed(rep, cfg), rep
    assert rep["max_abs_err"] < cfg.gate_max_abs and rep["p99_abs_err"] < cfg.gate_p99_abs
    assert 0.0 <= rep["clip_fraction"] < 0.01
    # states far outside the calibration range saturate, and the report says so
    far = distilled.holdout * 5.0
    assert quantization_report(distilled.model, distilled.qm, far)["clip_fraction_input"] > 0.2


def test_qat_recovers_a_clipping_grid(distilled):
    """Ranges from the 90th percentile clip hard: PTQ fails the gate, QAT on the same grid recovers most of it."""
    tight = QuantConfig(calibration_percentile=90.0, range_margin=0.0)
    ptq = quantize(distilled.model, distilled.calib, tight)
    before = quantization_report(distilled.model, ptq, distilled.holdout)
    assert not gate_passed(before, tight) and before["clip_fraction"] > 0.01
    states = np.concatenate([distilled.calib, distilled.result.data.states])
    tuned = quantization_aware_finetune(distilled.model, ptq, states, QATConfig(steps=600, lr=3e-4), tight)
    after = quantization_report(distilled.model, tuned, distilled.holdout)
    assert after["mean_abs_err"] < 0.6 * before["mean_abs_err"], (before, after)
    assert after["p99_abs_err"] < before["p99_abs_err"]
    assert tuned.ranges == ptq.ranges and np.array_equal(tuned.in_center, ptq.in_center)  # same grid


def test_tflite_micro_interpreter_agrees_bit_for_bit(distilled):
    pytest.importorskip("tflite_micro", reason="tflite-micro not installed (pip install tflite-micro)")
    from robot_rl.hardware.mcu.tflm import tflm_check

    res = tflm_check(distilled.qm, distilled.holdout, seed=3, n_random=1000)
    assert res["bit_exact"], res
    assert res["inputs"] == 1000 + len(distilled.holdout)


def test_quantize_input_refuses_non_finite(distilled):
    obs = distilled.holdout[:3].copy()
    obs[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        quantize_input(distilled.qm, obs)
    assert int8_forward(distilled.qm, quantize_input(distilled.qm, distilled.holdout[:3])).dtype == np.int8
