"""Actor loop + learner loop in one process over the in-process transport (the single-machine stand-in)."""

import threading
import time

import numpy as np
import pytest
import torch

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.learner import Learner
from support import run_with_actor_thread


def test_inproc_actor_learner_loop(tmp_path):
    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "learner.warmup_transitions=64", "algo.batch_size=32",
                       "learner.max_env_steps=600", "learner.utd=0.25", "learner.publish_every=10",
                       "replay.prefetch=0", "actor.num_envs=2", "transport.kind=inproc", "transport.chunk_size=16"])
    learner = Learner(cfg)
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, result = run_with_actor_thread(learner, actor, join_s=30)
    assert learned["env_steps"] >= 600 and learned["updates"] >= 0.25 * 600
    assert result["weights_version"] > 0  # weights flowed back to the actor
    ids = list(learner.online.iter_ids())
    assert len(ids) == len(set(ids)) and len(ids) <= result["steps"]
    # every episode is in the actor's local store, including the one cut by the stop
    assert sum(len(ep) for ep in actor.store.episodes()) == result["steps"]
    assert (np.asarray([e.actor_id for e in actor.store.episodes()]) == "actor-0").all()


@pytest.mark.parametrize("inference,robot_env", [("torch", False), ("onnxruntime", True)])
def test_non_finite_policy_actions_hold_and_the_actor_resumes_with_new_weights(tmp_path, inference, robot_env):
    """Regression: NaN actions raised FloatingPointError out of Actor.run, ending the robot's node. With a robot
    env the weights are swapped after a command; while holding no command goes out, and they must still come."""
    if inference == "onnxruntime":
        pytest.importorskip("onnxruntime")
    from robot_rl.registry import ENVS

    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "transport.kind=inproc", "actor.pace=false",
                       f"actor.inference={inference}"])
    learner = Learner(cfg)
    envs = [_SlackPointReach(ENVS.make(cfg.env.name, cfg.env, seed=0))] if robot_env else None
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"), envs=envs)
    good = {k: v.detach().cpu().numpy().copy() for k, v in actor.policy.state_dict().items()}
    with torch.no_grad():
        for p in actor.policy.parameters():
            p.fill_(float("nan"))  # broken weights: every action is NaN
    out = {}
    stop = threading.Event()

    def run() -> None:
        try:
            out["result"] = actor.run(max_steps=50, stop=stop)
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            out["error"] = e
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(2.0)  # a few control periods with NaN actions
    assert "error" not in out and thread.is_alive(), f"the actor died: {out.get('error')!r}"
    assert actor.stats.non_finite_actions >= 3 and actor.stats.steps == 0  # held: no env step, nothing sent
    learner.transport.publish_weights(good, version=1)  # the learner's next weights fix the policy
    thread.join(30)
    stop.set()
    assert not thread.is_alive() and "error" not in out
    assert out["result"]["steps"] == 50 and out["result"]["non_finite_actions"] >= 3
    episodes = list(actor.store.episodes())
    assert sum(len(ep) for ep in episodes) == 50
    assert all(np.isfinite(ep.action).all() for ep in episodes)


class _SlackPointReach:
    """A point-reach twin with the robot env's slack hook (``RosRobotEnv.slack_tasks``): tasks run after the
    action is applied, as after a command is published; ``events`` records the order."""

    def __init__(self, env) -> None:
        self.env, self.slack_tasks, self.events = env, [], []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
        result = self.env.step(action)
        self.events.append("command")
        for task in self.slack_tasks:
            task()
        return result


def test_a_robot_env_gets_new_weights_after_its_command_not_before_an_inference(tmp_path):
    pytest.importorskip("onnxruntime")
    from robot_rl.registry import ENVS

    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "transport.kind=inproc", "actor.pace=false",
                       "actor.inference=onnxruntime"])
    learner = Learner(cfg)
    env = _SlackPointReach(ENVS.make(cfg.env.name, cfg.env, seed=0))
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"), envs=[env])
    assert env.slack_tasks == [actor._maybe_swap_weights]
    load = actor.policy.load_state_dict

    def recorded_load(state, strict=True):
        env.events.append("swap")
        return load(state, strict)
    actor.policy.load_state_dict = recorded_load
    weights = {k: v.detach().cpu().numpy().copy() for k, v in learner.algo.policy_weights().items()}
    for version in (1, 2, 3):
        learner.transport.publish_weights(weights, version=version)
        actor.run(max_steps=5 * version)
    swaps = [i for i, e in enumerate(env.events) if e == "swap"]
    assert len(swaps) == 3 and actor.stats.weights_version == 3
    assert all(env.events[i - 1] == "command" for i in swaps)  # in the slack after a command, every time
