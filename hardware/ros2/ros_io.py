"""rclpy glue: QoS profiles, the DDS transport choice, message decoding and command building. rclpy and the
message packages are imported inside the functions, so this module imports without ROS."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, MutableMapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


def qos_profile(reliability: str, depth: int) -> Any:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                      else ReliabilityPolicy.RELIABLE)


def localhost_discovery(environ: MutableMapping[str, str]) -> bool:
    """``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (Jazzy) or ``ROS_LOCALHOST_ONLY=1`` (Humble; deprecated in Jazzy,
    where it means the same): rmw_fastrtps then installs its own transports, shared memory among them."""
    return (environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
            or environ.get("ROS_LOCALHOST_ONLY", "") == "1")


def fast_dds_rmw(environ: MutableMapping[str, str]) -> bool:
    """The RMW is rmw_fastrtps (``RMW_IMPLEMENTATION``, Jazzy's and Humble's default when unset)."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def udp_only_dds(environ: MutableMapping[str, str]) -> str | None:
    """Keep Fast DDS's shared-memory transport out of this process (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``), unless
    the operator configured Fast DDS's transports already (that variable, or an XML profile file). Returns the
    value set, None when left alone. Call before ``rclpy.init``. For the processes whose publishes must not wait:
    the safety node's command stream and the actor's targets (:func:`keep_fast_dds_off_shared_memory`); camera
    drivers and the twin keep the RMW's default.

    Why: traced with ``perf`` (scheduler events with call stacks) in ``benchmarks/ros2_loop.py``, the command
    loop's 0.33 s stalls were its ``publish`` waiting for the participant's send mutex, held by Fast DDS's event
    thread while it sent the initial ACKNACK to a newly matched writer through shared memory: opening the joining
    participant's port (``SharedMemGlobal::open_port_internal``) slept for 0.33 s under that mutex. UDP over
    loopback opens no ports and costs tens of microseconds per command. Left alone with another RMW
    (``RMW_IMPLEMENTATION``) and with localhost-only discovery (:func:`localhost_discovery`), for which
    rmw_fastrtps installs shared memory + UDP itself and ignores the variable and a UDP-only profile file alike
    (checked; the node's log says so). The variable needs Fast DDS >= 2.13 (Jazzy); on Humble's Fast DDS a
    profile file does the same."""
    if any(environ.get(k) for k in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTRTPS_DEFAULT_PROFILES_FILE",
                                    "FASTDDS_DEFAULT_PROFILES_FILE")):
        return None
    if not fast_dds_rmw(environ) or localhost_discovery(environ):
        return None
    environ["FASTDDS_BUILTIN_TRANSPORTS"] = "UDPv4"
    return "UDPv4"


def keep_fast_dds_off_shared_memory() -> None:
    """:func:`udp_only_dds` on this process's environment, with a log line saying which case applies (the operator
    reading a node's log should know whether its publishes can stall on a shared-memory port)."""
    if udp_only_dds(os.environ):
        log.info("Fast DDS transports of this node: UDPv4 only (FASTDDS_BUILTIN_TRANSPORTS; set it, or a Fast DDS "
                 "profile file, to choose otherwise)")
    elif fast_dds_rmw(os.environ) and localhost_discovery(os.environ):
        log.info("ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: rmw_fastrtps gives this node shared memory, whose port "
                 "opening can stall a publish for ~0.3 s when a process joins (README, Limits)")


