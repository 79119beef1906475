"""``robot-rl export-mcu``: distil + quantize + generate C99 for a Cortex-M (see :mod:`.export`).

    robot-rl export-mcu checkpoint=RUN_DIR target=cortex-m4 out=DIR [hidden=64,64] [method=dagger|bc]
                        [rounds=6] [episodes_per_round=10] [steps_per_round=1500] [eval_episodes=20]
                        [name=rrl_policy] [qemu=true] [seed=0] [hydra overrides of the teacher's config]

``checkpoint`` is a run directory or a ``checkpoints/ckpt-*`` directory written by ``robot-rl train``/``learner``
(its ``config_learner.yaml`` gives the env and policy), or ``expert`` for the env's scripted expert (env from
the overrides, e.g. ``env=point_reach``). torch and mujoco are imported only when the command runs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

EXPORT_MCU_ARGS = ("checkpoint", "target", "out", "hidden", "method", "rounds", "episodes_per_round",
                   "steps_per_round", "eval_episodes", "name", "qemu", "seed")


def register(subparsers: Any) -> None:
    help_text = "distil a policy into an int8 MLP and write C99 + firmware for a Cortex-M: checkpoint=... out=DIR"
    p = subparsers.add_parser("export-mcu", help=help_text, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value arguments above, then hydra overrides")
    p.add_argument("--config", help="teacher=expert: start from a resolved config file (run_dir/config.yaml)")
    p.set_defaults(func=cmd_export_mcu)


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"expected a boolean, got {value!r}")


def load_teacher(checkpoint: str, config_file: str | None, overrides: Sequence[str]) -> tuple[Any, Any, str]:
    """(env, teacher, description) for a checkpoint path or ``expert``."""
    import torch

    from robot_rl.checkpoint import Checkpointer
    from robot_rl.config import load_config, load_resolved
    from robot_rl.evaluate import find_checkpoint
    from robot_rl.hardware.mcu.student import as_teacher
    from robot_rl.registry import ENVS, make_policy

    if checkpoint == "expert":
        cfg = load_resolved(config_file, overrides) if config_file else load_config(overrides)
        env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
        if not hasattr(env, "expert"):
            raise SystemExit(f"env {cfg.env.name!r} has no scripted expert; pass checkpoint=RUN_DIR")
        return env, as_teacher(env.expert()), f"teacher: scripted expert of {cfg.env.name}"
    ckpt, run_dir = find_checkpoint(checkpoint)
    cfg = load_resolved(run_dir / "config_learner.yaml", overrides)
    env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
    policy = make_policy(cfg, env.obs_spec, env.action_spec)  # on policy.obs_keys, as the run trained it
    state = Checkpointer.load_state(ckpt)
    policy.load_state_dict({k: torch.as_tensor(v) for k, v in state["policy"].items()})
    return env, as_teacher(policy), f"teacher: {cfg.policy.name} policy from {ckpt} on {cfg.env.name}"


def cmd_export_mcu(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.hardware.mcu.distill import DistillConfig
    from robot_rl.hardware.mcu.export import ExportConfig, export
    from robot_rl.hardware.mcu.student import StudentConfig

    from robot_rl.cli import split_extra

    rest, extra = split_extra(overrides, EXPORT_MCU_ARGS)
    if "checkpoint" not in extra or "out" not in extra:
        raise SystemExit("robot-rl export-mcu needs checkpoint=RUN_DIR|expert and out=DIR")
    try:
        hidden = [int(h) for h in extra.get("hidden", "64,64").split(",")]
    except ValueError:
        raise SystemExit(f"hidden must be comma-separated integers, got {extra['hidden']!r}") from None
    d = DistillConfig()
    distill = DistillConfig(method=extra.get("method", d.method), rounds=int(extra.get("rounds", d.rounds)),
                            episodes_per_round=int(extra.get("episodes_per_round", d.episodes_per_round)),
                            steps_per_round=int(extra.get("steps_per_round", d.steps_per_round)),
                            seed=int(extra.get("seed", d.seed)), student=StudentConfig(hidden=hidden))
    cfg = ExportConfig(target=extra.get("target", "cortex-m4"), name=extra.get("name", "rrl_policy"), distill=distill,
                       eval_episodes=int(extra.get("eval_episodes", 20)), run_qemu=_bool(extra.get("qemu", "true")),
                       seed=int(extra.get("seed", 0)))
    env, teacher, description = load_teacher(extra["checkpoint"], args.config, rest)
    try:
        report = export(env, teacher, cfg, Path(extra["out"]), description)
    finally:
        env.close()
    print((Path(extra["out"]) / "report.md").read_text())
    keys = ("max_abs_err", "p99_abs_err", "mean_abs_err", "clip_fraction", "success_teacher", "success_float",
            "success_int8", "flash_bytes", "ram_bytes", "instructions_per_inference", "model_hash")
    print(json.dumps({k: report.get(k) for k in keys}))
    ok = report["host_check"]["int8_bit_exact"] and report.get("qemu_exit_code", 0) == 0
    return 0 if ok else 1
