"""``robot-rl export-mcu``: teacher -> DAgger student -> int8 -> C99 + example firmware -> checks -> report.

The report (``report.json`` + ``report.md`` in the output directory) holds: the int8 student's error vs the
float student (max, p99, mean; normalised action units, actions span [-1, 1]) on held-out states the student
visits, the clip fraction, closed-loop success of teacher / float student / int8 student on the twin, the
host bit-exactness check, flash and RAM bytes (``arm-none-eabi-size`` where installed, else computed from the
arrays), and instructions per inference (QEMU ``-icount``, self-calibrated; where QEMU is installed).
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.hardware.mcu import codegen, toolchain
from robot_rl.hardware.mcu.distill import DistillConfig, collect, distill, on_policy_error, student_fn
from robot_rl.hardware.mcu.qat import QATConfig, quantization_aware_finetune
from robot_rl.hardware.mcu.quantize import (QuantConfig, QuantizedModel, act_float_wrapper, gate_passed,
                                            int8_forward, int8_normalised, quantization_report, quantize,
                                            quantize_input)
from robot_rl.hardware.mcu.student import FloatModel, ModelPolicy, Teacher

log = logging.getLogger("robot_rl.mcu.export")
TARGETS = ("cortex-m4",)


@dataclass
class ExportConfig:
    """Everything ``export-mcu`` does besides choosing the teacher."""

    target: str = "cortex-m4"
    """Deployment target; ``cortex-m4`` (STM32F405-class, DSP extension + single-precision FPU)."""
    name: str = "rrl_policy"
    """C prefix of the generated functions and file names (``<name>.h`` / ``<name>.c``)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation schedule and student shape."""
    quant: QuantConfig = field(default_factory=QuantConfig)
    """Calibration and the error gate."""
    qat: QATConfig = field(default_factory=QATConfig)
    """Quantization-aware fine-tuning, run only when the PTQ model fails the gate."""
    calibration_episodes: int = 20
    """Float-student episodes whose states calibrate the quantization ranges."""
    holdout_episodes: int = 20
    """Further float-student episodes (other seeds) whose states measure error and clip fraction."""
    eval_episodes: int = 20
    """Closed-loop episodes for each of teacher, float student and int8 student (same seeds)."""
    host_check_inputs: int = 4096
    """Random int8 inputs (plus every held-out state) run through the compiled C and the numpy reference."""
    firmware_vectors: int = 64
    """int8 test vectors baked into the example firmware (its self-check)."""
    run_qemu: bool = True
    """Build the firmware and run it under qemu-system-arm when the tools are installed."""
    seed: int = 0
    """Seeds of calibration / hold-out / evaluation episodes and the random host-check inputs."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        codegen.check_name(self.name)


class _TeacherAsPolicy:
    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher

    def reset(self) -> None:
        self.teacher.reset()

    def act(self, obs: dict[str, np.ndarray], deterministic: bool = True) -> np.ndarray:  # noqa: ARG002
        return np.asarray(self.teacher.act(obs), np.float32)


def computed_sizes(qm: QuantizedModel) -> dict[str, int]:
    """Flash/RAM of the generated arrays alone (no code) for a Cortex-M4 build: the fallback when
    arm-none-eabi-size is absent. The DSP kernel's packed streams where the model is in its range, else the
    portable kernel's row-major arrays."""
    from robot_rl.hardware.mcu import dsp_layout

    pad = lambda n: (n + 3) // 4 * 4  # noqa: E731
    if dsp_layout.supported(qm):
        flash = sum(4 * len(dsp_layout.pack_layer(l).stream) + 12 for l in qm.layers)  # noqa: E741
    else:
        flash = sum(l.weight.shape[0] * pad(l.weight.shape[1]) + 9 * l.weight.shape[0] + 12 for l in qm.layers)
    flash += 4 * (2 * qm.obs_dim + 2 * qm.act_dim)
    widest = max(pad(w) for w in qm.widths)
    return {"flash_bytes_data_only": int(flash), "ram_bytes": int(2 * widest + 2 * widest)}