@contextmanager
def node_session(name: str, argv: Sequence[str] | None = None) -> Iterator[tuple[Any, Any, threading.Event]]:
    """``(node, executor, stop)`` for one process's node, torn down in the only safe order.

    rclpy's own signal handlers are off: on SIGTERM they invalidate the context at once, so a timer callback
    publishing at that moment raises ("publisher's context is invalid") and the process exits 1. Here SIGINT
    and SIGTERM only set ``stop``; whoever spins (:func:`spin_until`) leaves the executor, and only then are the
    executor, the node and the context destroyed."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=list(sys.argv if argv is None else argv), signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(name, automatically_declare_parameters_from_overrides=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        yield node, executor, stop
    finally:
        stop.set()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


def spin_until(executor: Any, stop: threading.Event, realtime: Any = None, what: str = "ROS executor") -> None:
    """Spin until ``stop``; ``spin_once`` with a short timeout so the loop notices ``stop`` within 50 ms.
    ``realtime`` (a ``RealtimeConfig``): first give this thread its ``executor_priority``."""
    import rclpy

    if realtime is not None:
        from robot_rl.hardware.ros2.realtime import enter_executor_realtime
        enter_executor_realtime(realtime, what)

    while not stop.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=0.05)


def node_parameters(node: Any) -> dict[str, Any]:
    """Every parameter the node was started with (flat dotted names -> python values)."""
    return {name: p.value for name, p in node.get_parameters_by_prefix("").items()}


def stamp_to_s(stamp: Any) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def now_stamp(node: Any) -> Any:
    return node.get_clock().now().to_msg()


def wall_ns() -> int:
    return time.time_ns()


def decode_joint_state(msg: Any) -> tuple[list[str], np.ndarray]:
    return list(msg.name), np.asarray(msg.position, np.float64)


def decode_pose(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])


def decode_transform(tf: Any) -> tuple[str, str, np.ndarray, np.ndarray]:
    t, q = tf.transform.translation, tf.transform.rotation
    return tf.child_frame_id, tf.header.frame_id, np.array([t.x, t.y, t.z]), np.array([q.w, q.x, q.y, q.z])


def image_msg(image: np.ndarray, stamp: Any, frame_id: str) -> Any:
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, int(image.shape[1]) * 3
    msg.data = np.ascontiguousarray(image, np.uint8).tobytes()
    return msg


def joint_state_msg(names: Sequence[str], positions: np.ndarray, velocities: np.ndarray, stamp: Any) -> Any:
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(x) for x in positions]
    msg.velocity = [float(x) for x in velocities]
    return msg


def pose_msg(pos: np.ndarray, quat_wxyz: np.ndarray, stamp: Any, frame_id: str) -> Any:
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pos)
    w, x, y, z = (float(v) for v in quat_wxyz)
    o = msg.pose.orientation
    o.w, o.x, o.y, o.z = w, x, y, z
    return msg


def float64_array_msg(values: Sequence[float]) -> Any:
    from std_msgs.msg import Float64MultiArray

    msg = Float64MultiArray()
    msg.data = [float(v) for v in values]
    return msg


def trajectory_msg(names: Sequence[str], positions: np.ndarray, time_from_start_s: float, stamp: Any) -> Any:
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(names)
    point = JointTrajectoryPoint()
    point.positions = [float(v) for v in positions]
    sec = int(time_from_start_s)
    point.time_from_start.sec, point.time_from_start.nanosec = sec, int(round((time_from_start_s - sec) * 1e9))
    msg.points = [point]
    return msg


def command_msg(command_cfg: Any, arm_joints: Sequence[str], base_frame: str, target: np.ndarray, stamp: Any,
                period_s: float) -> Any:
    """The ros2_control command for one target, in the configured ``command.mode``: a PoseStamped
    (cartesian_pose), a JointTrajectory reaching it in ``trajectory_time_s`` (or one period), or a
    Float64MultiArray of joint positions."""
    if command_cfg.mode == "cartesian_pose":
        from robot_rl.hardware.ros2.sensors import HOME_QUAT

        return pose_msg(target, HOME_QUAT, stamp, base_frame)
    if command_cfg.mode == "joint_trajectory":
        return trajectory_msg(arm_joints, target, command_cfg.trajectory_time_s or period_s, stamp)
    return float64_array_msg(target)


def message_type(mode_or_kind: str) -> Any:
    """The message (or service) class of a command mode or sensor kind."""
    if mode_or_kind == "cartesian_pose" or mode_or_kind == "ee_pose":
        from geometry_msgs.msg import PoseStamped
        return PoseStamped
    if mode_or_kind == "joint_trajectory":
        from trajectory_msgs.msg import JointTrajectory
        return JointTrajectory
    if mode_or_kind in ("forward_position", "gripper"):
        from std_msgs.msg import Float64MultiArray
        return Float64MultiArray
    if mode_or_kind == "joint_states":
        from sensor_msgs.msg import JointState
        return JointState
    if mode_or_kind == "image":
        from sensor_msgs.msg import Image
        return Image
    if mode_or_kind == "compressed_image":
        from sensor_msgs.msg import CompressedImage
        return CompressedImage
    if mode_or_kind == "bool":
        from std_msgs.msg import Bool
        return Bool
    if mode_or_kind == "trigger":  # a service type: the e-stop reset
        from std_srvs.srv import Trigger
        return Trigger
    if mode_or_kind == "tf":
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as e:
            raise ImportError("topics.ee_pose_source=tf needs the tf2_msgs package (part of every ROS 2 "
                              "install; not on PyPI): source your ROS 2 setup or use ee_pose_source=topic") from e
        return TFMessage
    raise KeyError(mode_or_kind)
