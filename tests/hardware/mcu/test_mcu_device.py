"""Device tests (``mcu`` marker, `make test-mcu`): cross-compile for Cortex-M4 and run under QEMU netduinoplus2.

The firmware checks the SMLAD path's outputs against the numpy reference and reports through semihosting;
its output and exit code must equal those of the same main.c built for the host.
"""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.hardware.mcu import codegen, dsp_layout, toolchain
from robot_rl.hardware.mcu.export import device_check, parse_ticks
from robot_rl.hardware.mcu.quantize import int8_forward, quantize_input, synthetic_model

pytestmark = [
    pytest.mark.mcu,
    pytest.mark.skipif(not (toolchain.arm_available() and toolchain.qemu_available()),
                       reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm "
                              "(tests/hardware/mcu/run_suite.sh installs them)"),
]


def _firmware(distilled, tmp_path, x_q, name="rrl_policy"):
    codegen.write_sources(distilled.qm, tmp_path, name)
    return codegen.write_firmware(distilled.qm, tmp_path, name, x_q, distilled.holdout[:8])


def test_qemu_output_bit_exact_and_equal_to_host(distilled, tmp_path):
    rng = np.random.default_rng(11)
    x_q = np.concatenate([quantize_input(distilled.qm, distilled.holdout[:96]),
                          rng.integers(-128, 128, (160, distilled.qm.obs_dim)).astype(np.int8)])
    fw = _firmware(distilled, tmp_path, x_q)
    rc, text = toolchain.run_qemu(toolchain.build_firmware(fw), timeout=120)
    host_rc, host_text = toolchain.run_host(toolchain.build_firmware_host(fw))
    assert rc == 0 and host_rc == 0, text[-400:]
    lines = text.splitlines()
    assert lines[0] == f"hash {distilled.qm.model_hash()}" and "mismatches 0" in lines
    got = [l[2:] for l in lines if l.startswith("q ")]
    assert got == [bytes(r.astype(np.uint8)).hex() for r in int8_forward(distilled.qm, x_q)]
    assert [l for l in lines if not l.startswith("ticks")] == [l for l in host_text.splitlines()
                                                               if not l.startswith("ticks")]
    ticks = parse_ticks(text)
    assert ticks["spin"] > ticks["base"] and ticks["infer"] > 0


def test_exit_code_reports_mismatches_like_the_host(distilled, tmp_path):
    """Corrupt 3 expected outputs in vectors.h: device and host both exit with 3 (SYS_EXIT_EXTENDED)."""
    x_q = quantize_input(distilled.qm, distilled.holdout[:16])
    fw = _firmware(distilled, tmp_path, x_q)
    vectors = fw / "vectors.h"
    text = vectors.read_text()
    head, body = text.split("vec_out_q[VEC_NQ * POLICY_ACT_DIM] = {\n", 1)
    values, rest = body.split("\n};", 1)
    nums = [int(v) for v in values.replace("\n", " ").split(",")]
    for i in (0, 5, 9):
        nums[i] = nums[i] + 1 if nums[i] < 127 else 126
    vectors.write_text(head + "vec_out_q[VEC_NQ * POLICY_ACT_DIM] = {\n    " + ", ".join(map(str, nums)) + "\n};" + rest)
    rc, out = toolchain.run_qemu(toolchain.build_firmware(fw), timeout=120)
    host_rc, _ = toolchain.run_host(toolchain.build_firmware_host(fw))
    assert rc == host_rc == 3 and "mismatches 3" in out


def test_device_check_sizes_and_instruction_budget(distilled, tmp_path):
    """A [64, 64] student: <= 10 KB flash for weights + code, <= 1.6 instructions per MAC on the DSP path (its
    6-input first layer makes the per-row costs weigh more than the pick-cube student's 28)."""
    _firmware(distilled, tmp_path, quantize_input(distilled.qm, distilled.holdout[:32]))
    res = device_check(tmp_path, "rrl_policy")
    assert res["size_source"] == "arm-none-eabi-size"
    assert res["qemu_exit_code"] == 0 and res["device_output_equals_host"]
    assert res["flash_bytes"] <= 10 * 1024, res
    assert res["ram_bytes"] <= 512, res
    macs = sum(a * b for a, b in zip(distilled.qm.widths[:-1], distilled.qm.widths[1:]))
    assert 0.9 * macs < res["instructions_per_inference"] <= 1.6 * macs, res


