"""An actor obeys the dashboard's commands relayed by the learner over the ZeroMQ wire: pause stops its env steps,
resume restarts them, and a success label ends the current episode labelled, through the teleop keys' path."""
from __future__ import annotations

import threading
import time

import pytest

from robot_rl.actor import Actor
from robot_rl.config import config_hash, load_config
from robot_rl.learner import Learner
from robot_rl.transport.wire import Control
from robot_rl.transport.zmq_actor import ZmqActorClient
from support import free_ports

pytestmark = pytest.mark.usefixtures("single_thread")


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_pause_resume_and_label_reach_the_actor_loop(tmp_path):
    p1, p2 = free_ports(2)
    cfg = load_config(["env=point_reach", "algo=sac", "logger.wandb=disabled", f"run_dir={tmp_path}",
                       f"transport.transitions_port={p1}", f"transport.weights_port={p2}", "actor.pace=false",
                       "num_demos=0", "hil=virtual", "hil.virtual.takeover_prob=0.0", "env.max_episode_steps=100000",
                       "actor.realtime=true", "env.control_hz=200", "transport.heartbeat_interval_s=0.1"])
    learner = Learner(cfg)
    learner.transport.start()
    transport = ZmqActorClient(cfg.transport, "actor-0", learner.obs_spec, learner.action_spec, learner.spec_hash,
                               config_hash(cfg))
    actor = Actor(cfg, transport)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: actor.run(stop=stop), daemon=True)
    thread.start()
    try:
        _wait(lambda: "actor-0" in learner.transport.connected_actors() and actor.stats.steps > 20, 20, "stepping")
        assert learner.transport.send_control("actor-0", Control("pause", time.time()))
        assert not learner.transport.send_control("actor-9", Control("pause", time.time()))  # no such actor
        _wait(lambda: actor.status.paused, 10, "the pause")
        time.sleep(0.1)
        steps = actor.stats.steps
        time.sleep(0.5)
        assert actor.stats.steps == steps  # paused: nothing stepped
        _wait(lambda: any(p["status"] and p["status"]["paused"] for p in learner.transport.fleet()), 10,
              "the actor to report itself paused to the learner")
        learner.transport.send_control("actor-0", Control("resume", time.time()))
        _wait(lambda: actor.stats.steps > steps + 10, 10, "steps after resume")
        assert not actor.status.paused
        before = actor.stats.episodes
        learner.transport.send_control("actor-0", Control("label_success", time.time()))
        _wait(lambda: actor.stats.episodes > before, 10, "the labelled episode to end")
    finally:
        stop.set()
        thread.join(10)
        transport.close()
        learner.close()
    # The operator's label (source: the actor's operator, not the env's own success test) ends the episode.
    labelled = [ep for ep in actor.store.episodes() if ep.meta["label_source"] == "virtual_operator"
                and ep.meta["label"] == "success"]
    assert len(labelled) == 1 and labelled[0].success and labelled[0].terminated[-1]
    assert labelled[0].reward[-1] == cfg.hil.success_reward  # on the transition too, as with the teleop key
