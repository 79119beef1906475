"""Export-time weight layout and requantization constants for the Cortex-M DSP kernel, plus a numpy emulator of
that kernel's exact integer arithmetic (so the layout is checked on any host, not only under QEMU).

**Row pairs in one word.** Two output rows ``a`` and ``b`` share each 32-bit weight word. For the two inputs
``(p, q)`` held by one widened input word ``X = (x_p, x_q)`` (two int16 lanes), the word's bytes are
``[a_p, b_p - (a_p < 0), a_q, b_q - (a_q < 0)]``. Per word the kernel runs::

    acc_hi = SMLAD(W, X, acc_hi)          # lanes of W read as int16: 256 * b + a (a's sign borrow undone)
    acc_a  = SMLAD(SXTB16(W), X, acc_a)   # lanes (a_p, a_q) sign-extended

so ``acc_a`` is row ``a``'s dot product and ``acc_hi - acc_a = 256 * (row b's dot product)``: four MACs for
one load, one SXTB16 and two SMLADs. SMLAD wraps modulo 2^32, so ``acc_hi`` may overflow on the way; the
difference is exact whenever ``|row b's sum + bias| < 2^23``, which :func:`pair_bound_ok` checks per layer
from the actual weights (``|x| <= 128``); a model that fails it gets the portable kernel.

**Input order.** The input vector is widened once per layer, four int8 at a time, with ``SXTB16`` (bytes 0, 2)
and ``SXTB16 ..., ROR #8`` (bytes 1, 3): widened word ``2g`` holds inputs ``(4g, 4g + 2)``, word ``2g + 1``
holds ``(4g + 1, 4g + 3)``. Weights are laid out in that order, so no input shuffle is needed.

**One stream per layer.** Rows are paired ``(0, 1), (2, 3), ...`` (a zero phantom row completes an odd count,
its output lands in the scratch pad). The kernel makes passes over two pairs (four rows) and, for an odd pair
count, one last pass over one pair. Each pass reads, in order, from one pointer: its accumulator starts
(``acc_a, acc_hi`` per pair, the bias folded in: ``bias_a`` and ``bias_a + 256 bias_b`` mod 2^32), its weight
words (per widened input word ``j``: ``pair_k[j], pair_{k+1}[j]``, one ``LDRD``; a lone pair: ``pair[j]``), then
one word with the rows' ``e`` in its bytes and per row ``(multiplier, 2^(e-1))``.

**Requantization.** TFLite's ``MultiplyByQuantizedMultiplier`` with ``shift = -e``, ``e >= 1`` (every channel
of a layer whose real multiplier is below 1/2, the usual case) is, exactly,
``(SMMLAR(2 * acc, m, 2^(e-1)) + (acc >> 31)) >> e``: ``SMMLAR`` rounds ``2 acc m / 2^32`` half up, which equals
gemmlowp's doubling high multiply, and adding ``2^(e-1) - (acc < 0)`` before the arithmetic shift is its
round-half-away-from-zero division (the sign of the high product is the sign of ``acc`` or it is 0, where both
roundings agree). A model with a channel outside that range gets the portable kernel (:func:`supported`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.hardware.mcu.quantize import QLayer, QuantizedModel

PAIR_LIMIT = 1 << 23
"""``|row b's accumulator| < 2^23`` keeps ``256 * acc_b`` inside int32, so the wrapped difference is exact."""
INPUT_ABS_MAX = 128
"""Largest |int8 input| (the zero point is folded into the bias, so inputs are raw int8)."""


def pad4(n: int) -> int:
    return (n + 3) // 4 * 4


def acc_bound(layer: QLayer) -> np.ndarray:
    """``(out,)`` worst-case |accumulator| (bias included) over all int8 inputs."""
    return np.abs(layer.weight.astype(np.int64)).sum(axis=1) * INPUT_ABS_MAX + np.abs(layer.bias.astype(np.int64))


def pair_bound_ok(layer: QLayer) -> bool:
    """Whether the odd rows (the ``b`` rows of each pair) fit the wrapped-difference bound."""
    return bool((acc_bound(layer)[1::2] < PAIR_LIMIT).all())


def fast_requant_ok(qm: QuantizedModel) -> bool:
    """Every channel of every layer has ``shift`` in ``[-31, -1]`` and ``2 * acc`` fits int32."""
    return all(bool(((layer.shift <= -1) & (layer.shift >= -31)).all() and (acc_bound(layer) < (1 << 30)).all())
               for layer in qm.layers)


