"""MCU export figures for a [64, 64] int8 student distilled (DAgger) from the twin's scripted expert.

    MUJOCO_GL=egl python benchmarks/mcu.py [--env panda_pick_cube|point_reach] [--eval-episodes 20] [--out DIR]

Runs the whole ``export-mcu`` pipeline (:func:`robot_rl.hardware.mcu.export.export`) and prints the figures;
the last line is JSON. ``instructions_per_inference_m4`` comes from QEMU's instruction counting (``-icount``,
SysTick calibrated by a 2-instruction loop) on the DSP path; it is an instruction count, not measured cycles
(the M4 needs about one cycle per instruction here, plus flash wait states on a real board).
Needs gcc, and for the device figures gcc-arm-none-eabi + qemu-system-arm (tests/hardware/mcu/run_suite.sh
installs them).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")

from robot_rl.config import load_config  # noqa: E402
from robot_rl.hardware.mcu.export import ExportConfig, export  # noqa: E402
from robot_rl.hardware.mcu.student import as_teacher  # noqa: E402
from robot_rl.registry import ENVS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="panda_pick_cube")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--out", default="")
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
    }
    for k, v in figures.items():
        print(f"{k:32s} {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
