"""The command stream to ros2_control with the safety node in its own process, while the actor runs the policy.

Processes, as ``real.launch.py`` runs them: a fake ros2_control (cyclonedds, joint states at 120 Hz) and two
cameras (rclpy, 128x160 rgb8 at 30 Hz), at SCHED_FIFO 45 and 30 as ros2_control and native camera drivers
would be on a robot PC, ``robot_rl_safety_node`` (joint_trajectory commands at ``command_hz``), and the actor
(this process: the rclpy robot env with ``command.via_safety_node`` + a Gaussian pixel policy on 2 cameras at
128 px, 10 Hz). Each ``command_hz`` (100, 500) runs idle and again with a learner-like CPU hog (a torch MLP
training loop on 2 threads, so both cores are busy). The machine is shared: the 1-minute load average before each
run is printed with it. Baselines in the same run, each in its own process at the same rate: a bare Python
``sleep``-to-deadline loop (what the OS gives any Python process; ``ratio_vs_bare_loop``) and the same loop under
the safety node's real-time setup (SCHED_FIFO, mlockall, hybrid wait; ``ratio_vs_bare_rt_loop``).

Run inside the ROS venv and a private network namespace (loopback only), with ROS's default discovery range
(SUBNET, as on a robot cell's PC):

    unshare -n bash -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo;
        .venv-ros/bin/python benchmarks/ros2_loop.py --seconds 20'

The safety node and the actor then run Fast DDS over UDP only (``ros_io.udp_only_dds``); the cameras keep the
RMW's default. With ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (the ROS suite's setting) rmw_fastrtps gives every
process shared memory, whose port opening can stall a publish for ~0.3 s when a process joins (README, Limits);
the JSON records which (``discovery_range``, ``actor_dds_transports``).

Figures: command period jitter p50/p99 (|interval between consecutive commands - period|, at publish in the
safety node), stale holds (actor + safety node), policy period jitter p99 (10 Hz actor loop), camera frame ->
command p50/p99 (the target carries the stamp of the oldest frame it was computed from; the safety node measures
that stamp -> the first command after the target, on the ROS clock), and its parts: frame age at observation,
observation -> target published (of it the policy's inference, p50/p99, beside the same policy called back to
back before the run: the baseline without the caches going cold between 10 Hz ticks), target arrival -> command.
As a learner would, new weights arrive once a second (every 10th tick): loaded in the slack after a command, as the
actor does with a robot env (``weight_swap_p50_ms``). ``--inference torch onnxruntime`` measures every scenario
with each ``actor.inference`` backend (default onnxruntime: what the actor node's ``inference:=auto`` picks for
this policy), ``--command-prepare-s 0.0015 0`` with each of the safety node's ``command_prepare_s`` (the command
computed ahead of its deadline, only published at it; default the node's); the first value's figures are the
headline keys, the others' carry a suffix. ``--param KEY=VALUE`` (repeatable) sets a node parameter for the actor
and the safety node in every scenario, as a launch file would (e.g. ``camera_sync_margin_s=0.0005``); the JSON
records them under ``params``. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ros2"))
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"


def _sensor_priority(priority: int) -> None:
    """SCHED_FIFO for this sensor process (threads started later inherit it): on a robot PC ros2_control's
    controller manager, which publishes /joint_states, runs real-time, and camera drivers are native code that
    the learner's load does not starve. Without the privilege the process stays normal (said once)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as e:
        print(f"sensor process at normal priority ({e})", flush=True)


def fake_robot_process(seconds: float) -> None:
    """The fake ros2_control (cyclonedds, an independent DDS peer): joint states + TCP pose at 120 Hz, following
    the joint_trajectory commands."""
    _sensor_priority(45)
    from ros_rig import FakeRobot

    robot = FakeRobot(COMMAND_TOPIC, "joint_trajectory", rate_hz=120.0)
    robot.publish_images = False  # the cameras are their own process (camera_process)
    time.sleep(seconds)
    robot.close()


