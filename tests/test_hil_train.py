"""`robot-rl train hil=virtual` through real processes (learner + actor over ZeroMQ on loopback), headless:
the virtual operator's interventions reach the learner's buffers and every episode carries its label and
intervention rate."""
from __future__ import annotations

import json

import numpy as np

from robot_rl.checkpoint import Checkpointer
from robot_rl.episode_store import EpisodeStore
from robot_rl.replay import ReplayBuffer
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from support import free_ports, run_cli


def test_train_with_the_virtual_operator_feeds_interventions_to_the_learner(tmp_path):
    p1, p2 = free_ports(2)
    run_dir = tmp_path / "run"
    result = run_cli("train", "env=point_reach", "algo=sac", "hil=virtual", f"run_dir={run_dir}", "num_demos=2",
                     "learner.max_env_steps=400", "learner.warmup_transitions=64", "algo.batch_size=32",
                     "learner.utd=0.25", "eval_episodes=1", "logger.wandb=disabled", "hil.virtual.window=3",
                     f"transport.transitions_port={p1}", f"transport.weights_port={p2}", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    env = PointReach(PointReachConfig())
    demo = ReplayBuffer(env.obs_spec, env.action_spec, 50_000)
    demo.load(Checkpointer(run_dir).latest() / "replay_demo")
    n = len(demo)
    intervened = demo.fields["intervened"][:n]
    demo_steps = sum(len(ep) for ep in EpisodeStore(run_dir / "demos").episodes())
    assert n > demo_steps and intervened.sum() == n - demo_steps  # recorded demos + the operator's steps
    kept = demo.fields["policy_action"][:n][intervened]
    assert not np.allclose(kept, demo.fields["action"][:n][intervened])  # the policy's proposals travelled too
    episodes = list(EpisodeStore(run_dir / "episodes" / "actor-0").episodes())
    assert episodes and all("intervention_rate" in ep.meta and "label" in ep.meta for ep in episodes)
    log = [json.loads(line) for line in (run_dir / "hil" / "actor-0.jsonl").read_text().splitlines()]
    assert sum(r["intervention_steps"] for r in log) >= intervened.sum()
    assert {r["label"] for r in log} <= {"success", "failure", ""}
