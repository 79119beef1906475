"""Generated C99: compiles warning-free under -pedantic, matches the numpy int8 reference bit for bit."""
from __future__ import annotations

import platform
import re
import shutil

import numpy as np
import pytest

from robot_rl.hardware.mcu import codegen, dsp_layout, toolchain
from robot_rl.hardware.mcu.quantize import act_float_wrapper, int8_forward, quantize_input

pytestmark = pytest.mark.skipif(toolchain.host_cc() is None, reason="no host C compiler")


def _host_has_fma() -> bool:
    try:
        return platform.machine() == "x86_64" and " fma " in open("/proc/cpuinfo").read().replace("\n", " ")
    except OSError:
        return False


@pytest.fixture(scope="module")
def built(distilled, tmp_path_factory):
    out = tmp_path_factory.mktemp("mcu_c")
    h, c = codegen.write_sources(distilled.qm, out, "pr_policy", "PointReach test student")
    (out / "harness.c").write_text(codegen.host_harness("pr_policy"))
    exes = {}
    # fast-math: contraction into FMA (-mfma where the CPU has it), finite-math-only; the wrapper must not care
    fma = ("-mfma",) if _host_has_fma() else ()
    for flavour, extra in (("default", ()), ("portable", ("-DPR_POLICY_PORTABLE",)), ("O0", ("-O0",)),
                           ("fastmath", ("-ffast-math", "-ffp-contract=fast", *fma))):
        exes[flavour] = toolchain.compile_host([c, out / "harness.c"], out / f"harness_{flavour}", include=[out],
                                               extra=extra)
    return out, h, c, exes


def test_sources_are_self_contained_c99(built, distilled):
    out, h, c, _ = built
    src, hdr = c.read_text(), h.read_text()
    includes = set(re.findall(r'#include [<"]([^>"]+)[>"]', src + hdr))
    assert includes <= {"stdint.h", "string.h", "arm_acle.h", "pr_policy.h"}, includes
    assert not re.search(r"\b(malloc|calloc|realloc|free|printf|float\s+\w+\s*\[\s*\w+\s*\]\s*;)", src)
    assert f'#define PR_POLICY_MODEL_HASH "{distilled.qm.model_hash()}"' in hdr
    assert dsp_layout.supported(distilled.qm)  # so the DSP branch below is the packed kernel, not a fallback
    assert "__ARM_FEATURE_DSP" in src and "smlad r4, r10, r8, r4" in src and "smmlar" in src
    assert "static const uint32_t pr_policy_s0" in src and "static const int8_t pr_policy_w0" in src
    assert re.search(r"^static int8_t pr_policy_buf\[2\]\[64\];", src, re.M)  # static scratch, no heap


def test_int8_core_bit_exact_on_thousands_of_inputs(built, distilled):
    _, _, _, exes = built
    rng = np.random.default_rng(7)
    x_q = np.concatenate([rng.integers(-128, 128, (5000, distilled.qm.obs_dim)).astype(np.int8),
                          np.full((1, distilled.qm.obs_dim), -128, np.int8), np.full((1, distilled.qm.obs_dim), 127, np.int8),
                          quantize_input(distilled.qm, distilled.holdout)])
    ref = int8_forward(distilled.qm, x_q)
    assert len(np.unique(ref, axis=0)) > 100  # the cases exercise the whole output range, not one constant
    for flavour, exe in exes.items():
        got = toolchain.run_harness_q(exe, x_q)
        assert np.array_equal(got, ref), f"{flavour}: {(got != ref).sum()} mismatching outputs"


@pytest.mark.parametrize("flavour", ["default", "fastmath"])
def test_float_wrapper_bit_exact_and_refuses_non_finite(built, distilled, flavour):
    """Bit-exact and NaN/inf-refusing with and without -ffast-math -ffp-contract=fast (FMA contraction)."""
    exe = built[3][flavour]
    obs = np.concatenate([distilled.holdout, distilled.holdout * 3.0])  # in range, and saturating
    got = toolchain.run_harness_f(exe, obs)
    ref = act_float_wrapper(distilled.qm, obs)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    assert (np.abs(got) <= 1.0).all()  # PointReach bounds
    bad = distilled.holdout[:4].copy()
    bad[0, 2], bad[1, 0], bad[2, 5] = np.nan, np.inf, -np.inf
    out = toolchain.run_harness_f(exe, bad)
    assert np.isnan(out[:3]).all() and np.isfinite(out[3]).all()


def test_header_states_the_build_flags(built):
    hdr = built[1].read_text()
    assert '#define PR_POLICY_CFLAGS_M4 "-std=c99 -O2 -mcpu=cortex-m4 -mthumb' in hdr
    assert "-ffp-contract" in hdr and "FLT_EVAL_METHOD" in hdr


def test_int8_student_tracks_float_student(built, distilled):
    """The deployed float wrapper stays close to the float student on visited states (the gate's promise)."""
    got = toolchain.run_harness_f(built[3]["default"], distilled.holdout)
    ref = distilled.model.to_env(distilled.model.forward(distilled.holdout))
    assert np.abs(got - ref).max() < 0.1


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_example_firmware_builds_and_runs_on_the_host(distilled, tmp_path):
    """The firmware's main.c against the stdio platform: every vector checks, exit code 0."""
    codegen.write_sources(distilled.qm, tmp_path, "rrl_policy")
    x = quantize_input(distilled.qm, distilled.holdout[:32])
    fw = codegen.write_firmware(distilled.qm, tmp_path, "rrl_policy", x, distilled.holdout[:4])
    rc, text = toolchain.run_host(toolchain.build_firmware_host(fw))
    lines = text.splitlines()
    assert rc == 0 and "mismatches 0" in lines
    assert lines[0] == f"hash {distilled.qm.model_hash()}"
    expected = int8_forward(distilled.qm, x)
    assert [l[2:] for l in lines if l.startswith("q ")] == [bytes(r.astype(np.uint8)).hex() for r in expected]