def camera_process(seconds: float, hz: float = 30.0) -> None:
    """Two cameras (front, wrist), 128x160 rgb8 at ``hz`` on absolute deadlines, each frame stamped when it is
    taken and published at once, as a camera driver does (rclpy: its C serialisation costs what a driver's
    does; cyclonedds' Python one takes 10-20 ms a frame)."""
    _sensor_priority(30)
    import rclpy

    from robot_rl.hardware.ros2 import ros_io

    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("fake_cameras")
    qos = ros_io.qos_profile("best_effort", 1)
    pubs = [node.create_publisher(ros_io.message_type("image"), f"/cameras/{c}/image_raw", qos)
            for c in ("front", "wrist")]
    image = (np.arange(128 * 160 * 3) % 251).astype(np.uint8).reshape(128, 160, 3)
    period, next_t = 1.0 / hz, time.monotonic()
    end = next_t + seconds
    while time.monotonic() < end and not stop.is_set():
        for pub, name in zip(pubs, ("front", "wrist")):
            pub.publish(ros_io.image_msg(image, ros_io.now_stamp(node), name))
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
    node.destroy_node()
    rclpy.shutdown()


def hog_process(seconds: float) -> None:
    """A learner's CPU load: SAC-sized MLP updates on 2 threads, back to back."""
    import torch

    torch.set_num_threads(2)
    net = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                              torch.nn.ReLU(), torch.nn.Linear(512, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x = torch.randn(512, 256)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def bare_loop_process(hz: float, seconds: float, out: str) -> None:
    period, sent = 1.0 / hz, []
    next_t = time.monotonic()
    deadline = next_t + seconds
    while time.monotonic() < deadline:
        sent.append(time.monotonic())
        next_t += period
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -period:
            next_t = time.monotonic()
    jitter = np.abs(np.diff(sent) - period) * 1e3
    Path(out).write_text(json.dumps({"jitter_p50_ms": float(np.percentile(jitter, 50)),
                                     "jitter_p99_ms": float(np.percentile(jitter, 99))}))


def bare_rt_loop_process(hz: float, seconds: float, out: str) -> None:
    """The same loop under the safety node's real-time setup (SCHED_FIFO 50, mlockall, frozen gc, hybrid wait on
    absolute deadlines): what the OS gives a real-time Python thread on this machine."""
    from robot_rl.hardware.ros2.realtime import (DeadlineSchedule, RealtimeConfig, enter_realtime, spin_window,
                                                 wait_until)

    cfg = RealtimeConfig()
    status = enter_realtime(cfg, "bare real-time loop")
    period, sent = 1.0 / hz, []
    spin = spin_window(cfg, period)
    schedule = DeadlineSchedule(period, time.monotonic())
    deadline = schedule.start + seconds
    while time.monotonic() < deadline:
        wait_until(schedule.deadline, spin)
        sent.append(time.monotonic())
        schedule.advance(time.monotonic())
    jitter = np.abs(np.diff(sent) - period) * 1e3
    Path(out).write_text(json.dumps({"jitter_p50_ms": float(np.percentile(jitter, 50)),
                                     "jitter_p99_ms": float(np.percentile(jitter, 99)),
                                     "realtime": status.active}))


# The environment this benchmark was started with, for the processes it starts: the actor (this process) keeps
# Fast DDS off shared memory as the actor node does (FASTDDS_BUILTIN_TRANSPORTS), which the camera drivers and the
# safety node must not inherit (the safety node decides for itself).
CHILD_ENV = dict(os.environ)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], env=CHILD_ENV)


