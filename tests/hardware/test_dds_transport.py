"""Which Fast DDS transports the robot-PC nodes ask for (``ros_io.udp_only_dds``): UDP only unless the operator
chose, because shared memory's port opening held a publish for 0.33 s (README, Limits). Pure environment logic,
so it runs without ROS; the real node's mapped memory is checked in tests/ros2/test_safety_node.py."""
from __future__ import annotations

import logging
import os

import pytest

from robot_rl.hardware.ros2.ros_io import keep_fast_dds_off_shared_memory, udp_only_dds


def test_udp_only_by_default() -> None:
    env: dict[str, str] = {}
    assert udp_only_dds(env) == "UDPv4" and env == {"FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    assert udp_only_dds(env) == "UDPv4" and env["FASTDDS_BUILTIN_TRANSPORTS"] == "UDPv4"


@pytest.mark.parametrize("given", [
    {"FASTDDS_BUILTIN_TRANSPORTS": "SHM"},                   # the operator's own choice wins
    {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/fastdds.xml"},  # so does a profile file (Humble's way)
    {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/fastdds.xml"},
    {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},          # rmw_fastrtps installs its transports itself
    {"ROS_AUTOMATIC_DISCOVERY_RANGE": "localhost"},
    {"ROS_LOCALHOST_ONLY": "1"},
    {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},            # not Fast DDS: nothing to say
])
def test_left_alone_where_the_operator_or_the_rmw_decides(given: dict[str, str]) -> None:
    env = dict(given)
    assert udp_only_dds(env) is None and env == given


@pytest.mark.parametrize("given, expect, transports", [
    ({}, "UDPv4 only", "UDPv4"),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, "can stall a publish", None),
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, None, None),
])
def test_the_node_log_says_which_case_applies(monkeypatch, caplog, given, expect, transports) -> None:
    for key in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE",
                "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(key, "")  # recorded, so whatever the function sets is undone after the test
        monkeypatch.delenv(key)
    for key, value in given.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.INFO, logger="robot_rl.hardware.ros2.ros_io"):
        keep_fast_dds_off_shared_memory()
    assert os.environ.get("FASTDDS_BUILTIN_TRANSPORTS") == transports
    lines = [r.getMessage() for r in caplog.records]
    assert (any(expect in line for line in lines) if expect else lines == []), lines