def host_check(qm: QuantizedModel, src_dir: Path, name: str, holdout: np.ndarray, n_random: int,
               seed: int) -> dict[str, Any]:
    """Compile with ``gcc -std=c99 -Wall -Wextra -Werror -pedantic`` and compare with the numpy reference."""
    build = src_dir / "build_host"
    build.mkdir(exist_ok=True)
    (build / "harness.c").write_text(codegen.host_harness(name))
    exe = toolchain.compile_host([src_dir / f"{name}.c", build / "harness.c"], build / "harness", include=[src_dir])
    rng = np.random.default_rng(seed)
    x_q = np.concatenate([rng.integers(-128, 128, (n_random, qm.obs_dim)).astype(np.int8),
                          quantize_input(qm, holdout)])
    q_equal = toolchain.run_harness_q(exe, x_q) == int8_forward(qm, x_q)
    f_equal = toolchain.run_harness_f(exe, holdout).view(np.uint32) == act_float_wrapper(qm, holdout).view(np.uint32)
    return {"int8_inputs": int(len(x_q)), "int8_bit_exact": bool(q_equal.all()),
            "float_inputs": int(len(holdout)), "float_wrapper_bit_exact": bool(f_equal.all())}


def parse_ticks(output: str) -> dict[str, int]:
    for line in output.splitlines():
        if line.startswith("ticks "):
            parts = line.split()[1:]
            return {k: int(v) for k, v in zip(parts[::2], parts[1::2])}
    raise toolchain.ToolchainError(f"no 'ticks' line in the firmware output:\n{output[-500:]}")


def instructions_per_inference(ticks: dict[str, int]) -> dict[str, float]:
    """SysTick ticks -> instructions, calibrated by the spin loop (2 instructions per iteration)."""
    per_insn = (ticks["spin"] - ticks["base"]) / (2.0 * ticks["spin_iters"])
    if per_insn <= 0:
        raise toolchain.ToolchainError(f"SysTick did not advance under -icount: {ticks}")
    return {"infer_q": (ticks["infer"] - ticks["base"]) / per_insn / ticks["reps"],
            "act": (ticks["act"] - ticks["base"]) / per_insn / ticks["reps"], "ticks_per_instruction": per_insn}


def device_check(src_dir: Path, name: str, timeout: float = 180, measure_portable: bool = False) -> dict[str, Any]:
    """Cross-compile, size, run under QEMU and compare with the same firmware built for the host.

    ``measure_portable`` also times the portable kernel on the same M4 (``-D<NAME>_PORTABLE``), the baseline of
    the DSP kernel's speed-up; the firmware left in ``src_dir/firmware`` is the DSP build either way."""
    fw = src_dir / "firmware"
    obj = toolchain.compile_m4_object(src_dir / f"{name}.c", fw / f"{name}.o", include=[src_dir])
    size = toolchain.arm_size(obj)
    macs = _macs(src_dir / f"{name}.h", name)
    out: dict[str, Any] = {"flash_bytes": size.flash, "ram_bytes": size.ram, "size_source": "arm-none-eabi-size",
                           "stack_bytes_upper_bound": toolchain.max_stack(fw / f"{name}.su"), "macs": macs}
    portable = None
    if measure_portable and toolchain.qemu_available():
        rc, text = toolchain.run_qemu(toolchain.build_firmware(fw, timeout, extra_cflags=f"-D{name.upper()}_PORTABLE"),
                                      timeout)
        if rc != 0:
            raise toolchain.ToolchainError(f"the portable build failed its self-check on QEMU (exit {rc}):\n{text[-500:]}")
        portable = instructions_per_inference(parse_ticks(text))["infer_q"]
    elf = toolchain.build_firmware(fw, timeout)
    fw_size = toolchain.arm_size(elf)
    out["firmware_flash_bytes"], out["firmware_ram_bytes_static"] = fw_size.flash, fw_size.ram
    if not toolchain.qemu_available():
        out["qemu"] = "skipped: qemu-system-arm not installed"
        return out
    rc, text = toolchain.run_qemu(elf, timeout)
    host_rc, host_text = toolchain.run_host(toolchain.build_firmware_host(fw))
    strip = lambda t: [l for l in t.splitlines() if not l.startswith("ticks ")]  # noqa: E731,E741
    insns = instructions_per_inference(parse_ticks(text))
    out.update({"qemu_exit_code": rc, "host_exit_code": host_rc, "device_output_equals_host": strip(text) == strip(host_text),
                "instructions_per_inference": round(insns["infer_q"]), "instructions_per_act": round(insns["act"]),
                "instructions_per_mac": round(insns["infer_q"] / macs, 3),
                "instructions_source": "QEMU netduinoplus2 -icount (SysTick, calibrated by a 2-instruction loop)"})
    if portable is not None:
        out["instructions_per_inference_portable"] = round(portable)
        out["speedup_vs_portable"] = round(portable / insns["infer_q"], 2)
    return out


