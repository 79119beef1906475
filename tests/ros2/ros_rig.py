"""ROS 2 test helpers: the real rclpy node (Fast DDS) against a fake ros2_control + cameras written with cyclonedds.

Run by ``tests/ros2/run_suite.sh`` (``make test-ros``) inside ``unshare -n``; every test here carries the ``ros``
marker, which the default suite deselects. Modules skip (with the reason) where rclpy or cyclonedds is absent.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CYCLONE_XML = ("<CycloneDDS><Domain Id='any'><General><Interfaces><NetworkInterface name='lo' multicast='true'/>"
               "</Interfaces><AllowMulticast>true</AllowMulticast></General><Discovery>"
               "<ParticipantIndex>auto</ParticipantIndex><Peers><Peer address='127.0.0.1'/></Peers></Discovery>"
               "</Domain></CycloneDDS>")
os.environ.setdefault("CYCLONEDDS_URI", CYCLONE_XML)
DOMAIN = int(os.environ.get("ROS_DOMAIN_ID", "0"))
ARM = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGERS = ("panda_finger_joint1", "panda_finger_joint2")


def wait_for(predicate, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class SpinningNode:
    """A real rclpy node in a context of its own (as a node in its own process would be), spun by an executor on a
    background thread. ``stop_node`` takes the node off the graph (it goes silent); ``close`` also ends the
    context. Both are idempotent."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self._node_stopped = False

    def stop_node(self) -> None:
        if not self._node_stopped:
            self._node_stopped = True
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()

    def close(self) -> None:
        self.stop_node()
        self._rclpy.try_shutdown(context=self.context)


class FakeRobot:
    """cyclonedds participant playing ros2_control + cameras: joints follow the commands first-order."""

    def __init__(self, command_topic: str, command_mode: str, image_hw=(24, 32), rate_hz: float = 200.0) -> None:
        sys.path.insert(0, str(Path(__file__).parent))
        import ros_idl as m
        from cyclonedds.core import Policy, Qos
        from cyclonedds.domain import DomainParticipant
        from cyclonedds.pub import DataWriter
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        self.m = m
        self.dp = DomainParticipant(DOMAIN)
        xcdr1 = Policy.DataRepresentation(use_cdrv0_representation=True)
        best = Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1), xcdr1)
        reliable = Qos(Policy.Reliability.Reliable(1_000_000_000), Policy.History.KeepLast(100), xcdr1)

        def writer(name, cls, qos):
            return DataWriter(self.dp, Topic(self.dp, "rt" + name, cls, qos=qos), qos=qos)

        self.js_w = writer("/joint_states", m.JointState, best)
        self.pose_w = writer("/robot_rl/ee_pose", m.PoseStamped, best)
        self.cam_w = {c: writer(f"/cameras/{c}/image_raw", m.Image, best) for c in ("front", "wrist")}
        self.estop_w = writer("/robot_rl/estop", m.Bool, reliable)
        cmd_cls = {"joint_trajectory": m.JointTrajectory, "forward_position": m.Float64MultiArray,
                   "cartesian_pose": m.PoseStamped}[command_mode]
        self.cmd_r = DataReader(self.dp, Topic(self.dp, "rt" + command_topic, cmd_cls, qos=reliable), qos=reliable)
        self.mode = command_mode
        self.q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]) + 0.1
        self.q_target = self.q.copy()
        self.pos = np.array([0.5, 0.05, 0.3])
        self.pos_target = self.pos.copy()
        h, w = image_hw
        self.image = (np.arange(h * w * 3) % 251).astype(np.uint8)
        self.image_hw = image_hw
        self.commands: list[tuple[float, object]] = []
        self.publish_images = True
        self.stamp_offset_s = 0.0   # added to header stamps (negative: a driver re-sending old data)
        self.nan_joint: int | None = None  # publish NaN for this arm joint (a broken encoder)
        self.rate_hz = rate_hz
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _stamp(self):
        t = time.time() + self.stamp_offset_s
        return self.m.Header(stamp=self.m.Time(int(t), int((t % 1) * 1e9)), frame_id="panda_link0")

    def _loop(self) -> None:
        m, period, n = self.m, 1.0 / self.rate_hz, 0
        while not self._stop.is_set():
            for msg in self.cmd_r.take(N=100):
                if type(msg).__name__ == "InvalidSample":  # a writer went away (a node stopped): no data
                    continue
                with self.lock:
                    self.commands.append((time.monotonic(), msg))
                    if self.mode == "joint_trajectory":
                        self.q_target = np.array(msg.points[-1].positions)
                    elif self.mode == "forward_position":
                        self.q_target = np.array(msg.data)
                    else:
                        p = msg.pose.position
                        self.pos_target = np.array([p.x, p.y, p.z])
            with self.lock:
                self.q += 0.3 * (self.q_target - self.q)
                self.pos += 0.3 * (self.pos_target - self.pos)
                q, pos = self.q.copy(), self.pos.copy()
            if self.nan_joint is not None:
                q[self.nan_joint] = np.nan
            self.js_w.write(m.JointState(header=self._stamp(), name=[*ARM, *FINGERS],
                                         position=[*q, 0.02, 0.02], velocity=[0.0] * 9))
            self.pose_w.write(m.PoseStamped(header=self._stamp(), pose=m.Pose(
                position=m.Point(*pos), orientation=m.Quaternion(1.0, 0.0, 0.0, 0.0))))
            if self.publish_images and n % 4 == 0:  # cameras at rate/4
                h, w = self.image_hw
                for cam, wr in self.cam_w.items():
                    wr.write(m.Image(header=self._stamp(), height=h, width=w, encoding="rgb8", step=w * 3,
                                     data=self.image.tolist()))
            n += 1
            time.sleep(period)

    def estop(self, active: bool) -> None:
        self.estop_w.write(self.m.Bool(data=active))

    def measured_q(self) -> np.ndarray:
        with self.lock:
            return self.q.copy()

    def received(self) -> list:
        with self.lock:
            return [msg for _, msg in self.commands]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)


def node_config(mode: str, **extra):
    from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params

    command = {"joint_trajectory": "/joint_trajectory_controller/joint_trajectory",
               "forward_position": "/forward_position_controller/commands",
               "cartesian_pose": "/cartesian_target"}[mode]
    params = {"command.mode": mode, "topics.command": command, "topics.gripper_command": "", "control_hz": 20.0,
              "image_size": 16, "reset_time_s": 1.0, "safety.watchdog_timeout_s": 0.3,
              "safety.sensor_timeout_s": 0.5, "home_position": [0.5, 0.0, 0.3],
              # in-process loops: SCHED_FIFO, mlockall and a disabled gc would stay on for the rest of the pytest
              # process (the node processes of test_launch.py run with the real-time setup)
              "safety_realtime.enabled": False, "policy_realtime.enabled": False, **extra}
    return from_params(RobotNodeConfig, params)
