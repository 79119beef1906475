"""End to end over real DDS and real ZeroMQ: the twin node publishes on the real robot's topics, the actor node
(robot env + actor, started the way real.launch.py starts it: executable + parameter files) streams to a
learner process over CurveZMQ, and the episode lands in the learner, in the actor's store and in a bag."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
pytest.importorskip("rosbags", reason="needs rosbags: run `make test-ros`")

from ros_rig import ROOT  # noqa: E402
from support import free_ports  # noqa: E402

pytestmark = pytest.mark.ros
BIN = Path(sys.executable).parent
STEPS = 30


def test_twin_node_actor_node_and_learner(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    cli = [sys.executable, "-m", "robot_rl.cli"]
    subprocess.run([*cli, "keys", str(tmp_path / "keys"), "--actors", "robot1"], check=True, env=env,
                   capture_output=True, timeout=60)
    p1, p2 = free_ports(2)
    run = tmp_path / "run"
    learner_args = [*cli, "learner", "env=panda_pick_cube", "env.obs=pixels", "env.image_size=64", "policy.encoder=drq",
                    "learner.utd=0", f"learner.max_env_steps={STEPS}", "learner.checkpoint_every_s=1",
                    f"transport.transitions_port={p1}", f"transport.weights_port={p2}",
                    f"transport.keys_dir={tmp_path / 'keys'}", f"run_dir={run}", "logger.wandb=disabled",
                    "logger.progress=false"]
    config = ROOT / "launch" / "config"
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("learner", "twin", "actor")}
    procs = {"learner": subprocess.Popen(learner_args, stdout=logs["learner"], stderr=subprocess.STDOUT, env=env),
             "twin": subprocess.Popen([str(BIN / "robot_rl_twin_node"), "--ros-args", "--params-file",
                                       str(config / "sim.yaml")], stdout=logs["twin"], stderr=subprocess.STDOUT,
                                      env=env)}
    try:
        for _ in range(600):  # the learner writes its resolved config before it binds
            if (run / "config_learner.yaml").exists():
                break
            assert procs["learner"].poll() is None, (tmp_path / "learner.log").read_text()
            time.sleep(0.1)
        # The actor starts at the twin's start pose and runs its few steps in seconds: start it once the learner
        # runs (its first checkpoint, written every second from its loop), or a learner still starting up on a
        # loaded machine would ack nothing within the actor's drain time and SIGTERM would find it without its
        # handler.
        for _ in range(1800):
            if any((run / "checkpoints").glob("ckpt-*")):
                break
            assert procs["learner"].poll() is None, (tmp_path / "learner.log").read_text()
            time.sleep(0.1)
        procs["actor"] = subprocess.Popen(
            [str(BIN / "robot_rl_actor_node"), "--ros-args", "--params-file", str(config / "real.yaml"),
             "--params-file", str(config / "sim.yaml"), "-p", f"train_config:={run / 'config_learner.yaml'}",
             "-p", "actor_id:=robot1", "-p", "key_name:=robot1", "-p", f"max_steps:={STEPS}",
             "-p", f"bag_dir:={tmp_path / 'bags'}"], stdout=logs["actor"], stderr=subprocess.STDOUT, env=env)
        rc_actor = procs["actor"].wait(timeout=240)
        # SIGTERM stops the learner (even inside its pixel evaluation) and the twin node promptly and cleanly
        procs["learner"].terminate()
        procs["twin"].terminate()
        rc_learner = procs["learner"].wait(timeout=60)
        rc_twin = procs["twin"].wait(timeout=30)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    actor_log = (tmp_path / "actor.log").read_text()
    assert rc_actor == 0, actor_log[-4000:]
    assert rc_learner == 0, (tmp_path / "learner.log").read_text()[-4000:]
    assert rc_twin == 0, (tmp_path / "twin.log").read_text()[-4000:]
    # the learner acked every chunk (it acks only after validating + ingesting), none rejected, over CurveZMQ
    flat = " ".join(actor_log.split())
    acked = re.search(r"'transport/acked': ([0-9.]+)", flat)
    assert acked and float(acked.group(1)) >= STEPS / 32 and "'transport/rejected': 0.0" in flat, flat[-2000:]
    assert "robot1" in (tmp_path / "learner.log").read_text()
    # the actor's own episode store: STEPS transitions from the twin's cameras, in one (stopped) episode, or more
    # where a stale-sensor hold on a loaded machine cut one short
    episodes = sorted((run / "episodes" / "robot1").glob("*.npz"))
    assert episodes, actor_log[-3000:]
    data = np.load(episodes[0])
    images = [k for k in data.files if "images" in k]
    assert images, data.files
    frames = data[images[0]]
    assert frames.shape[1:] == (64, 64, 3) and frames.std() > 5  # rendered scenes, not blank frames
    state_key = [k for k in data.files if k.endswith("state")][0]
    states = np.concatenate([np.load(e)[state_key] for e in episodes])
    assert states.shape[0] >= STEPS and np.isfinite(states).all()
    assert np.abs(np.diff(states[:, :3], axis=0)).max() > 1e-3  # the twin's TCP moved under the actor
    # the bag of that episode reads back with rosbags
    from rosbags.rosbag2 import Reader

    # one bag per episode: one, or more where a stale-sensor hold on a loaded machine cut an episode short
    bags = sorted((tmp_path / "bags").iterdir())
    assert bags and all(b.name.startswith("episode_") for b in bags), bags
    topics, n = set(), 0
    for bag in bags:
        with Reader(bag) as reader:
            topics |= {c.topic for c in reader.connections}
            n += sum(1 for _ in reader.messages())
    assert {"/joint_states", "/cartesian_target", "/cameras/front/image_raw", "/robot_rl/action"} <= topics
    assert n > 3 * STEPS
