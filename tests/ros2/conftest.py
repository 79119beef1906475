"""Fixtures of the ROS 2 tests (helpers in ros_rig.py). Run by ``make test-ros`` inside ``unshare -n``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def rclpy_node():
    """A real rclpy node spinning on a background executor thread."""
    pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
    from ros_rig import SpinningNode

    spinning = SpinningNode("robot_rl_actor")
    yield spinning.node
    spinning.close()


@pytest.fixture(scope="session")
def pip_route_prefix(tmp_path_factory):
    """This tree installed the way the README's pip route does it (``pip install .``, not editable: editable
    installs carry no data files), into a fresh venv whose other packages come from .venv-ros (a .pth line).
    Returns the venv: the ament prefix of robot_rl (share/robot_rl, lib/robot_rl, bin/)."""
    import os
    import subprocess
    import sysconfig

    pytest.importorskip("rclpy", reason="ROS 2 tests need rclpy: run `make test-ros`")
    root = Path(__file__).resolve().parents[2]
    venv = tmp_path_factory.mktemp("pip-route") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = venv / Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix)
    # plain path line: .venv-ros's own .pth files (its editable robot_rl) are not processed, so `robot_rl` in
    # the new venv is the installed copy
    (site / "ros_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--ignore-installed", "--prefix", str(venv), str(root)],
                   check=True, timeout=400, cwd=venv.parent, env=dict(os.environ, PIP_NO_INPUT="1"))
    return venv