def run(command_hz: float, seconds: float, loaded: bool, inference: str = "onnxruntime",
        command_prepare_s: float | None = None, extra: dict[str, float | str] | None = None) -> dict[str, float]:
    import rclpy
    import torch
    from rclpy.executors import SingleThreadedExecutor

    from robot_rl.config import load_config
    from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params
    from robot_rl.hardware.ros2.realtime import enter_executor_realtime, log_off_the_loop
    from robot_rl.hardware.ros2.robot_env import RosRobotEnv
    from robot_rl.actor import inference_policy
    from robot_rl.registry import POLICIES

    torch.set_num_threads(1)
    log_off_the_loop()  # as the actor node: the real-time policy loop never writes a log line itself
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="ros2_loop_"))
    params = {"command.mode": "joint_trajectory", "topics.command": COMMAND_TOPIC, "topics.gripper_command": "",
              "control_hz": 10.0, "command_hz": command_hz, "image_size": 128, "reset_time_s": 0.5}
    if command_prepare_s is not None:
        params["command_prepare_s"] = command_prepare_s
    params.update(extra or {})  # --param: the same node parameters for the actor and the safety node
    cfg = from_params(RobotNodeConfig, {**params, "command.via_safety_node": True})
    helpers = [_spawn("--fake-robot", str(seconds + 60)), _spawn("--cameras", str(seconds + 60))]
    safety = subprocess.Popen([sys.executable, "-m", "robot_rl.hardware.ros2.safety_node", "--ros-args",
                               "-r", "__node:=robot_rl_safety", "-p", f"stats_file:={tmp / 'safety.json'}",
                               *(a for k, v in params.items() for a in ("-p", f"{k}:={v!r}" if isinstance(v, str)
                                                                         else f"{k}:={v}"))], env=CHILD_ENV)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("robot_rl_actor", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:  # as the actor node's executor thread (ros_io.spin_until), on this context
        enter_executor_realtime(cfg.policy_realtime, "actor executor")
        while not stop.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.05)
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        env = RosRobotEnv(cfg, node)
        train = load_config(["env.obs=pixels", "env.image_size=128"])
        policy = POLICIES.make(train.policy.name, train.policy, env.obs_spec, env.action_spec)
        policy.eval()
        policy = inference_policy(policy, inference)  # what the actor node runs with actor.inference=...
        zeros = {k: np.zeros((1, *v.shape), v.dtype) for k, v in env.obs_spec.fields.items()}
        with torch.no_grad():  # first call initialises torch's kernels: not on the clock
            policy.act(zeros, deterministic=False)
        # Baseline for the loop's inference time: the same policy called back to back (caches warm). In the loop
        # it runs once per 100 ms, after the thread slept; on a VM (or a core in a deep C-state) its code and
        # weights are no longer in the caches by then (2.5 ms back to back vs ~5 ms after 100 ms idle here).
        warm_ms = []
        with torch.no_grad():
            for _ in range(50):
                t = time.perf_counter()
                policy.act(zeros, deterministic=False)
                warm_ms.append((time.perf_counter() - t) * 1e3)
        # A learner publishes new weights about once a second: the actor loads them in the slack after a command
        # (Actor with a robot env). Same here, every 10th tick, with a copy of the policy's own weights.
        weights, swaps_ms = {k: v.clone() for k, v in policy.state_dict().items()}, []

        def swap_weights() -> None:
            if len(env.tick_times) % 10 == 0:
                t = time.perf_counter()
                policy.load_state_dict(weights)
                swaps_ms.append((time.perf_counter() - t) * 1e3)
        env.slack_tasks.append(swap_weights)
        obs = env.reset()
        for buf in (env.latency_ms, env.tick_times, env.frame_to_command_ms, env.frame_age_ms):
            buf.clear()
        env.holds.clear()
        if loaded:
            helpers.append(_spawn("--hog", str(seconds + 5)))
        bare_loop = _spawn("--bare-loop", str(command_hz), str(seconds), str(tmp / "bare.json"))
        bare_rt_loop = _spawn("--bare-rt-loop", str(command_hz), str(seconds), str(tmp / "bare_rt.json"))
        deadline, inference_ms = time.monotonic() + seconds, []
        while time.monotonic() < deadline:
            t = time.perf_counter()
            with torch.no_grad():
                action = policy.act({k: v[None] for k, v in obs.items()}, deterministic=False)[0]
            inference_ms.append((time.perf_counter() - t) * 1e3)
            obs = env.step(action).obs
        actor = env.stats()
        steps = len(env.tick_times)
        env.close()
        bare_loop.wait(60)  # they started a little later; let them finish their own `seconds`
        bare_rt_loop.wait(60)
    finally:
        safety.send_signal(signal.SIGINT)
        safety.wait(30)
        stop.set()
        spinner.join(5.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=context)
        for p in helpers:
            if p.poll() is None:
                p.terminate()
            p.wait(30)
    stats = json.loads((tmp / "safety.json").read_text())
    bare = json.loads((tmp / "bare.json").read_text())
    bare_rt = json.loads((tmp / "bare_rt.json").read_text())
    stale = actor.get("holds/stale", 0.0) + stats.get("holds/stale", 0.0)
    return {"command_hz": command_hz, "loaded": loaded, "loadavg_1min_before": round(load_before, 2),
            "policy_steps": steps, "commands": stats["commands"],
            "command_jitter_p50_ms": stats["command_jitter_p50_ms"],
            "command_jitter_p99_ms": stats["command_jitter_p99_ms"],
            "command_period_max_ms": stats["command_period_max_ms"],
            "missed_deadlines": stats["missed_deadlines"], "realtime": bool(stats.get("realtime/active", 0.0)),
            "policy_realtime": bool(actor.get("realtime/active", 0.0)),
            "bare_loop_jitter_p99_ms": bare["jitter_p99_ms"],
            "ratio_vs_bare_loop": stats["command_jitter_p99_ms"] / max(bare["jitter_p99_ms"], 1e-6),
            "bare_rt_loop_jitter_p99_ms": bare_rt["jitter_p99_ms"],
            "ratio_vs_bare_rt_loop": stats["command_jitter_p99_ms"] / max(bare_rt["jitter_p99_ms"], 1e-6),
            "stale_holds": stale, "policy_jitter_p99_ms": actor["period_jitter_p99_ms"],
            "frame_age_p99_ms": actor["frame_age_p99_ms"], "obs_to_target_p99_ms": actor["obs_to_command_p99_ms"],
            "inference_p50_ms": float(np.percentile(inference_ms, 50)),
            "inference_p99_ms": float(np.percentile(inference_ms, 99)),
            "inference_back_to_back_p50_ms": float(np.percentile(warm_ms, 50)),
            "inference_backend": inference, "command_prepare_s": float(cfg.command_prepare_s),
            "commands_recomputed": stats.get("commands_recomputed", 0.0),
            "command_stalls": stats.get("command_stalls", 0.0),
            "command_stall_max_ms": stats.get("command_stall_max_ms", 0.0),
            "weight_swaps": len(swaps_ms), "weight_swap_p50_ms": float(np.percentile(swaps_ms or [0.0], 50)),
            "target_to_command_p50_ms": stats["target_to_command_p50_ms"],
            "target_to_command_p99_ms": stats["target_to_command_p99_ms"],
            "command_phase_relocks": stats["command_phase_relocks"],
            "frame_to_target_p50_ms": stats.get("frame_to_target_p50_ms", 0.0),
            "frame_to_target_p99_ms": stats.get("frame_to_target_p99_ms", 0.0),
            "frame_to_command_p50_ms": stats["frame_to_command_p50_ms"],
            "frame_to_command_p99_ms": stats["frame_to_command_p99_ms"],
            "frame_to_command_bound_p99_ms": actor["frame_to_command_p99_ms"] + stats["target_to_command_p99_ms"],
            "safety_holds": {k: v for k, v in stats.items() if k.startswith("holds/")}}


