"""MCU export figures for a [64, 64] int8 student distilled (DAgger) from the twin's scripted expert, and the
Cortex-M4 kernel's instructions per multiply-accumulate on several layer shapes.

    MUJOCO_GL=egl python benchmarks/mcu.py [--env panda_pick_cube|point_reach] [--eval-episodes 20] [--out DIR]
                                           [--shapes "28,64,64,4;27,37,19,3;6,64,64,2;28,128,128,4"]

Runs the whole ``export-mcu`` pipeline (:func:`robot_rl.hardware.mcu.export.export`) and prints the figures;
the last line is JSON. ``instructions_per_inference_m4`` comes from QEMU's instruction counting (``-icount``,
SysTick calibrated by a 2-instruction loop) on the DSP path; it is an instruction count, not measured cycles
(the M4 needs about one cycle per instruction here, plus a cycle per extra word of an LDRD/LDM and flash wait
states on a real board). ``speedup_vs_portable`` is the baseline ratio: the portable C kernel built for the
same M4 (``-DRRL_POLICY_PORTABLE``) in the same run. Per-shape figures use random weights of that shape
(:func:`robot_rl.hardware.mcu.quantize.synthetic_model`); every run checks the outputs against the numpy
reference on the emulated chip.
Needs gcc, and for the device figures gcc-arm-none-eabi + qemu-system-arm (tests/hardware/mcu/run_suite.sh
installs them).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from robot_rl.config import load_config  # noqa: E402
from robot_rl.hardware.mcu import toolchain  # noqa: E402
from robot_rl.hardware.mcu.export import ExportConfig, export, shape_figures  # noqa: E402
from robot_rl.hardware.mcu.student import as_teacher  # noqa: E402
from robot_rl.registry import ENVS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="panda_pick_cube")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", default="")
    parser.add_argument("--shapes", default="28,64,64,4;27,37,19,3;6,64,64,2;28,128,128,4",
                        help="layer widths per shape, ';'-separated (inputs first)")
    args = parser.parse_args()
    cfg = load_config([f"env={args.env}"])
    env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
    out = args.out or tempfile.mkdtemp(prefix="mcu_bench_")
    try:
        r = export(env, as_teacher(env.expert()), ExportConfig(eval_episodes=args.eval_episodes), out,
                   f"benchmark: scripted expert of {args.env}")
    finally:
        env.close()
    figures = {
        "env": args.env, "student": r["student_widths"],
        "instructions_per_inference_m4": r.get("instructions_per_inference"),
        "flash_bytes": r.get("flash_bytes", r.get("flash_bytes_data_only")), "ram_bytes": r.get("ram_bytes"),
        "max_abs_err": r["max_abs_err"], "p99_abs_err": r["p99_abs_err"], "mean_abs_err": r["mean_abs_err"],
        "clip_fraction": r["clip_fraction"], "success_teacher": r["success_teacher"],
        "success_float": r["success_float"], "success_int8": r["success_int8"], "success_gap": r["success_gap"],
        "qat_applied": r["qat_applied"], "instructions_source": r.get("instructions_source", "n/a"),
        "instructions_per_mac_m4": r.get("instructions_per_mac"),
        "instructions_portable_m4": r.get("instructions_per_inference_portable"),
        "speedup_vs_portable": r.get("speedup_vs_portable"),
        "bit_exact_host": r["host_check"]["int8_bit_exact"] and r["host_check"]["float_wrapper_bit_exact"],
        "bit_exact_tflite_micro": r["tflite_micro"]["bit_exact"] if isinstance(r["tflite_micro"], dict) else None,
        "bit_exact_qemu": r.get("qemu_exit_code") == 0 and r.get("device_output_equals_host", False),
    }
    if toolchain.arm_available() and toolchain.qemu_available():
        figures["shapes"] = [shape_figures([int(w) for w in shape.split(",")], Path(tempfile.mkdtemp(dir=out)))
                             for shape in args.shapes.split(";") if shape]
    for k, v in figures.items():
        print(f"{k:32s} {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