@pytest.mark.parametrize("widths", [[28, 64, 64, 4], [27, 37, 19, 3]])
def test_packed_kernel_bit_exact_and_instructions_per_mac(widths, tmp_path):
    """The pick-cube student's shape (<= 1.5 instructions per MAC, <= 10 KB flash) and an all-odd one (phantom
    row, lone pair, padded inputs) on the emulated Cortex-M4, checked against the numpy reference."""
    qm, states = synthetic_model(widths, seed=7)
    assert dsp_layout.supported(qm)
    rng = np.random.default_rng(8)
    x_q = np.concatenate([quantize_input(qm, states[:64]), rng.integers(-128, 128, (64, widths[0])).astype(np.int8)])
    codegen.write_sources(qm, tmp_path, "rrl_policy")
    codegen.write_firmware(qm, tmp_path, "rrl_policy", x_q, states[:8])
    res = device_check(tmp_path, "rrl_policy")
    assert res["qemu_exit_code"] == 0 and res["device_output_equals_host"], res
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    per_mac = res["instructions_per_inference"] / macs
    if widths == [28, 64, 64, 4]:
        assert per_mac <= 1.5 and res["flash_bytes"] <= 10 * 1024, res
    else:
        assert per_mac <= 2.0, res  # small odd layers: per-row costs and padding weigh more


@pytest.mark.parametrize("core", ["cortex-m3", "cortex-m0"])
def test_portable_kernel_on_cortex_m3_and_m0(distilled, tmp_path, core):
    """LM3S6965 (M3, QEMU lm3s6965evb) and nRF51822 (M0, QEMU microbit): no DSP extension and no FPU, so the
    portable kernel and software floats; every int8 and float vector matches the Python reference bit for bit."""
    x_q = quantize_input(distilled.qm, distilled.holdout[:48])
    fw = _firmware(distilled, tmp_path, x_q)
    elf = toolchain.build_firmware(fw, core=core)
    rc, text = toolchain.run_qemu(elf, timeout=120, machine=toolchain.FIRMWARE_TARGETS[core][1])
    host_rc, host_text = toolchain.run_host(toolchain.build_firmware_host(fw))
    lines = text.splitlines()
    assert rc == 0 and host_rc == 0 and "mismatches 0" in lines, text[-400:]
    assert len([l for l in lines if l.startswith("q ")]) == 48 and len([l for l in lines if l.startswith("f ")]) == 8
    assert [l for l in lines if not l.startswith("ticks")] == [l for l in host_text.splitlines()
                                                               if not l.startswith("ticks")]


@pytest.mark.parametrize("flags", ["-ffast-math -ffp-contract=fast", "-O0", "-Os"])
def test_bit_exact_whatever_the_m4_build_flags(distilled, tmp_path, flags):
    """-ffast-math -ffp-contract=fast on the M4F (which has VFMA), and the kernel at -O0 / -Os: int8 outputs and
    the float wrapper's bits still match the Python reference."""
    obs = np.concatenate([distilled.holdout[:6], distilled.holdout[:2] * 3.0])
    codegen.write_sources(distilled.qm, tmp_path, "rrl_policy")
    fw = codegen.write_firmware(distilled.qm, tmp_path, "rrl_policy",
                                quantize_input(distilled.qm, distilled.holdout[:8]), obs)
    rc, text = toolchain.run_qemu(toolchain.build_firmware(fw, extra_cflags=flags), timeout=120)
    assert rc == 0 and "mismatches 0" in text.splitlines(), text[-400:]
