"""Packaging: the ROS 2 parameter file through the real rcl yaml parser, the pip route and ``colcon build``
(then the real ``ros2 launch`` from the workspace), each checked with the real ``ament_index_python``."""
from __future__ import annotations

import dataclasses

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")

from ros_rig import ROOT  # noqa: E402

pytestmark = pytest.mark.ros
VENV = Path(sys.prefix)


def _actor_node_config(ros_args: list[str]):
    """The actor node's typed config as rcl parses ``--ros-args`` (params files, ``-p``) for node robot_rl_actor."""
    import rclpy

    from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params
    from robot_rl.hardware.ros2.ros_io import node_parameters

    context = rclpy.Context()
    rclpy.init(context=context, args=["x", "--ros-args", *ros_args])
    try:
        node = rclpy.create_node("robot_rl_actor", context=context,
                                 automatically_declare_parameters_from_overrides=True)
        cfg = from_params(RobotNodeConfig, node_parameters(node))
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return cfg


def test_rcl_parses_the_launch_parameter_files_like_our_loader() -> None:
    from robot_rl.hardware.ros2.config import RobotNodeConfig, load_params_file

    config = ROOT / "launch" / "config"
    cfg = _actor_node_config(["--params-file", str(config / "real.yaml"), "--params-file", str(config / "sim.yaml"),
                              "-p", "control_hz:=100.0"])
    expected = load_params_file(config / "real.yaml", "robot_rl_actor", RobotNodeConfig)
    assert cfg.control_hz == 100.0 and cfg.bag_dir == "bags_sim"  # later files and -p win, as in launch
    assert cfg.home_position == (0.543, 0.0, 0.234)  # sim.yaml: the twin's start pose
    # sim.yaml overrides a few nested names (topics.episode_reset; safety.max_ee_speed/accel, which admit a full
    # action per policy period on the twin); the others keep real.yaml's values
    assert cfg.topics.episode_reset == "/robot_rl/episode_reset" and expected.topics.episode_reset == ""
    assert (cfg.safety.max_ee_speed, cfg.safety.max_ee_accel) == (1.0, 50.0)
    assert (expected.safety.max_ee_speed, expected.safety.max_ee_accel) == (0.3, 3.0)
    assert (dataclasses.replace(cfg.topics, episode_reset=""),
            dataclasses.replace(cfg.safety, max_ee_speed=0.3, max_ee_accel=3.0), cfg.command, cfg.qos) == (
        expected.topics, expected.safety, expected.command, expected.qos)


def test_unset_launch_arguments_keep_the_params_file_value(tmp_path: Path) -> None:
    """What real.launch.py hands rcl: the params file, then only the arguments given (launch_overrides)."""
    from robot_rl.hardware.ros2.config import launch_overrides

    site = tmp_path / "site.yaml"
    site.write_text('robot_rl_actor:\n  ros__parameters:\n    learner_host: "10.0.0.9"\n    keys_dir: "/etc/keys"\n')
    given = launch_overrides({"learner_host": "", "keys_dir": "", "train_config": "/runs/a/config_learner.yaml",
                              "key_name": "", "actor_id": ""})
    cfg = _actor_node_config(["--params-file", str(ROOT / "launch" / "config" / "real.yaml"), "--params-file",
                              str(site), *(a for k, v in given.items() for a in ("-p", f"{k}:={v}"))])
    assert (cfg.learner_host, cfg.keys_dir, cfg.train_config) == ("10.0.0.9", "/etc/keys", "/runs/a/config_learner.yaml")


def _ament_lookup(prefix: Path) -> str:
    code = ("from ament_index_python.packages import get_package_share_directory, get_package_prefix; "
            "print(get_package_share_directory('robot_rl')); print(get_package_prefix('robot_rl'))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, AMENT_PREFIX_PATH=str(prefix)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_pip_route_ament_index_finds_launch_files_config_and_executables(pip_route_prefix: Path) -> None:
    """``pip install .`` puts share/robot_rl, the ament marker and the executables in lib/robot_rl (where
    launch_ros looks) under the prefix, and keeps the console scripts in bin/. test_launch.py runs them."""
    prefix = pip_route_prefix
    share = Path(_ament_lookup(prefix).splitlines()[0])
    for name in ("launch/real.launch.py", "launch/sim.launch.py", "config/real.yaml", "config/sim.yaml",
                 "package.xml"):
        assert (share / name).is_file(), name
    for name in ("robot_rl_actor_node", "robot_rl_twin_node", "robot_rl_safety_node"):
        assert os.access(prefix / "bin" / name, os.X_OK) and os.access(prefix / "lib" / "robot_rl" / name, os.X_OK)
    # the lib/robot_rl launcher runs the node with the prefix's Python (parameter errors are reported, loudly)
    run = subprocess.run([str(prefix / "lib" / "robot_rl" / "robot_rl_actor_node"), "--ros-args", "-p",
                          "contro_hz:=3.0"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "unknown RobotNodeConfig parameters: ['contro_hz']" in run.stderr, run.stderr


@pytest.mark.skipif(shutil.which("colcon", path=str(VENV / "bin")) is None, reason="colcon not installed")
def test_colcon_build_then_ros2_launch_from_the_workspace(tmp_path: Path) -> None:
    """What every ROS user does: ``colcon build --packages-select robot_rl`` in a workspace, then
    ``source install/setup.bash && ros2 launch robot_rl sim.launch.py ...`` (the real launch system)."""
    from launch_rig import require_ros2_launch
    from test_launch import run_launch

    require_ros2_launch()
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "robot_rl").symlink_to(ROOT)
    env = dict(os.environ, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([str(VENV / "bin" / "colcon"), "build", "--packages-select", "robot_rl"],
                         cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    install = ws / "install" / "robot_rl"
    share, prefix = _ament_lookup(install).splitlines()
    assert Path(prefix) == install
    assert (Path(share) / "launch" / "real.launch.py").is_file() and (Path(share) / "config" / "real.yaml").is_file()
    for name in ("robot_rl_actor_node", "robot_rl_twin_node", "robot_rl_safety_node"):
        assert os.access(install / "lib" / "robot_rl" / name, os.X_OK), name
    # setup.bash puts the workspace first on AMENT_PREFIX_PATH and its site-packages on PYTHONPATH
    run_launch(install, tmp_path, "sim.launch.py", {}, ("robot_rl_twin_node", "robot_rl_safety_node",
                                                        "robot_rl_actor_node"),
               setup_bash=ws / "install" / "setup.bash")