def _parse_param(text: str) -> tuple[str, float | str]:
    """``KEY=VALUE`` -> (key, float value, or the string when it is not a number)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--param wants KEY=VALUE, got {text!r}")
    try:
        return key, float(value)
    except ValueError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--inference", choices=["torch", "onnxruntime"], nargs="+", default=["onnxruntime"],
                        help="actor.inference backends to measure, each through every scenario (default: "
                             "onnxruntime, what the actor node's inference:=auto runs this policy with)")
    parser.add_argument("--command-prepare-s", type=float, nargs="+", default=[None],
                        help="the safety node's command_prepare_s values to measure, each through every scenario "
                             "(default: the node's default)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a RobotNodeConfig parameter for the actor and the safety node in every scenario, as "
                             "a launch file would set it (e.g. camera_sync_margin_s=0.001); repeatable")
    parser.add_argument("--fake-robot", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--hog", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--cameras", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--bare-loop", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bare-rt-loop", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_robot:
        return fake_robot_process(args.fake_robot)
    if args.hog:
        return hog_process(args.hog)
    if args.cameras:
        return camera_process(args.cameras)
    if args.bare_rt_loop:
        return bare_rt_loop_process(float(args.bare_rt_loop[0]), float(args.bare_rt_loop[1]), args.bare_rt_loop[2])
    if args.bare_loop:
        return bare_loop_process(float(args.bare_loop[0]), float(args.bare_loop[1]), args.bare_loop[2])
    from robot_rl.hardware.ros2.ros_io import keep_fast_dds_off_shared_memory, localhost_discovery

    keep_fast_dds_off_shared_memory()  # once, as the actor node's main, before any scenario's participant exists
    extra = dict(_parse_param(p) for p in args.param)
    results: dict[str, object] = {}
    # The headline keys are the first backend's and command_prepare_s's (the node's defaults unless the options say
    # otherwise); the others get a suffix.
    for inference, prepare, hz, loaded in itertools.product(args.inference, args.command_prepare_s, args.rates,
                                                            (False, True)):
        r = run(hz, args.seconds, loaded, inference, prepare, extra)
        suffix = ("" if inference == args.inference[0] else f"_{inference}") + (
            "" if prepare == args.command_prepare_s[0] else f"_prepare{r['command_prepare_s'] * 1e3:g}ms")
        results[f"{int(hz)}hz" + ("_loaded" if loaded else "") + suffix] = r
        print(f"[{inference}, prepare {r['command_prepare_s'] * 1e3:g} ms] {int(hz):>4} Hz "
              f"{'loaded' if loaded else 'idle  '} "
              f"(load avg {r['loadavg_1min_before']}): {int(r['commands'])} commands, jitter p50 {r['command_jitter_p50_ms']:.3f} / p99 "
              f"{r['command_jitter_p99_ms']:.3f} ms (real-time {r['realtime']}; bare sleep loop p99 "
              f"{r['bare_loop_jitter_p99_ms']:.3f}, ratio {r['ratio_vs_bare_loop']:.2f}; bare real-time loop "
              f"p99 {r['bare_rt_loop_jitter_p99_ms']:.3f}), max period {r['command_period_max_ms']:.1f} ms, "
              f"{int(r['missed_deadlines'])} missed, {int(r['command_stalls'])} stalls > 3 periods; "
              f"policy {r['policy_steps']} steps, jitter p99 "
              f"{r['policy_jitter_p99_ms']:.2f} ms; frame->command p50 {r['frame_to_command_p50_ms']:.1f} / p99 "
              f"{r['frame_to_command_p99_ms']:.1f} ms (sum of the parts' p99s "
              f"{r['frame_to_command_bound_p99_ms']:.1f}: frame age {r['frame_age_p99_ms']:.1f} + obs->target "
              f"{r['obs_to_target_p99_ms']:.1f} (of it inference p50 {r['inference_p50_ms']:.1f} / p99 "
              f"{r['inference_p99_ms']:.1f}; back to back p50 {r['inference_back_to_back_p50_ms']:.1f}) + "
              f"target->command {r['target_to_command_p99_ms']:.1f}, p50 {r['target_to_command_p50_ms']:.1f}, "
              f"{int(r['command_phase_relocks'])} relocks); stale holds {int(r['stale_holds'])}",
              flush=True)
    idle, busy = results.get("100hz", {}), results.get("100hz_loaded", {})
    results.update({
        "command_100hz_jitter_p99_ms": idle.get("command_jitter_p99_ms"),
        "command_100hz_jitter_p99_ms_loaded": busy.get("command_jitter_p99_ms"),
        "stale_holds": sum(r["stale_holds"] for k, r in results.items() if isinstance(r, dict)
                           and not r["loaded"]),
        "policy_10hz_jitter_p99_ms": idle.get("policy_jitter_p99_ms"),
        "frame_to_command_p99_ms": idle.get("frame_to_command_p99_ms"),
        "frame_to_command_p99_ms_loaded": busy.get("frame_to_command_p99_ms"),
        "command_stalls": sum(r["command_stalls"] for r in results.values() if isinstance(r, dict)),
    })
    results["params"] = extra
    # which DDS transports the numbers were measured with (README, Limits: shared memory can stall a publish)
    results["discovery_range"] = ("LOCALHOST" if localhost_discovery(CHILD_ENV)
                                  else CHILD_ENV.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "") or "SUBNET")
    results["actor_dds_transports"] = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "rmw default")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