def supported(qm: QuantizedModel) -> bool:
    """Whether the DSP kernel runs ``qm`` bit-exactly: the pair bound, the requantization range, and every clamp
    ``[-128, 127]`` (a fused ReLU's clamp at its zero point is SSAT's floor when the zero point is -128, which
    calibration gives: ReLU outputs start at 0)."""
    clamps = all(layer.act_min == -128 and layer.act_max == 127 for layer in qm.layers)
    return clamps and fast_requant_ok(qm) and all(pair_bound_ok(layer) for layer in qm.layers)


@dataclass
class PackedLayer:
    """One layer in the DSP kernel's layout."""

    stream: np.ndarray
    """``(n,)`` uint32: every pass's accumulator starts, weight words and requantization constants, in the
    kernel's read order (module docstring)."""
    in_words: int
    """Widened input words: ``pad4(in) / 2`` (even)."""
    passes: int
    """Passes over two row pairs (four rows)."""
    tail: bool
    """One more pass over a last, odd pair (two rows)."""


def _bytes_to_words(b0: np.ndarray, b1: np.ndarray, b2: np.ndarray, b3: np.ndarray) -> np.ndarray:
    u = [np.asarray(b, np.int64) & 0xFF for b in (b0, b1, b2, b3)]
    return (u[0] | (u[1] << 8) | (u[2] << 16) | (u[3] << 24)).astype(np.uint32)


