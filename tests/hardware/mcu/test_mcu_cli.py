"""``robot-rl export-mcu`` on a real checkpoint written in the learner's format."""
from __future__ import annotations

import json

import numpy as np
import torch

from robot_rl.checkpoint import Checkpointer
from robot_rl.cli import FEATURE_COMMANDS, build_parser, main
from robot_rl.config import load_config, save_resolved
from robot_rl.policies.gaussian import GaussianPolicy
from robot_rl.sim.point_reach import PointReach, PointReachConfig


def _bc_checkpoint(run_dir):
    """A Gaussian PointReach policy behaviour-cloned from the scripted expert, saved as the learner saves it."""
    cfg = load_config(["env=point_reach", "policy.hidden_dims=[64,64]"])
    env = PointReach(PointReachConfig())
    policy = GaussianPolicy(cfg.policy, env.obs_spec, env.action_spec)
    expert, rng = env.expert(), np.random.default_rng(0)
    states = rng.uniform(0, 1, (2048, 6)).astype(np.float32)
    states[:, 4:] = states[:, 2:4] - states[:, :2]
    obs = {"state": torch.as_tensor(states)}
    target = torch.as_tensor(expert.act({"state": states}) * 0.95)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(policy.forward_act(obs, deterministic=True), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_resolved(cfg, run_dir / "config_learner.yaml")
    Checkpointer(run_dir).save("ckpt-00000300", {"policy": policy.state_dict()}, {})


def test_export_mcu_registered():
    assert "robot_rl.hardware.mcu.cli" in FEATURE_COMMANDS
    args = build_parser().parse_args(["export-mcu", "checkpoint=x", "out=y"])
    assert callable(args.func) and args.overrides == ["checkpoint=x", "out=y"]


def test_export_mcu_from_checkpoint(tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    _bc_checkpoint(run)
    out = tmp_path / "mcu"
    rc = main(["export-mcu", f"checkpoint={run}", "target=cortex-m4", f"out={out}", "rounds=2",
               "steps_per_round=500", "eval_episodes=10", "qemu=false", "name=reach_policy"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["host_check"]["int8_bit_exact"] and report["host_check"]["float_wrapper_bit_exact"]
    assert report["gate_passed"] and report["max_abs_err"] <= 0.1
    assert report["success_teacher"] >= 0.9
    assert report["success_int8"] >= report["success_teacher"] - 0.1
    assert "gaussian policy" in report["description"]
    for f in ("reach_policy.h", "reach_policy.c", "report.md", "student.pt", "firmware/main.c",
              "firmware/vectors.h", "firmware/stm32f405.ld", "firmware/startup_stm32f405.c", "firmware/Makefile"):
        assert (out / f).is_file(), f
    assert report["model_hash"] in (out / "reach_policy.h").read_text()
    printed = capsys.readouterr().out
    assert '"max_abs_err"' in printed and "closed-loop success" in printed
