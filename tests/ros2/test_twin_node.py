"""The twin node (``robot_rl_twin_node``'s class, in this process on a real rclpy node) recovers an arm it finds
somewhere no episode can start from when the actor's episode-reset request arrives over DDS, and leaves a
healthy arm where the commands brought it; and every thread of the twin's process, its renderer's included, runs
real-time."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")

from ros_rig import wait_for  # noqa: E402
from robot_rl.hardware.ros2 import ros_io  # noqa: E402
from robot_rl.hardware.ros2.config import TopicsConfig, TwinNodeConfig  # noqa: E402
from robot_rl.hardware.ros2.realtime import RealtimeConfig  # noqa: E402
from robot_rl.hardware.ros2.twin_node import TwinNode  # noqa: E402
from robot_rl.sim import panda_model as pm  # noqa: E402

pytestmark = pytest.mark.ros
RESET_TOPIC = "/robot_rl/episode_reset"


def test_episode_reset_puts_a_wrecked_arm_back_home_and_leaves_a_healthy_one(rclpy_node) -> None:
    cfg = TwinNodeConfig(camera_hz=1.0, image_size=16, realtime=RealtimeConfig(enabled=False),
                         topics=TopicsConfig(episode_reset=RESET_TOPIC, cameras=("front",),
                                             camera_topics=("/cameras/front/image_raw",)))
    twin = TwinNode(rclpy_node, cfg)
    try:
        _check_recovery(rclpy_node, twin, cfg)
    finally:
        twin.close()


def _check_recovery(rclpy_node, twin: TwinNode, cfg: TwinNodeConfig) -> None:
    reset_pub = rclpy_node.create_publisher(ros_io.message_type("bool"), RESET_TOPIC,
                                            ros_io.qos_profile("reliable", 10))
    wait_for(lambda: reset_pub.get_subscription_count() > 0, what="the twin's episode-reset subscription")

    def request_reset(expected: int) -> None:
        reset_pub.publish(ros_io.message_type("bool")(data=True))
        wait_for(lambda: twin.episode_resets >= expected, what=f"episode reset {expected}")

    # A healthy arm a little off home (where an episode's commands left it) stays where it is.
    with twin.lock:
        twin.data.qpos[0] = 0.2
        twin.mujoco.mj_forward(twin.model, twin.data)
        twin.env.controller.set_target(twin.data.site_xpos[twin.env._tcp_site].copy())  # as a command would
        off_home = twin.data.qpos[:7].copy()
    request_reset(1)
    with twin.lock:
        assert twin.arm_recoveries == 0
        assert abs(twin.data.qpos[0] - off_home[0]) < 0.05  # only the physics moved it, not a reset
    # Shoulder turned round, TCP far behind the workspace: the arm goes home before the next episode.
    with twin.lock:
        twin.data.qpos[0] = np.pi
        twin.data.qvel[:7] = 0.0
        twin.mujoco.mj_forward(twin.model, twin.data)
        assert twin.env.arm_fault(cfg.recover_margin_m)
    request_reset(2)
    with twin.lock:
        assert twin.arm_recoveries == 1
        assert twin.env.arm_fault(cfg.recover_margin_m) == ""
        np.testing.assert_allclose(twin.data.qpos[:7], pm.HOME_QPOS, atol=0.05)
    assert twin.stats()["arm_recoveries"] == 1.0


TWIN_THREADS = """
import json, os, sys
import rclpy
from robot_rl.hardware.ros2.config import TopicsConfig, TwinNodeConfig
from robot_rl.hardware.ros2.twin_node import TwinNode, start_realtime
rclpy.init()
node = rclpy.create_node("robot_rl_twin")
cfg = TwinNodeConfig(camera_hz=1.0, image_size=16, topics=TopicsConfig(cameras=("front",),
                     camera_topics=("/cameras/front/image_raw",)))
twin = TwinNode(node, cfg)  # as main(): the twin first, then the executor's thread goes real-time
active = start_realtime(cfg)
threads = {}
for tid in os.listdir("/proc/self/task"):
    name = open(f"/proc/self/task/{tid}/comm").read().strip()
    threads[f"{name}/{tid}"] = os.sched_getscheduler(int(tid)) & ~os.SCHED_RESET_ON_FORK
print(json.dumps({"active": active, "threads": threads, "fifo": os.SCHED_FIFO, "normal": os.SCHED_OTHER}))
twin.close()
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root or CAP_SYS_NICE")
def test_every_twin_thread_runs_real_time_the_renderers_included() -> None:
    """The twin plays the robot's driver and cameras: with the learner on the same cores, a camera frame whose
    rasterizer threads (software GL) ran at normal priority came up to 40 ms late. The twin renders before its
    executor goes real-time, so every thread of the process, the GL context's included, runs SCHED_FIFO."""
    out = subprocess.run([sys.executable, "-c", TWIN_THREADS], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["active"]
    # (Mesa's shader disk-cache thread asks for the lowest priority, SCHED_IDLE, itself: it stays there)
    normal = [name for name, policy in result["threads"].items() if policy == result["normal"]]
    assert not normal, f"threads left at normal priority: {normal} of {result['threads']}"
    fifo = [name for name, policy in result["threads"].items() if policy == result["fifo"]]
    assert len(fifo) > 3  # DDS and the renderer's threads, not only the main thread
