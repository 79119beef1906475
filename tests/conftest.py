"""Shared fixtures: free loopback ports and the PointReach envs. Helper functions live in ``support.py``."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")

from robot_rl.sim.point_reach import PointReach, PointReachConfig  # noqa: E402
from support import free_ports  # noqa: E402


@pytest.fixture
def single_thread():
    """One torch intra-op thread for the test: small networks run several times faster than with OpenMP
    spinning on a busy 2-core machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ports() -> list[int]:
    return free_ports(2)


@pytest.fixture
def pixel_env() -> PointReach:
    return PointReach(PointReachConfig(obs="pixels", image_size=16))


@pytest.fixture
def state_env() -> PointReach:
    return PointReach(PointReachConfig())
