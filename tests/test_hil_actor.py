"""Interventions through the actor loop into the learner's buffers (in-process transport, same code path
as the ZeroMQ one): the operator's command replaces the policy's, the transition is marked intervened and
keeps the policy's proposal, and intervened transitions reach the demo buffer when configured. A person's
success key, typed into a terminal, labels the episode on disk and on its last transition."""
from __future__ import annotations

import os
import pty
import threading
import time

import numpy as np
import pytest

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.learner import Learner

COMMON = ["env=point_reach", "algo=sac", "logger.wandb=disabled", "logger.progress=false", "replay.prefetch=0",
          "transport.kind=inproc", "transport.chunk_size=8", "actor.pace=false", "num_demos=0"]


def run_actor(cfg, steps):
    learner = Learner(cfg)
    learner.transport.start()  # the ingest thread (learner.run() starts it; here the test drives the actor)
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    try:
        result = actor.run(max_steps=steps)
        learner.transport.wait_idle()
    finally:
        learner.close()
    return learner, actor, result


@pytest.mark.parametrize("to_demo", [True, False])
def test_virtual_operator_interventions_land_where_configured(tmp_path, to_demo):
    cfg = load_config([*COMMON, f"run_dir={tmp_path}", "hil=virtual", f"replay.interventions_to_demo={to_demo}",
                       "hil.virtual.takeover_steps=5", "hil.virtual.cooldown_steps=3", "hil.virtual.window=3"])
    learner, actor, result = run_actor(cfg, 400)
    n = len(learner.online)
    f = {k: v[:n] for k, v in learner.online.fields.items()}
    intervened = f["intervened"]
    assert 0 < intervened.sum() < n  # the untrained policy needed help, but not on every step
    # the policy's own proposal is kept where the operator drove, and equals the action elsewhere
    assert (np.abs(f["action"] - f["policy_action"]).max(axis=1)[intervened] > 1e-6).mean() > 0.9
    np.testing.assert_array_equal(f["action"][~intervened], f["policy_action"][~intervened])
    if to_demo:
        assert len(learner.demo) == int(intervened.sum())
        assert learner.demo.fields["intervened"][:len(learner.demo)].all()
    else:
        assert len(learner.demo) == 0
    # per-episode intervention rate: in each episode's meta, the run log, and the actor's summary
    episodes = list(actor.store.episodes())
    for ep in episodes:
        assert ep.meta["intervention_rate"] == pytest.approx(ep.intervened.mean())
        assert ep.meta["label"] == ("success" if ep.success else ("failure" if not ep.meta["interrupted"] else
                                                                   ep.meta["label"]))
    lines = (tmp_path / "hil" / "actor-0.jsonl").read_text().splitlines()
    assert len(lines) == len(episodes)
    assert result["hil/intervention_steps"] == intervened.sum()


def test_keyboard_success_key_labels_the_episode_and_its_last_transition(tmp_path):
    master, slave = pty.openpty()
    cfg = load_config([*COMMON, f"run_dir={tmp_path}", "hil=keyboard", f"hil.device.path={os.ttyname(slave)}",
                       "actor.realtime=true", "env.control_hz=50", "env.max_episode_steps=1000",
                       "hil.success_reward=1.0"])
    learner = Learner(cfg)
    learner.transport.start()
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    stop, result = threading.Event(), {}
    thread = threading.Thread(target=lambda: result.update(actor.run(stop=stop)))
    thread.start()
    try:
        time.sleep(0.3)
        os.write(master, b"i")  # take over
        for _ in range(10):
            os.write(master, b"\x1b[A")  # up arrow: +x (autorepeat-like)
            time.sleep(0.04)
        os.write(master, b"s")  # success
        deadline = time.monotonic() + 5
        while not any(actor.store.paths()) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
        learner.transport.wait_idle()
        learner.close()
        os.close(master)
        os.close(slave)
    first = next(actor.store.episodes())
    assert first.success and first.meta["label"] == "success" and first.meta["label_source"] == "operator"
    assert first.terminated[-1] and first.reward[-1] == 1.0  # the label is on the transition too
    assert first.intervened.sum() >= 5 and first.meta["intervention_steps"] == first.intervened.sum()
    driven = first.intervened
    assert (first.action[driven][:, 0] == 1.0).any()  # the operator's +x
    assert not np.allclose(first.action[driven], first.policy_action[driven])  # the policy's proposal kept
    # the intervened steps of every stored episode reached the learner's demo buffer (and only those)
    assert len(learner.demo) == sum(int(ep.intervened.sum()) for ep in actor.store.episodes())
