"""Control loop through DDS: the rclpy robot env + a Gaussian policy at 10 Hz and 100 Hz against a fake
ros2_control + two cameras (cyclonedds, in its own process). Run inside the ROS venv and a private network
namespace, as the ROS suite does:

    unshare -n bash -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo;
        ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST .venv-ros/bin/python benchmarks/ros2_loop.py'

Per rate: ``period_jitter_p50/p99_ms`` (|interval between consecutive commands - period|, at publish), and
``obs_to_command_p50/p99_ms`` (observation handed to the policy -> command published: policy inference + safety +
serialization + publish). Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ros2"))


def fake_robot_process(mode: str, seconds: float) -> None:
    from ros_rig import FakeRobot

    robot = FakeRobot("/joint_trajectory_controller/joint_trajectory", mode, image_hw=(96, 128))
    time.sleep(seconds)
    robot.close()


def run_rate(hz: float, seconds: float) -> dict[str, float]:
    import rclpy
    import torch
    from rclpy.executors import SingleThreadedExecutor

    from robot_rl.config import load_config
    from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params
    from robot_rl.hardware.ros2.robot_env import RosRobotEnv
    from robot_rl.registry import POLICIES

    torch.set_num_threads(1)
    cfg = from_params(RobotNodeConfig, {"command.mode": "joint_trajectory", "control_hz": hz,
                                        "topics.command": "/joint_trajectory_controller/joint_trajectory",
                                        "topics.gripper_command": "", "image_size": 64, "reset_time_s": 0.5})
    robot = subprocess.Popen([sys.executable, __file__, "--fake-robot", str(seconds + 30)])
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("robot_rl_actor", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        env = RosRobotEnv(cfg, node)
        train = load_config(["env.obs=pixels"])
        policy = POLICIES.make(train.policy.name, train.policy, env.obs_spec, env.action_spec)
        policy.eval()
        obs = env.reset()
        env.latency_ms.clear()
        env.tick_times.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batched = {k: v[None] for k, v in obs.items()}
            action = policy.act(batched, deterministic=False)[0]
            obs = env.step(action).obs
        stats = env.stats()
        steps = len(env.tick_times)
        env.close()
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=context)
        robot.terminate()
        robot.wait(10)
    return {"hz": hz, "steps": steps, **{k: round(v, 3) for k, v in stats.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fake-robot", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_robot:
        fake_robot_process("joint_trajectory", args.fake_robot)
        return
    results = {}
    for hz in (10.0, 100.0):
        r = run_rate(hz, args.seconds)
        results[f"{int(hz)}hz"] = r
        print(f"{int(hz):>4} Hz: {r['steps']} steps, period jitter p50 {r['period_jitter_p50_ms']:.3f} ms "
              f"p99 {r['period_jitter_p99_ms']:.3f} ms, obs->command p50 {r['obs_to_command_p50_ms']:.3f} ms "
              f"p99 {r['obs_to_command_p99_ms']:.3f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
