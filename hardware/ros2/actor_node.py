"""``robot_rl_actor_node``: the robot env and the actor in one rclpy node on the robot controller.

    ros2 launch robot_rl real.launch.py                      (normal route)
    ros2 run robot_rl robot_rl_actor_node --ros-args --params-file launch/config/real.yaml

The ROS executor spins on a background thread (sensor callbacks, watchdog); the main thread runs
:class:`robot_rl.actor.Actor` over :class:`RosRobotEnv` at ``control_hz``, streaming transitions to the learner
over the core ZeroMQ transport (CurveZMQ keys when ``transport.keys_dir`` is set). SIGINT/SIGTERM stop the
actor after the current step, flush the transport and leave the robot holding its position.
"""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params

log = logging.getLogger("robot_rl.ros2.actor_node")
# The env paces itself (one action per control period, sleeping to the tick inside ``step``): the actor loop
# must neither sleep again (realtime) nor wait for the learner's update budget (pace).
FORCED_OVERRIDES = ("actor.realtime=false", "actor.pace=false")


def load_train_config(cfg: RobotNodeConfig) -> Any:
    from robot_rl.config import load_config, load_resolved

    named = {"transport.host": cfg.learner_host, "transport.keys_dir": cfg.keys_dir, "actor.actor_id": cfg.actor_id}
    # the node's inference backend first: an explicit actor.inference in `overrides` still wins
    overrides = [f"actor.inference={cfg.inference}", *cfg.overrides, *(f"{k}={v}" for k, v in named.items() if v),
                 *FORCED_OVERRIDES]
    if cfg.train_config:
        return load_resolved(cfg.train_config, overrides)
    return load_config(overrides)


def run(node: Any, cfg: RobotNodeConfig, stop: threading.Event, max_steps: int | None = None) -> dict[str, float]:
    """Build env + transport + actor on ``node`` (already spinning elsewhere) and run until ``stop``."""
    import torch

    from robot_rl.actor import Actor
    from robot_rl.config import config_hash, save_resolved
    from robot_rl.hardware.ros2.realtime import promote_helper_threads
    from robot_rl.hardware.ros2.robot_env import RosRobotEnv, StoppedDuringReset
    from robot_rl.specs import spec_hash
    from robot_rl.transport.zmq_actor import ZmqActorClient

    torch.set_num_threads(1)
    train_cfg = load_train_config(cfg)
    env = RosRobotEnv(cfg, node, stop=stop)
    actor_id = train_cfg.actor.actor_id
    run_dir = Path(train_cfg.run_dir)
    save_resolved(train_cfg, run_dir / f"config_{actor_id}.yaml")
    transport = ZmqActorClient(train_cfg.transport, actor_id, env.obs_spec, env.action_spec,
                               spec_hash(env.obs_spec, env.action_spec), config_hash(train_cfg),
                               spill_dir=run_dir / "spill" / actor_id, actor_key_name=cfg.key_name or actor_id)
    actor = Actor(train_cfg, transport, envs=[env])
    promote_helper_threads(cfg.policy_realtime, "robot_rl_actor_node transport")  # no GIL holder the load preempts
    try:
        try:
            result = actor.run(max_steps=max_steps, stop=stop)
        except StoppedDuringReset as e:  # SIGINT while the robot was resetting: a clean stop
            if not stop.is_set():
                raise
            log.info("stopped during a reset (%s)", e)
            result = {}
    finally:
        env.close()
        transport.close(drain_s=5.0)
    result.update(env.stats())
    log.info("actor %s finished: %s", actor_id, {k: round(v, 3) for k, v in result.items()})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from robot_rl.hardware.ros2.realtime import log_off_the_loop
    from robot_rl.hardware.ros2.ros_io import (keep_fast_dds_off_shared_memory, node_parameters, node_session,
                                                spin_until)
    from robot_rl.run_log import setup_logging

    setup_logging()
    log_off_the_loop()  # the policy loop runs real-time: records are written by a normal thread
    # before rclpy.init: a shared-memory port opened under the participant's send mutex when a process joins can
    # hold the targets' publish for ~0.3 s (README, Limits), as it held the safety node's commands
    keep_fast_dds_off_shared_memory()
    with node_session("robot_rl_actor", argv) as (node, executor, stop):
        # The spinner is joined before node_session tears down: a daemon thread still blocked in rcl_wait at
        # interpreter exit made the process abort ("terminate called without an active exception", exit -6).
        cfg = from_params(RobotNodeConfig, node_parameters(node))
        spinner = threading.Thread(target=spin_until, name="ros-executor",
                                   args=(executor, stop, cfg.policy_realtime, "robot_rl_actor_node executor"))
        spinner.start()
        try:
            run(node, cfg, stop, cfg.max_steps or None)
        finally:
            stop.set()
            spinner.join(timeout=5.0)
            if spinner.is_alive():
                log.warning("ROS executor thread did not stop within 5 s; shutting down anyway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
