"""End to end through the real processes: `robot-rl pretrain` a chunked flow policy on PointReach, then
`robot-rl train algo=dsrl algo.pretrained=...` (learner + actor processes over ZeroMQ), then load the learner's
checkpoint into a fresh actor-side policy and act with it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from robot_rl.checkpoint import Checkpointer
from robot_rl.config import load_config
from robot_rl.evaluate import find_checkpoint, run_episodes
from robot_rl.registry import POLICIES
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from support import free_ports, run_cli

# Small networks and budgets: the whole test is ~30 s of wall time on 2 shared cores.
POLICY = ["env=point_reach", "policy=flow", "policy.backbone=mlp", "policy.width=64", "policy.depth=2",
          "policy.chunk_size=4", "policy.inference_steps=5"]


def test_pretrain_then_dsrl_train_through_learner_and_actor_processes(tmp_path) -> None:
    env_vars = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    pretrained = tmp_path / "flow.pt"
    proc = run_cli("pretrain", *POLICY, "policy.execute_steps=2", "num_demos=5", "steps=150",
                   f"out={pretrained}", f"run_dir={tmp_path}/pre", "algo.batch_size=64", timeout=120, env=env_vars)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["episodes"] == 5
    base = torch.load(pretrained, weights_only=True)["policy"]

    run_dir = tmp_path / "dsrl"
    t_port, w_port = free_ports(2)
    # noise_actor_hidden_dims differs from the pretraining config: the fine-tuning head is rebuilt, not loaded.
    proc = run_cli("train", *POLICY, "policy.execute_steps=1", "policy.noise_actor_hidden_dims=[32,32]",
                   "algo=dsrl", f"algo.pretrained={pretrained}", "algo.batch_size=32",
                   "algo.critic_hidden_dims=[32,32]", "learner.max_env_steps=250", "learner.warmup_transitions=60",
                   "learner.publish_every=20", "num_demos=3", "eval_episodes=2", "logger.progress=false",
                   f"transport.transitions_port={t_port}", f"transport.weights_port={w_port}",
                   f"run_dir={run_dir}", timeout=240, env=env_vars)
    learner_log = (run_dir / "logs" / "learner.log")
    assert proc.returncode == 0, (proc.stderr[-2000:], learner_log.read_text()[-3000:] if learner_log.exists() else "")
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["episodes"] == 2

    ckpt, _ = find_checkpoint(run_dir)
    state = Checkpointer.load_state(ckpt)
    assert state["updates"] > 0 and state["algo"]["updates"] == state["updates"]
    cfg = load_config([*POLICY, "policy.execute_steps=1", "policy.noise_actor_hidden_dims=[32,32]"]).policy
    env = PointReach(PointReachConfig())
    policy = POLICIES.make("flow", cfg, env.obs_spec, env.action_spec)
    policy.load_state_dict({k: torch.as_tensor(v) for k, v in state["policy"].items()}, strict=True)
    policy.eval()
    # DSRL froze the generator and trained only the latent-noise actor, which the actor-side copy now uses.
    weights = policy.state_dict()
    assert policy.steer_noise.item() == 1.0
    for k, v in base.items():
        if k.startswith(("encoder.", "denoiser.")):
            assert torch.equal(weights[k], v), f"DSRL changed the frozen generator weight {k}"
    assert policy.noise_actor.head.weight.abs().sum() > 0, "the latent actor never trained (head still zero-init)"

    # eval.json is the deterministic evaluation of this very checkpoint: running it again gives the same result
    again = run_episodes(PointReach(PointReachConfig()), policy, 2, seed=10_000)
    assert again["success_rate"] == evaluation["success_rate"]
    assert again["mean_return"] == pytest.approx(evaluation["mean_return"], abs=1e-4)

    obs = env.reset(seed=3)
    actions = []
    for _ in range(5):
        a = policy.act(obs, deterministic=False)
        assert a.shape == (2,) and a.dtype == np.float32 and np.isfinite(a).all()
        assert (a >= env.action_spec.low).all() and (a <= env.action_spec.high).all()
        actions.append(a)
        obs = env.step(a).obs
    assert np.ptp(np.stack(actions), axis=0).max() > 0  # the policy reacts to the changing observation
