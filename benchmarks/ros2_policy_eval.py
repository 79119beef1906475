"""A checkpoint's deterministic policy on the robot path and on the learner's in-process twin, side by side.

The robot path is the one ``sim.launch.py`` runs, without a learner: ``robot_rl_twin_node`` and
``robot_rl_safety_node`` in their own processes (the installed executables, real.yaml + sim.yaml), and the robot
env of ``robot_rl_actor_node`` (:class:`RosRobotEnv`, ``command.via_safety_node``) in this process, driven by the
checkpoint's policy at ``control_hz``. The same policy then runs on the learner's env (``ENVS.make`` of the run's
config), as the learner's evaluation does. Both are deterministic (the policy's mean action) unless
``--stochastic`` (sampled, as the training actor acts).

    unshare -n bash -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo;
        ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST .venv-ros/bin/python benchmarks/ros2_policy_eval.py \\
        runs/learn40/learner/checkpoints/ckpt-0000003146 --episodes 5'

Per episode it prints success and length on both paths; ``--trace FILE`` saves every step's observation state,
policy action and the twin's physics clock (npz) for a step-by-step comparison. The twin node reports how far its
physics fell behind the wall clock (``physics_lag_s``): a twin that cannot keep real time is a slower robot than
the one the learner evaluates on. Ends with one JSON line: ``ros_success``, ``twin_success``, ``episodes``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "launch" / "config"


def _policy(checkpoint: Path, obs_spec, action_spec):  # noqa: ANN001, ANN202 (specs of either env)
    from robot_rl.checkpoint import Checkpointer
    from robot_rl.config import load_resolved
    from robot_rl.evaluate import find_checkpoint
    from robot_rl.registry import make_policy

    ckpt, run_dir = find_checkpoint(checkpoint)
    cfg = load_resolved(run_dir / "config_learner.yaml", [])
    policy = make_policy(cfg, obs_spec, action_spec)
    state = Checkpointer.load_state(ckpt)
    policy.load_state_dict({k: torch.as_tensor(v) for k, v in state["policy"].items()})
    policy.eval()
    return cfg, policy


def _episodes(env, policy, episodes: int, seed: int, trace: list[dict] | None,  # noqa: ANN001
              deterministic: bool = True) -> list[tuple[bool, int]]:
    out = []
    for ep in range(episodes):
        obs = env.reset(seed=seed + ep)
        policy.reset()
        steps, done, success = 0, False, False
        while not done:
            action = policy.act(obs, deterministic=deterministic)
            if trace is not None:
                trace.append({"episode": ep, "step": steps, "state": np.asarray(obs["state"]).copy(),
                              "action": np.asarray(action).copy(), "time": time.monotonic()})
            result = env.step(action)
            obs, steps = result.obs, steps + 1
            done = result.terminated or result.truncated
            success = bool(done and result.success)
        out.append((success, steps))
        print(f"  episode {ep}: {'success' if success else 'fail'} in {steps} steps", flush=True)
    return out


def _ros_path(args: argparse.Namespace, python_bin: Path) -> tuple[list[tuple[bool, int]], dict, list[dict]]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from robot_rl.hardware.ros2.config import RobotNodeConfig, load_params_files
    from robot_rl.hardware.ros2.robot_env import RosRobotEnv

    files = [str(CONFIG / "real.yaml"), str(CONFIG / "sim.yaml")]
    stats_dir = Path(args.out_dir)
    stats_dir.mkdir(parents=True, exist_ok=True)
    env_vars = dict(os.environ, PYTHONUNBUFFERED="1")
    twin = subprocess.Popen([str(python_bin / "robot_rl_twin_node"), "--ros-args", "-r", "__node:=robot_rl_twin",
                             "--params-file", files[1], "-p", f"stats_file:={stats_dir / 'twin_stats.json'}"],
                            env=env_vars)
    safety = subprocess.Popen([str(python_bin / "robot_rl_safety_node"), "--ros-args", "-r",
                               "__node:=robot_rl_safety", "-p", f"params_files:=[{files[0]},{files[1]}]"],
                              env=env_vars)
    rclpy.init()
    node = rclpy.create_node("robot_rl_actor")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()
    cfg = load_params_files(files, "robot_rl_actor", RobotNodeConfig,
                            {"command.via_safety_node": True, "bag_dir": ""})
    env = RosRobotEnv(cfg, node, stop=stop)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    trace: list[dict] = []
    try:
        _, policy = _policy(args.checkpoint, env.obs_spec, env.action_spec)
        results = _episodes(env, policy, args.episodes, args.seed, trace, not args.stochastic)
        stats = env.stats()
    finally:
        env.close()
        for proc in (twin, safety):
            proc.send_signal(2)
        for proc in (twin, safety):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    twin_stats = stats_dir / "twin_stats.json"
    if twin_stats.exists():
        stats.update({f"twin/{k}": v for k, v in json.loads(twin_stats.read_text()).items()})
    return results, stats, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/ros2_policy_eval"))
    parser.add_argument("--trace", type=Path, default=None, help="npz of every step on both paths")
    parser.add_argument("--skip-twin", action="store_true", help="only the robot path")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample actions as the training actor does (default: the deterministic mean)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print("robot path (twin node + safety node + robot env over DDS):", flush=True)
    ros, stats, ros_trace = _ros_path(args, Path(sys.executable).parent)
    twin, twin_trace = [], []
    if not args.skip_twin:
        from robot_rl.evaluate import find_checkpoint
        from robot_rl.config import load_resolved
        from robot_rl.registry import ENVS

        _, run_dir = find_checkpoint(args.checkpoint)
        cfg = load_resolved(run_dir / "config_learner.yaml", [])
        env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
        _, policy = _policy(args.checkpoint, env.obs_spec, env.action_spec)
        print("learner's in-process twin:", flush=True)
        twin = _episodes(env, policy, args.episodes, args.seed, twin_trace, not args.stochastic)
        env.close()
    if args.trace is not None:
        np.savez(args.trace, **{f"{path}_{key}": np.array([row[key] for row in rows])
                                for path, rows in (("ros", ros_trace), ("twin", twin_trace)) if rows
                                for key in rows[0]})
    keep = ("twin/", "holds/", "guard/", "frame_age", "frame_to_command", "obs_to_command", "period_jitter")
    print({k: round(v, 3) for k, v in stats.items() if k.startswith(keep)})
    rate = lambda rs: sum(s for s, _ in rs) / len(rs) if rs else None  # noqa: E731
    print(json.dumps({"ros_success": rate(ros), "twin_success": rate(twin), "episodes": args.episodes,
                      "deterministic": not args.stochastic,
                      "ros_steps": [n for _, n in ros], "twin_steps": [n for _, n in twin],
                      "twin_physics_lag_s": stats.get("twin/physics_lag_s")}))


if __name__ == "__main__":
    main()
