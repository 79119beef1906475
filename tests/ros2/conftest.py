"""Fixtures of the ROS 2 tests (helpers in ros_rig.py). Run by ``make test-ros`` inside ``unshare -n``."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def rclpy_node():
    """A real rclpy node spinning on a background executor thread."""
    rclpy = pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("robot_rl_actor", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.shutdown(context=context)
