"""The Cortex-M DSP kernel's export-time layout, checked on any host: a numpy emulation of exactly what the
kernel computes (row pairs in one word, SMLAD's wrap-around, SMMLAR requantization) equals the int8 reference.
The same layout runs under QEMU in test_mcu_device.py (`make test-mcu`)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rl.hardware.mcu import codegen, dsp_layout, toolchain
from robot_rl.hardware.mcu.quantize import int8_forward, multiply_by_quantized_multiplier, synthetic_model


def test_fast_requantization_equals_tflite():
    """(SMMLAR(2 acc, m, 2^(e-1)) + sign) >> e  ==  MultiplyByQuantizedMultiplier(acc, m, -e), ties included."""
    rng = np.random.default_rng(0)
    m = rng.integers(1 << 30, 1 << 31, 256)
    e = rng.integers(1, 32, 256)
    acc = rng.integers(-(1 << 29), 1 << 29, (400, 256))
    acc[:3] = [[0] * 256, [-1] * 256, [1] * 256]
    assert np.array_equal(multiply_by_quantized_multiplier(acc, m, -e),
                          dsp_layout.fast_requant(acc, m, np.int64(1) << (e - 1), e))
    # ties: m = 2^30 and odd acc tie the high multiply (acc / 2); acc = +-3 * 2^e ties the division (+-1.5)
    e_t = np.arange(1, 29)
    for a in (np.full(28, 7), np.full(28, -7), 3 << e_t, -(3 << e_t)):
        a = np.asarray(a)[None]
        assert np.array_equal(multiply_by_quantized_multiplier(a, np.int64(1) << 30, -e_t),
                              dsp_layout.fast_requant(a, np.int64(1) << 30, np.int64(1) << (e_t - 1), e_t))


@pytest.mark.parametrize("widths", [[28, 64, 64, 4], [27, 37, 19, 3], [5, 7, 3], [6, 9, 1]])
def test_emulated_kernel_bit_exact(widths):
    """Odd widths exercise the padded inputs, the phantom row of an odd row count and the lone-pair pass."""
    qm, states = synthetic_model(widths, seed=len(widths) + widths[0])
    assert dsp_layout.supported(qm)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(-128, 128, (3000, widths[0])), np.full((1, widths[0]), -128),
                        np.full((1, widths[0]), 127)]).astype(np.int8)
    ref = int8_forward(qm, x)
    assert len(np.unique(ref, axis=0)) > 20  # the outputs vary: not a constant that any kernel would match
    assert np.array_equal(dsp_layout.emulate(qm, x), ref)
    packed = [dsp_layout.pack_layer(layer) for layer in qm.layers]
    for layer, p in zip(qm.layers, packed):  # every weight stored once: pairs * in_words words (+ phantom row)
        pairs = (layer.weight.shape[0] + 1) // 2
        assert p.passes * 2 + p.tail == pairs and p.in_words == dsp_layout.pad4(layer.weight.shape[1]) // 2


def test_wrapped_pair_accumulator_is_exact_near_the_bound():
    """Row b's sums close to 2^23 make acc_hi overflow int32 on the way; the difference is still exact."""
    qm, _ = synthetic_model([64, 8, 2], seed=3)
    layer = qm.layers[0]
    w = np.where(np.arange(64) % 2 == 0, 127, -127).astype(np.int8)
    weight = np.tile(w, (8, 1))
    layer = dataclasses.replace(layer, weight=weight, bias=np.zeros(8, np.int32))
    qm = dataclasses.replace(qm, layers=[layer, qm.layers[1]])
    assert dsp_layout.acc_bound(layer).max() == 64 * 127 * 128 < dsp_layout.PAIR_LIMIT
    x = np.where(np.arange(64) % 2 == 0, -128, 127).astype(np.int8)[None].repeat(2, 0)
    x[1] = -x[1] - 1
    packed = dsp_layout.pack_layer(layer)
    assert np.array_equal(dsp_layout.emulate_layer(layer, packed, x.astype(np.int64)),
                          np.clip(multiply_by_quantized_multiplier(x.astype(np.int64) @ weight.T.astype(np.int64),
                                                                   layer.multiplier, layer.shift)
                                  + layer.out_zero_point, -128, 127))


@pytest.mark.skipif(toolchain.host_cc() is None, reason="no host C compiler")
def test_out_of_range_model_gets_the_portable_kernel(tmp_path):
    """A channel with a multiplier >= 1/2 (shift >= 0) is outside the fast requantization: no DSP branch, and the
    portable C is still bit-exact."""
    qm, _ = synthetic_model([6, 10, 2], seed=4)
    first = qm.layers[0]
    shift = first.shift.copy()
    shift[3] = 1
    qm = dataclasses.replace(qm, layers=[dataclasses.replace(first, shift=shift), qm.layers[1]])
    assert not dsp_layout.supported(qm)
    with pytest.raises(ValueError, match="shift"):
        dsp_layout.pack_layer(qm.layers[0])
    _, c = codegen.write_sources(qm, tmp_path, "oor")
    src = c.read_text()
    assert "OOR_USE_DSP 1" not in src and "smlad" not in src
    (tmp_path / "harness.c").write_text(codegen.host_harness("oor"))
    exe = toolchain.compile_host([c, tmp_path / "harness.c"], tmp_path / "harness", include=[tmp_path])
    x = np.random.default_rng(5).integers(-128, 128, (2000, 6)).astype(np.int8)
    assert np.array_equal(toolchain.run_harness_q(exe, x), int8_forward(qm, x))