def _macs(header: Path, name: str) -> int:
    """Multiply-accumulates per inference, from the generated header's ``<NAME>_MACS``."""
    m = re.search(rf"#define {name.upper()}_MACS (\d+)", header.read_text())
    if m is None:
        raise ValueError(f"no {name.upper()}_MACS in {header}")
    return int(m.group(1))


def shape_figures(widths: list[int], out_dir: Path, seed: int = 0, name: str = "rrl_policy") -> dict[str, Any]:
    """Instructions per MAC (DSP and portable kernel) and flash for a random int8 MLP of ``widths``: the kernel's
    cost depends only on the shape. The firmware checks every output against the numpy reference."""
    from robot_rl.hardware.mcu.dsp_layout import supported
    from robot_rl.hardware.mcu.quantize import synthetic_model

    qm, states = synthetic_model(widths, seed)
    rng = np.random.default_rng(seed)
    x_q = np.concatenate([quantize_input(qm, states[:32]), rng.integers(-128, 128, (32, qm.obs_dim)).astype(np.int8)])
    codegen.write_sources(qm, out_dir, name)
    codegen.write_firmware(qm, out_dir, name, x_q, states[:4])
    res = device_check(out_dir, name, measure_portable=True)
    return {"widths": widths, "dsp_kernel": supported(qm), "macs": res["macs"],
            "instructions": res.get("instructions_per_inference"), "instructions_per_mac": res.get("instructions_per_mac"),
            "instructions_portable": res.get("instructions_per_inference_portable"),
            "speedup_vs_portable": res.get("speedup_vs_portable"), "flash_bytes": res["flash_bytes"],
            "bit_exact": res.get("qemu_exit_code") == 0 and res.get("device_output_equals_host", False)}


def export(env: Any, teacher: Teacher, cfg: ExportConfig, out_dir: str | Path, description: str = "") -> dict[str, Any]:
    """The whole pipeline; writes sources, firmware and report into ``out_dir`` and returns the report."""
    import torch

    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = distill(env, teacher, cfg.distill)
    model: FloatModel = result.student.fold(env.action_spec)
    fn = model.forward
    rng = np.random.default_rng(cfg.seed)
    calib = collect(env, None, fn, cfg.calibration_episodes, cfg.seed + 50_000, 0.0, rng).states
    holdout = collect(env, None, fn, cfg.holdout_episodes, cfg.seed + 60_000, 0.0, rng).states
    qm = quantize(model, calib, cfg.quant)
    ptq = quantization_report(model, qm, holdout)
    report: dict[str, Any] = {"target": cfg.target, "name": cfg.name, "description": description,
                              "student_widths": qm.widths, "distill_method": cfg.distill.method,
                              "distill_history": result.history, "ptq": ptq, "qat_applied": False}
    if not gate_passed(ptq, cfg.quant):
        log.info("PTQ misses the gate (max %.4f, p99 %.4f): quantization-aware fine-tuning", ptq["max_abs_err"],
                 ptq["p99_abs_err"])
        tuned = quantization_aware_finetune(model, qm, np.concatenate([calib, result.data.states]), cfg.qat,
                                            cfg.quant)
        # Keep QAT only if it helps on the calibration states (never on the held-out ones, which stay a clean
        # measurement): on the pick twin's bang-bang gripper dimension it once made the error 10x worse.
        ptq_calib, qat_calib = quantization_report(model, qm, calib), quantization_report(model, tuned, calib)
        report["qat_calibration_errors"] = {"ptq_mean": ptq_calib["mean_abs_err"], "qat_mean": qat_calib["mean_abs_err"],
                                            "ptq_max": ptq_calib["max_abs_err"], "qat_max": qat_calib["max_abs_err"]}
        if qat_calib["mean_abs_err"] < ptq_calib["mean_abs_err"] and qat_calib["max_abs_err"] <= ptq_calib["max_abs_err"]:
            qm = tuned
            report["qat_applied"] = True
            report["qat"] = quantization_report(model, qm, holdout)
        else:
            log.warning("QAT did not reduce the calibration-set error (%s): keeping the PTQ model",
                        report["qat_calibration_errors"])
            report["qat_rejected"] = True
    final = report["qat"] if report["qat_applied"] else ptq
    report.update({k: final[k] for k in ("max_abs_err", "p99_abs_err", "mean_abs_err", "clip_fraction")})
    report["gate_passed"] = gate_passed(final, cfg.quant)
    report["gate"] = {"max_abs": cfg.quant.gate_max_abs, "p99_abs": cfg.quant.gate_p99_abs}
    report["model_hash"] = qm.model_hash()
    # closed loop on the twin: teacher, float student, int8 student (numpy int8 reference), same seeds
    from robot_rl.evaluate import run_episodes

    seed = cfg.seed + 70_000
    report["success_teacher"] = run_episodes(env, _TeacherAsPolicy(teacher), cfg.eval_episodes, seed)["success_rate"]
    report["success_float"] = run_episodes(env, ModelPolicy(fn, model), cfg.eval_episodes, seed)["success_rate"]
    report["success_int8"] = run_episodes(env, ModelPolicy(lambda s: int8_normalised(qm, s), model),
                                          cfg.eval_episodes, seed)["success_rate"]
    report["success_gap"] = report["success_teacher"] - report["success_int8"]
    report["eval_episodes"] = cfg.eval_episodes
    report["student_on_policy_error"] = on_policy_error(env, teacher, student_fn(result.student), cfg.holdout_episodes,
                                                        cfg.seed + 80_000)
    # sources, host bit-exactness, firmware, device
    codegen.write_sources(qm, out, cfg.name, description)
    report["host_check"] = host_check(qm, out, cfg.name, holdout, cfg.host_check_inputs, cfg.seed)
    from robot_rl.hardware.mcu.tflm import tflm_check

    report["tflite_micro"] = tflm_check(qm, holdout, cfg.seed)
    vec_rng = np.random.default_rng(cfg.seed + 1)
    x_vec = quantize_input(qm, holdout[vec_rng.choice(len(holdout), cfg.firmware_vectors)])
    codegen.write_firmware(qm, out, cfg.name, x_vec, holdout[: min(8, len(holdout))])
    report.update(computed_sizes(qm))
    report["size_source"] = "computed from the arrays (arm-none-eabi-size not installed)"
    if cfg.run_qemu and toolchain.arm_available():
        report.update(device_check(out, cfg.name, measure_portable=True))
    elif cfg.run_qemu:
        report["device"] = "skipped: arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi " \
                           "libnewlib-arm-none-eabi qemu-system-arm)"
    report["seconds"] = round(time.time() - t_start, 1)
    report["config"] = asdict(cfg)
    torch.save(result.student.state_dict(), out / "student.pt")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(format_report(report))
    return report


