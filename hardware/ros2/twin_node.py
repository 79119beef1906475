"""``robot_rl_twin_node``: the MuJoCo Panda twin published on the real robot's topics (``sim.launch.py``).

It stands in for the robot driver, ros2_control and the cameras: publishes ``/joint_states`` (arm + finger
joints), the TCP pose (``PoseStamped``), camera images (rgb8) and the task's success flag (``std_msgs/Bool``:
the cube is lifted), and follows the command topic of ``command_mode`` (Cartesian target through the twin's
operational-space controller, or joint targets through a joint-space PD) and the gripper topic. Physics runs
in wall-clock time on a timer (a late tick integrates the time it missed), so the whole ROS 2 path (QoS,
latency, staleness) is exercised without hardware. Its executor runs at ``SCHED_FIFO`` (``realtime``), as a
robot's driver and cameras do: the learner's load must not slow the robot down.
"""
from __future__ import annotations

import logging
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robot_rl.hardware.ros2 import ros_io
from robot_rl.hardware.ros2.config import TwinNodeConfig

log = logging.getLogger("robot_rl.ros2.twin")
ARM_RECOVERED = "twin arm recovered"  # starts the warning logged per recovery (counted in stats: arm_recoveries)


class TwinNode:
    def __init__(self, node: Any, cfg: TwinNodeConfig) -> None:
        import mujoco

        from robot_rl.sim import panda_model as pm
        from robot_rl.sim.panda_config import PandaPickCubeConfig, RandomizationConfig
        from robot_rl.sim.panda_pick_cube import PandaPickCube

        self.mujoco, self.node, self.cfg = mujoco, node, cfg
        rand = RandomizationConfig(object_xy_range=cfg.object_xy_range)
        self.env = PandaPickCube(PandaPickCubeConfig(obs="state", randomization=rand), seed=cfg.seed)
        self.env.reset(seed=cfg.seed)
        m, d = self.env.model, self.env.data
        self.model, self.data = m, d
        self.substeps = max(1, int(round(1.0 / (cfg.physics_hz * self.env.cfg.physics_dt))))
        self.torque_limits = np.asarray(pm.TORQUE_LIMITS, np.float64)
        self.joint_target: np.ndarray | None = None  # joint modes: PD target
        self.lock = threading.Lock()
        sensor_qos = ros_io.qos_profile(cfg.qos.sensor_reliability, cfg.qos.sensor_depth)
        command_qos = ros_io.qos_profile(cfg.qos.command_reliability, cfg.qos.command_depth)
        t = cfg.topics
        self.joint_pub = node.create_publisher(ros_io.message_type("joint_states"), t.joint_states, sensor_qos)
        self.pose_pub = node.create_publisher(ros_io.message_type("ee_pose"), t.ee_pose, sensor_qos)
        self.success_pub = node.create_publisher(ros_io.message_type("bool"), t.success,
                                                 ros_io.qos_profile("reliable", 10))
        self.image_pubs = {c: node.create_publisher(ros_io.message_type("image"), topic, sensor_qos)
                           for c, topic in zip(t.cameras, t.camera_topics)}
        if cfg.command_mode not in ("cartesian_pose", "joint_trajectory", "forward_position"):
            raise ValueError(f"command_mode {cfg.command_mode!r} unknown")
        node.create_subscription(ros_io.message_type(cfg.command_mode), t.command, self._on_command, command_qos)
        if t.gripper_command:
            node.create_subscription(ros_io.message_type("gripper"), t.gripper_command, self._on_gripper,
                                     command_qos)
        if t.episode_reset:
            node.create_subscription(ros_io.message_type("bool"), t.episode_reset, self._on_episode_reset,
                                     ros_io.qos_profile("reliable", 10))
        self.episode_resets = 0
        self.arm_recoveries = 0
        self.commands = 0
        self._clock0: tuple[float, float] | None = None  # (wall monotonic, physics time) at the first tick
        self.max_lag_s = 0.0
        self.dropped_s = 0.0  # physics time not integrated after stalls longer than max_catch_up_s
        # One frame per camera now: the GL context and its helper threads (llvmpipe's rasterizers in software
        # GL) start here, before the executor goes real-time (start_realtime) and raises every thread of the
        # process. Started by the first camera tick instead, they stayed at normal priority, and with the
        # learner on the same cores camera frames came late (the actor's frame age p99 40 ms).
        for camera in self.image_pubs:
            self.env.render(camera, cfg.image_size)
        node.create_timer(1.0 / cfg.physics_hz, self._physics)
        node.create_timer(1.0 / cfg.state_hz, self._publish_state)
        node.create_timer(1.0 / cfg.camera_hz, self._publish_images)

    # ------------------------------------------------------------------ commands
    def _on_command(self, msg: Any) -> None:
        with self.lock:
            self.commands += 1
            if self.cfg.command_mode == "cartesian_pose":
                pos, _ = ros_io.decode_pose(msg)  # the twin's hand keeps pointing down (fixed orientation)
                self.env.controller.set_target(np.clip(pos, self.env.workspace_low, self.env.workspace_high))
                self.joint_target = None
                return
            if self.cfg.command_mode == "joint_trajectory":
                if not msg.points:
                    return
                index = {n: i for i, n in enumerate(msg.joint_names)}
                values = msg.points[-1].positions
                self.joint_target = np.array([values[index[j]] for j in self.cfg.arm_joints])
            else:
                self.joint_target = np.asarray(msg.data, np.float64)[:len(self.cfg.arm_joints)]

    def _on_gripper(self, msg: Any) -> None:
        if len(msg.data):
            with self.lock:
                self.data.ctrl[7:9] = float(np.clip(msg.data[0], 0.0, 0.08)) / 2.0

    def _on_episode_reset(self, msg: Any) -> None:
        """The actor's reset is done moving home: put the cube back on its start pose (the twin's own
        randomisation), at rest. The arm stays where the commands brought it, unless it is somewhere no
        episode can start from (``recover_margin_m``): then it goes back home first."""
        if not msg.data:
            return
        with self.lock:
            env, m, d = self.env, self.model, self.data
            self._recover_if_faulted("at episode reset")
            env._place_objects(env._rng)
            d.qvel[env._cube_qvel:env._cube_qvel + 6] = 0.0
            self.mujoco.mj_forward(m, d)
            self.episode_resets += 1

    def _recover_if_faulted(self, when: str) -> None:
        """Arm back home when it is in a state no episode can start from (caller holds the lock)."""
        fault = self.env.arm_fault(self.cfg.recover_margin_m)
        if not fault:
            return
        from robot_rl.sim import panda_model as pm

        log.warning("%s %s: %s; arm put back home", ARM_RECOVERED, when, fault)
        self.env.recover_arm()
        # Joint modes hold home until the next joint command; Cartesian mode holds the home TCP.
        self.joint_target = None if self.joint_target is None else np.array(pm.HOME_QPOS, np.float64)
        self.arm_recoveries += 1

    # ------------------------------------------------------------------ physics + sensors
    def _physics(self) -> None:
        mj, m, d, ctrl = self.mujoco, self.model, self.data, self.env.controller
        with self.lock:
            if self._clock0 is None:
                self._clock0 = (time.monotonic(), float(d.time))
            for _ in range(self._substeps_due()):
                mj.mj_step1(m, d)
                if self.joint_target is None:
                    d.ctrl[:7] = ctrl.compute_torques()
                else:
                    tau = 400.0 * (self.joint_target - d.qpos[:7]) - 40.0 * d.qvel[:7] + d.qfrc_bias[:7]
                    d.ctrl[:7] = np.clip(tau, -self.torque_limits, self.torque_limits)
                mj.mj_step2(m, d)
            if not np.isfinite(d.qvel[:9]).all():  # diverged: NaN would reach every subscriber
                self._recover_if_faulted("mid-episode")
            mj.mj_forward(m, d)
            self.max_lag_s = max(self.max_lag_s, self.physics_lag_s())

    def _substeps_due(self) -> int:
        """Physics steps that bring the physics clock to the wall clock (the timer is late under load: a fixed
        number per tick would let the robot run slow), at most ``max_catch_up_s`` worth; the rest of a longer
        stall is dropped and counted."""
        dt = self.env.cfg.physics_dt
        lag = self.physics_lag_s() + 1.0 / self.cfg.physics_hz  # integrate through this tick's period
        due = int(lag / dt)
        cap = max(self.substeps, int(self.cfg.max_catch_up_s / dt))
        if due > cap:
            assert self._clock0 is not None
            self.dropped_s += (due - cap) * dt
            self._clock0 = (self._clock0[0] + (due - cap) * dt, self._clock0[1])
            due = cap
        return max(0, due)

    def close(self) -> None:
        """Free the renderers' GL contexts (from the thread that rendered: EGL contexts are per thread)."""
        with self.lock:
            self.env.close()

    def physics_lag_s(self) -> float:
        """How far the physics clock is behind the wall clock since the first tick (s)."""
        if self._clock0 is None:
            return 0.0
        return (time.monotonic() - self._clock0[0]) - (float(self.data.time) - self._clock0[1])

    def stats(self) -> dict[str, float]:
        wall = time.monotonic() - self._clock0[0] if self._clock0 is not None else 0.0
        return {"physics_lag_s": self.physics_lag_s(), "physics_lag_max_s": self.max_lag_s,
                "physics_dropped_s": self.dropped_s,
                "wall_s": wall, "commands": float(self.commands), "episode_resets": float(self.episode_resets),
                "arm_recoveries": float(self.arm_recoveries)}

    def _publish_state(self) -> None:
        stamp = ros_io.now_stamp(self.node)
        names = [*self.cfg.arm_joints, *self.cfg.gripper_joints]
        with self.lock:
            q, qd = self.data.qpos[:9].copy(), self.data.qvel[:9].copy()
            proprio = self.env._proprio()  # TCP pos (3), quat wxyz (4), ...: the twin's own state layout
            success = self.env._success()
        self.joint_pub.publish(ros_io.joint_state_msg(names, q, qd, stamp))
        self.pose_pub.publish(ros_io.pose_msg(proprio[:3], proprio[3:7], stamp, self.cfg.topics.base_frame))
        self.success_pub.publish(ros_io.message_type("bool")(data=bool(success)))

    def _publish_images(self) -> None:
        stamp = ros_io.now_stamp(self.node)
        for camera, pub in self.image_pubs.items():
            with self.lock:
                image = self.env.render(camera, self.cfg.image_size)
            pub.publish(ros_io.image_msg(image, stamp, camera))


def start_realtime(cfg: TwinNodeConfig) -> bool:
    """The calling thread (the executor's) and every thread already running (DDS, the renderer's) at
    ``cfg.realtime.executor_priority``, as a robot's driver and camera drivers run; True if in effect."""
    from robot_rl.hardware.ros2.realtime import enter_executor_realtime

    return enter_executor_realtime(cfg.realtime, "robot_rl_twin_node executor")


def main(argv: Sequence[str] | None = None) -> int:
    from robot_rl.hardware.ros2.config import from_params
    from robot_rl.run_log import setup_logging

    setup_logging()
    with ros_io.node_session("robot_rl_twin", argv) as (node, executor, stop):
        cfg = from_params(TwinNodeConfig, ros_io.node_parameters(node))
        twin = TwinNode(node, cfg)
        start_realtime(cfg)  # this thread spins the executor
        log.info("twin publishing on %s", node.get_topic_names_and_types())
        ros_io.spin_until(executor, stop)
        twin.close()
        stats = twin.stats()
        log.info("twin stopped: %s", {k: round(v, 3) for k, v in stats.items()})
        if cfg.stats_file:
            Path(cfg.stats_file).write_text(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
