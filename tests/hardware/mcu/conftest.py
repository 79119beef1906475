"""Fixtures for the microcontroller tests: one DAgger-distilled PointReach student, quantized, per session."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from robot_rl.hardware.mcu.distill import DistillConfig, DistillResult, collect, distill
from robot_rl.hardware.mcu.quantize import QuantConfig, QuantizedModel, quantize
from robot_rl.hardware.mcu.student import FloatModel, StudentConfig
from robot_rl.sim.point_reach import PointReach, PointReachConfig


@dataclass
class Distilled:
    env: PointReach
    result: DistillResult
    model: FloatModel
    qm: QuantizedModel
    calib: np.ndarray
    holdout: np.ndarray


@pytest.fixture(scope="session")
def distilled() -> Distilled:
    torch.set_num_threads(1)  # the tests share 2 cores with other jobs
    env = PointReach(PointReachConfig())
    cfg = DistillConfig(rounds=3, episodes_per_round=20, steps_per_round=600, student=StudentConfig(hidden=[64, 64]))
    result = distill(env, env.expert(), cfg)
    model = result.student.fold(env.action_spec)
    rng = np.random.default_rng(0)
    calib = collect(env, None, model.forward, 30, 50_000, 0.0, rng).states
    holdout = collect(env, None, model.forward, 30, 60_000, 0.0, rng).states
    return Distilled(env, result, model, quantize(model, calib, QuantConfig()), calib, holdout)