def format_report(r: dict[str, Any]) -> str:
    def f(key: str, fmt: str = "{:.4f}") -> str:
        return fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else str(r.get(key, "n/a"))

    lines = [f"# export-mcu report: {r['name']} ({r['target']})", "", r.get("description", ""), "",
             f"- student {' -> '.join(map(str, r['student_widths']))}, distilled with {r['distill_method']}; "
             f"model hash `{r['model_hash']}`",
             f"- int8 vs float student (normalised actions in [-1, 1], held-out visited states): max {f('max_abs_err')}, "
             f"p99 {f('p99_abs_err')}, mean {f('mean_abs_err')}; gate passed: {r['gate_passed']}; "
             f"QAT applied: {r['qat_applied']}",
             f"- clip fraction {f('clip_fraction', '{:.2e}')}",
             f"- closed-loop success over {r['eval_episodes']} episodes: teacher {f('success_teacher', '{:.2f}')}, "
             f"float student {f('success_float', '{:.2f}')}, int8 student {f('success_int8', '{:.2f}')}",
             f"- host C vs numpy int8 reference: {r['host_check']}",
             f"- tflite-micro interpreter: {r['tflite_micro']}",
             f"- flash {f('flash_bytes', '{}')} B, RAM {f('ram_bytes', '{}')} B ({r.get('size_source')}); "
             f"stack <= {f('stack_bytes_upper_bound', '{}')} B",
             f"- instructions per inference (int8 core): {f('instructions_per_inference', '{}')} "
             f"({f('instructions_per_mac', '{}')} per MAC; portable kernel {f('instructions_per_inference_portable', '{}')}); "
             f"with the float "
             f"wrapper: {f('instructions_per_act', '{}')} ({r.get('instructions_source', r.get('qemu', r.get('device', 'n/a')))})",
             f"- QEMU exit code {f('qemu_exit_code', '{}')} (host {f('host_exit_code', '{}')}), device output equals "
             f"host: {r.get('device_output_equals_host', 'n/a')}", ""]
    return "\n".join(lines)
