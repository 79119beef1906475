"""int8 post-training quantization in the TFLite scheme, and the numpy int8 reference the C code must match.

Scheme (TFLite "full integer", as in ``tflite::reference_integer_ops::FullyConnected``):

- weights: per output channel, symmetric int8 in ``[-127, 127]``, zero point 0, ``s_w[o] = max|W[o]| / 127``;
- activations: per tensor, asymmetric int8 ``real = s * (q - zp)``, range calibrated on visited states and
  always containing 0; hidden layers fuse ReLU as the clamp ``[zp, 127]``;
- bias: int32 at scale ``s_in * s_w[o]``; the input zero point is folded in (``b - zp_in * sum W[o]``), an
  exact integer identity (CMSIS-NN does the same);
- requantization: ``M[o] = s_in * s_w[o] / s_out`` as a Q31 multiplier + shift (``QuantizeMultiplier``),
  applied with ``SaturatingRoundingDoublingHighMul`` then ``RoundingDivideByPOT`` (gemmlowp rounding).

The model input is per *dimension*: ``q_i = round((x_i - c_i) / s_i)`` with centre and step calibrated per
observation dimension. That per-dimension affine map *is* the observation normalization: its steps ``s_i``
fold into the first layer's weights (``W_e = W' diag(s)``) and its centres into that layer's bias
(``b_e = b' + W' c``), so the graph from the int8 input on is a plain TFLite FC stack with input scale 1 and
zero point 0, and the device spends one subtract-multiply per input dimension.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from robot_rl.hardware.mcu.student import FloatModel

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


@dataclass
class QuantConfig:
    """Calibration and the error gate."""

    calibration_percentile: float = 100.0
    """Activation/input ranges from this percentile of |values| per side (100 = min/max of the calibration set)."""
    range_margin: float = 0.05
    """Widen every calibrated range by this fraction on each side (headroom for states just outside it)."""
    gate_max_abs: float = 0.1
    """Gate: max |int8 - float| normalised action error (actions span [-1, 1]) on held-out visited states."""
    gate_p99_abs: float = 0.03
    """Gate: 99th percentile of |int8 - float| normalised action error."""
    min_input_step: float = 1e-4
    """Floor of a per-dimension input step (dims constant during calibration)."""


@dataclass
class QLayer:
    weight: np.ndarray
    """``(out, in)`` int8, per-channel symmetric."""
    bias: np.ndarray
    """``(out,)`` int32 at scale ``s_in * s_w[o]``, input zero point folded in."""
    multiplier: np.ndarray
    """``(out,)`` int32 Q31 requantization multipliers."""
    shift: np.ndarray
    """``(out,)`` int32 exponents (> 0: left shift, < 0: rounding right shift)."""
    out_zero_point: int
    """Output tensor zero point."""
    out_scale: float
    """Output tensor scale."""
    act_min: int
    """Lower clamp (the output zero point when ReLU is fused, else -128)."""
    act_max: int
    """Upper clamp (127)."""
    relu: bool
    """ReLU fused (hidden layers): values below the zero point are the activation, not saturation."""
    weight_scale: np.ndarray
    """``(out,)`` float32 per-channel weight scales ``s_w`` (kept for export to a .tflite file)."""
    in_scale: float
    """Input tensor scale (1.0 for layer 0, whose input is the per-dimension quantized observation)."""
    in_zero_point: int
    """Input tensor zero point (folded into ``bias``; ``bias + in_zero_point * sum(weight)`` undoes it)."""


@dataclass
class QuantizedModel:
    in_center: np.ndarray
    """``(D,)`` float32 per-dimension input centres ``c``."""
    in_inv_step: np.ndarray
    """``(D,)`` float32 ``1 / s`` per input dimension (the device multiplies)."""
    layers: list[QLayer]
    """Hidden layers (ReLU fused) then the linear output layer."""
    action_scale: np.ndarray
    """``(A,)`` float32 half-range of the env action bounds."""
    action_bias: np.ndarray
    """``(A,)`` float32 mid-point of the env action bounds."""
    ranges: list[tuple[float, float]] = field(default_factory=list)
    """Calibrated real ranges of each layer's output (kept so QAT can train against the same grid)."""
    in_step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """``(D,)`` float32 per-dimension input steps ``s``."""

    @property
    def obs_dim(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    @property
    def widths(self) -> list[int]:
        return [self.obs_dim] + [int(layer.weight.shape[0]) for layer in self.layers]

    def model_hash(self) -> str:
        """SHA-256 (16 hex) over every array and constant that defines the device's behaviour."""
        h = hashlib.sha256()
        for arr in (self.in_center, self.in_inv_step, self.action_scale, self.action_bias):
            h.update(np.ascontiguousarray(arr, np.float32).tobytes())
        for layer in self.layers:
            for arr, dt in ((layer.weight, np.int8), (layer.bias, np.int32), (layer.multiplier, np.int32),
                            (layer.shift, np.int32)):
                h.update(np.ascontiguousarray(arr, dt).tobytes())
            h.update(np.array([layer.out_zero_point, layer.act_min, layer.act_max], np.int32).tobytes())
            h.update(np.array([layer.out_scale], np.float32).tobytes())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------- TFLite fixed point
def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real = q * 2^(shift - 31)`` with ``q`` in ``[2^30, 2^31)``."""
    if real < 0 or not math.isfinite(real):
        raise ValueError(f"requantization multiplier must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)  # real = q * 2^shift, q in [0.5, 1)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # std::round: half away from zero (q > 0)
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:  # underflows to zero, as TFLite does
        return 0, 0
    if shift > 30:
        raise ValueError(f"requantization multiplier {real} too large for a Q31 multiplier")
    return q_fixed, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values held in int64 arrays."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b  # |ab| <= 2^62 fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C's truncating division by 2^31
    return np.where((a == b) & (a == INT32_MIN), INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: round-half-away-from-zero ``x / 2^exponent``, exponent in [0, 31]."""
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask  # two's complement low bits, as in C on int32
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (the reference kernels' requantization)."""
    acc = np.asarray(acc, np.int64)
    left = np.maximum(shift, 0).astype(np.int64)
    right = np.maximum(-np.asarray(shift), 0).astype(np.int64)
    scaled = acc * (np.int64(1) << left)
    if (scaled > INT32_MAX).any() or (scaled < INT32_MIN).any():
        raise OverflowError("accumulator << left shift overflows int32 (the C code would be undefined here)")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right)


# ----------------------------------------------------------------------------------- reference forward
def quantize_input(qm: QuantizedModel, obs: np.ndarray) -> np.ndarray:
    """``(N, D)`` float obs -> int8 input, with exactly the C wrapper's float32 operations."""
    if not np.isfinite(obs).all():
        raise ValueError("non-finite observation (the C wrapper returns an error and leaves the action untouched)")
    v = (np.asarray(obs, np.float32) - qm.in_center) * qm.in_inv_step  # float32 subtract, then multiply
    v = np.minimum(np.maximum(v, np.float32(-128.0)), np.float32(127.0))
    half = np.float32(0.5)
    return np.where(v >= 0, v + half, v - half).astype(np.int32).astype(np.int8)  # C cast truncates


def int8_forward(qm: QuantizedModel, x_q: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
    """The numpy int8 reference: ``(N, D)`` int8 -> ``(N, A)`` int8. ``stats`` collects saturation counts."""
    h = np.asarray(x_q, np.int8).astype(np.int64)
    for i, layer in enumerate(qm.layers):
        acc = h @ layer.weight.astype(np.int64).T + layer.bias.astype(np.int64)  # (N, out) exact int32 sums
        if (acc > INT32_MAX).any() or (acc < INT32_MIN).any():
            raise OverflowError(f"layer {i}: int32 accumulator overflow")
        out = multiply_by_quantized_multiplier(acc, layer.multiplier, layer.shift) + layer.out_zero_point
        if stats is not None:  # saturation at the int8 grid (the ReLU clamp at zp is the activation, not a clip)
            low = 0 if layer.relu else int((out < -128).sum())
            stats[f"layer{i}_clipped"] = stats.get(f"layer{i}_clipped", 0) + int((out > 127).sum()) + low
            stats[f"layer{i}_values"] = stats.get(f"layer{i}_values", 0) + out.size
        h = np.clip(out, layer.act_min, layer.act_max)
    return h.astype(np.int8)


def dequantize_output(qm: QuantizedModel, y_q: np.ndarray) -> np.ndarray:
    """int8 output -> clipped normalised action in ``[-1, 1]`` (float32, the C wrapper's operations)."""
    last = qm.layers[-1]
    y = (np.asarray(y_q, np.int32) - last.out_zero_point).astype(np.float32) * np.float32(last.out_scale)
    return np.minimum(np.maximum(y, np.float32(-1.0)), np.float32(1.0))


def act_float_wrapper(qm: QuantizedModel, obs: np.ndarray) -> np.ndarray:
    """What ``<name>_act`` computes: ``(N, D)`` float obs -> ``(N, A)`` env-space float32 actions."""
    y = dequantize_output(qm, int8_forward(qm, quantize_input(qm, obs)))
    return y * qm.action_scale + qm.action_bias


def int8_normalised(qm: QuantizedModel, obs: np.ndarray) -> np.ndarray:
    """``(N, D)`` float obs -> the int8 student's clipped normalised action ``(N, A)``."""
    return dequantize_output(qm, int8_forward(qm, quantize_input(qm, obs)))


# ----------------------------------------------------------------------------------- calibration + PTQ
def _range(values: np.ndarray, cfg: QuantConfig, include_zero: bool) -> tuple[float, float]:
    lo = float(np.percentile(values, 100.0 - cfg.calibration_percentile))
    hi = float(np.percentile(values, cfg.calibration_percentile))
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = cfg.range_margin * (hi - lo)
    lo, hi = (lo - pad if lo < 0 else lo), hi + pad
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    return lo, hi


def calibrate(model: FloatModel, states: np.ndarray, cfg: QuantConfig) -> tuple[np.ndarray, np.ndarray,
                                                                                 list[tuple[float, float]]]:
    """Per-dimension input ranges -> (centre ``(D,)``, step ``(D,)``) and each layer's output range."""
    states = np.asarray(states, np.float32)
    lo = np.percentile(states, 100.0 - cfg.calibration_percentile, axis=0)
    hi = np.percentile(states, cfg.calibration_percentile, axis=0)
    pad = cfg.range_margin * (hi - lo)
    lo, hi = lo - pad, hi + pad
    center = ((lo + hi) / 2).astype(np.float32)
    step = np.maximum((hi - lo) / 254.0, cfg.min_input_step).astype(np.float32)  # +-127 steps cover the range
    ranges = [_range(a, cfg, include_zero=True) for a in model.activations(states)]
    return center, step, ranges


def quantize(model: FloatModel, calibration_states: np.ndarray, cfg: QuantConfig,
             ranges: list[tuple[float, float]] | None = None,
             input_grid: tuple[np.ndarray, np.ndarray] | None = None) -> QuantizedModel:
    """PTQ of ``model``; ``ranges``/``input_grid`` reuse an earlier calibration (QAT trains against it)."""
    center, step, calib_ranges = calibrate(model, calibration_states, cfg)
    if input_grid is not None:
        center, step = input_grid
    ranges = calib_ranges if ranges is None else ranges
    if len(ranges) != len(model.weights):
        raise ValueError(f"{len(ranges)} activation ranges for {len(model.weights)} layers")
    # Fold the input grid into layer 0: real input x = c + s * q, so W x + b = (W diag(s)) q + (b + W c).
    w64 = [w.astype(np.float64) for w in model.weights]
    b64 = [b.astype(np.float64) for b in model.biases]
    b64[0] = b64[0] + w64[0] @ center.astype(np.float64)
    w64[0] = w64[0] * step.astype(np.float64)[None, :]
    in_scale, in_zp = 1.0, 0  # layer 0's input tensor is q itself
    layers = []
    n = len(w64)
    for i, (w, b, (lo, hi)) in enumerate(zip(w64, b64, ranges)):
        w_absmax = np.abs(w).max(axis=1)  # (out,)
        # Scales are float32, as a .tflite file stores them; multipliers are derived from them in double,
        # as TFLite's PopulateConvolutionQuantizationParams does, so a TFLite interpreter agrees bit for bit.
        s_w = np.where(w_absmax > 0, w_absmax / 127.0, 1.0).astype(np.float32).astype(np.float64)
        w_q = np.clip(np.floor(np.abs(w) / s_w[:, None] + 0.5) * np.sign(w), -127, 127).astype(np.int8)
        s_acc = in_scale * s_w
        b_q = np.floor(np.abs(b) / s_acc + 0.5) * np.sign(b)
        b_fold = b_q - in_zp * w_q.astype(np.int64).sum(axis=1)
        if (np.abs(b_fold) > 2 ** 30).any():
            raise OverflowError(f"layer {i}: bias does not fit the int32 accumulator")
        out_scale = float(np.float32((hi - lo) / 255.0))
        out_zp = int(np.clip(np.floor(-128.0 - lo / out_scale + 0.5), -128, 127))
        mult, shift = zip(*(quantize_multiplier(float(s / out_scale)) for s in s_acc))
        relu = i < n - 1
        layers.append(QLayer(w_q, b_fold.astype(np.int32), np.asarray(mult, np.int32), np.asarray(shift, np.int32),
                             out_zp, out_scale, out_zp if relu else -128, 127, relu,
                             s_w.astype(np.float32), float(in_scale), int(in_zp)))
        # worst-case accumulator * 2^left must fit int32 (the left shift is UB on overflow in C)
        bound = np.abs(w_q.astype(np.int64)).sum(axis=1) * 255 + np.abs(b_fold)
        if (bound * (np.int64(1) << np.maximum(layers[-1].shift, 0).astype(np.int64)) > INT32_MAX).any():
            raise OverflowError(f"layer {i}: accumulator range times the left shift can overflow int32")
        in_scale, in_zp = out_scale, out_zp
    inv = (1.0 / step.astype(np.float64)).astype(np.float32)
    return QuantizedModel(center.astype(np.float32), inv, layers, model.action_scale, model.action_bias,
                          list(ranges), step.astype(np.float32))


# ----------------------------------------------------------------------------------- metrics
def quantization_report(model: FloatModel, qm: QuantizedModel, states: np.ndarray) -> dict[str, float]:
    """Error of the int8 student vs the float student on ``states`` (normalised action units) + clip fraction."""
    states = np.asarray(states, np.float32)
    ref = model.forward(states)
    stats: dict[str, float] = {}
    got = dequantize_output(qm, int8_forward(qm, quantize_input(qm, states), stats))
    err = np.abs(got - ref).ravel()
    v = (states - qm.in_center) * qm.in_inv_step
    in_clipped = int(((v > 127.5) | (v < -128.5)).sum())
    clipped = in_clipped + sum(int(stats[f"layer{i}_clipped"]) for i in range(len(qm.layers)))
    values = states.size + sum(int(stats[f"layer{i}_values"]) for i in range(len(qm.layers)))
    out = {"max_abs_err": float(err.max()), "p99_abs_err": float(np.percentile(err, 99)),
           "mean_abs_err": float(err.mean()), "clip_fraction": clipped / values,
           "clip_fraction_input": in_clipped / states.size, "states": int(len(states))}
    for i in range(len(qm.layers)):
        out[f"clip_fraction_layer{i}"] = stats[f"layer{i}_clipped"] / stats[f"layer{i}_values"]
    return out


def gate_passed(report: dict[str, float], cfg: QuantConfig) -> bool:
    return report["max_abs_err"] <= cfg.gate_max_abs and report["p99_abs_err"] <= cfg.gate_p99_abs


def synthetic_model(widths: list[int], seed: int = 0, n_states: int = 512) -> tuple[QuantizedModel, np.ndarray]:
    """A random ReLU MLP of ``widths`` (He-initialised, small biases) quantized on Gaussian states, and those
    states ``(n_states, widths[0])``: kernel tests and per-shape instruction counts, where only the shape and
    the integer arithmetic matter, not what the network learnt."""
    rng = np.random.default_rng(seed)
    weights = [(rng.normal(size=(o, i)) * np.sqrt(2.0 / i)).astype(np.float32) for i, o in zip(widths[:-1], widths[1:])]
    biases = [(0.1 * rng.normal(size=o)).astype(np.float32) for o in widths[1:]]
    act = np.ones(widths[-1], np.float32)
    model = FloatModel(weights, biases, -act, act)
    states = rng.normal(size=(n_states, widths[0])).astype(np.float32)
    return quantize(model, states, QuantConfig()), states