def _lane_inputs(in_words: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices in the low and high lane of each widened input word ``(in_words,)``."""
    j = np.arange(in_words)
    p = 4 * (j // 2) + (j % 2)
    return p, p + 2


def _u32(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, np.int64) & 0xFFFFFFFF).astype(np.uint32)


def pack_layer(layer: QLayer) -> PackedLayer:
    """The layer's stream; needs :func:`pair_bound_ok` and the fast requantization range (:func:`supported`)."""
    if not pair_bound_ok(layer):
        raise ValueError("this layer's odd rows exceed the paired kernel's accumulator bound (2^23)")
    if not ((layer.shift <= -1) & (layer.shift >= -31)).all():
        raise ValueError("the DSP kernel's requantization needs every shift in [-31, -1]")
    out, inp = layer.weight.shape
    in_pad = pad4(inp)
    pairs = (out + 1) // 2
    w = np.zeros((2 * pairs, in_pad), np.int64)  # (rows incl. phantom, in_pad)
    w[:out, :inp] = layer.weight
    bias = np.zeros(2 * pairs, np.int64)
    bias[:out] = layer.bias
    mult = np.zeros(2 * pairs, np.int64)  # phantom row: multiplier 0, e = 1 (any value will do)
    mult[:out] = layer.multiplier
    e = np.ones(2 * pairs, np.int64)
    e[:out] = -layer.shift.astype(np.int64)
    in_words = in_pad // 2
    p, q = _lane_inputs(in_words)
    a_p, a_q, b_p, b_q = w[0::2][:, p], w[0::2][:, q], w[1::2][:, p], w[1::2][:, q]  # (pairs, in_words)
    pair_words = _bytes_to_words(a_p, b_p - (a_p < 0), a_q, b_q - (a_q < 0))  # (pairs, in_words)
    init = np.stack([bias[0::2], bias[0::2] + 256 * bias[1::2]], axis=1)  # (pairs, 2) acc_a, acc_hi
    rq = np.stack([mult, np.int64(1) << (e - 1)], axis=1)  # (rows, 2)
    stream = []
    for k in range(0, pairs, 2):
        ks = [k, k + 1] if k + 1 < pairs else [k]
        rows = [r for kk in ks for r in (2 * kk, 2 * kk + 1)]
        e_word = sum(int(e[r]) << (8 * i) for i, r in enumerate(rows))
        stream += [_u32(init[ks].ravel()), np.stack([pair_words[kk] for kk in ks], axis=1).ravel(),
                   np.array([e_word], np.uint32), _u32(rq[rows].ravel())]
    return PackedLayer(np.concatenate(stream).astype(np.uint32), in_words, pairs // 2, bool(pairs % 2))


# ----------------------------------------------------------------------------------- emulator
def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((np.asarray(v, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _lanes(words: np.ndarray, sign_extend_bytes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two lanes of uint32 words: the int16 halfwords, or SXTB16's (bytes 0 and 2 sign-extended)."""
    w = np.asarray(words, np.uint32).astype(np.int64)
    if sign_extend_bytes:
        lo, hi = w & 0xFF, (w >> 16) & 0xFF
        return np.where(lo > 127, lo - 256, lo), np.where(hi > 127, hi - 256, hi)
    lo, hi = w & 0xFFFF, (w >> 16) & 0xFFFF
    return np.where(lo > 32767, lo - 65536, lo), np.where(hi > 32767, hi - 65536, hi)


def smmlar(a: np.ndarray, b: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """ARM ``SMMLAR``: ``(acc * 2^32 + a * b + 2^31) >> 32`` on int32 values.

    ``acc * 2^32`` is a multiple of 2^32, so this is ``acc + ((a * b + 2^31) >> 32)``; ``|a * b| < 2^62``."""
    a, b, acc = (np.asarray(v, np.int64) for v in (a, b, acc))
    return _wrap32(acc + ((a * b + (1 << 31)) >> 32))


def fast_requant(acc: np.ndarray, multiplier: np.ndarray, half: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The kernel's requantization (module docstring); equals ``multiply_by_quantized_multiplier(acc, m, -e)``."""
    acc = np.asarray(acc, np.int64)
    v = smmlar(2 * acc, multiplier, half) + (acc >> 31)
    return v >> np.asarray(e, np.int64)


def emulate_layer(layer: QLayer, packed: PackedLayer, x: np.ndarray) -> np.ndarray:
    """``(N, in)`` int8 -> ``(N, out)`` int8, reading the stream as the kernel does, with SMLAD's wrap-around."""
    n, inp = x.shape
    xp = np.zeros((n, 2 * packed.in_words), np.int64)
    xp[:, :inp] = x
    p, q = _lane_inputs(packed.in_words)
    x_lo, x_hi = xp[:, p], xp[:, q]  # (N, in_words): the widened input words' lanes
    s = packed.stream
    pos, outs = 0, []
    for n_pairs in [2] * packed.passes + [1] * int(packed.tail):
        init = s[pos: pos + 2 * n_pairs].view(np.int32).astype(np.int64).reshape(n_pairs, 2)
        pos += 2 * n_pairs
        words = s[pos: pos + n_pairs * packed.in_words].reshape(packed.in_words, n_pairs).T  # (pairs, in_words)
        pos += n_pairs * packed.in_words
        raw_lo, raw_hi = _lanes(words, sign_extend_bytes=False)
        sx_lo, sx_hi = _lanes(words, sign_extend_bytes=True)
        acc_a = _wrap32(init[:, 0] + x_lo @ sx_lo.T + x_hi @ sx_hi.T)  # (N, pairs): wrapped like SMLAD's sums
        acc_hi = _wrap32(init[:, 1] + x_lo @ raw_lo.T + x_hi @ raw_hi.T)
        acc = np.stack([acc_a, _wrap32(acc_hi - acc_a) >> 8], axis=2).reshape(n, 2 * n_pairs)
        e = (int(s[pos]) >> (8 * np.arange(2 * n_pairs))) & 0xFF
        rq = s[pos + 1: pos + 1 + 4 * n_pairs].view(np.int32).astype(np.int64).reshape(2 * n_pairs, 2)
        pos += 4 * n_pairs + 1
        outs.append(np.clip(fast_requant(acc, rq[:, 0], rq[:, 1], e) + layer.out_zero_point, -128, 127))
    if pos != len(s):
        raise ValueError(f"stream has {len(s)} words, the passes read {pos}")
    return np.concatenate(outs, axis=1)[:, : layer.weight.shape[0]]  # drop the phantom row


def emulate(qm: QuantizedModel, x_q: np.ndarray) -> np.ndarray:
    """The DSP kernel on ``(N, D)`` int8 inputs -> ``(N, A)`` int8 (must equal ``int8_forward``)."""
    if not supported(qm):
        raise ValueError("the DSP kernel does not support this model (the generated C uses the portable kernel)")
    h = np.asarray(x_q, np.int8).astype(np.int64)
    for layer in qm.layers:
        h = emulate_layer(layer, pack_layer(layer), h)
    return h.astype(np.int8)
