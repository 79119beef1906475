"""Configs and registry factories of the Franka Panda cube twins. Light: importing this never imports mujoco.

``robot_rl.sim`` imports this module to register ``panda_pick_cube`` and ``panda_pick_place_cube``; the heavy
env module (:mod:`robot_rl.sim.panda_pick_cube`) is imported by the factory when an env is actually built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from robot_rl.config import ConfigNode, EnvConfig, store
from robot_rl.images import CameraConfig
from robot_rl.registry import ENVS

if TYPE_CHECKING:
    from robot_rl.sim.panda_pick_cube import PandaPickCube, PandaPickPlaceCube


@dataclass
class RandomizationConfig(ConfigNode):
    """Domain randomization knobs, redrawn at every reset from the env's seeded generator. 0 turns a knob off."""

    object_xy_range: float = 0.0
    """Half-width (m) of the uniform square around the nominal cube (and place-target) position."""
    object_yaw_range: float = 0.0
    """Half-width (rad) of the uniform cube yaw around 0 (the fixed-orientation grasp handles about +-0.3 rad)."""
    friction_range: float = 0.0
    """Relative half-width r: cube, finger-pad and table sliding friction scaled by U(1 - r, 1 + r)."""
    mass_range: float = 0.0
    """Relative half-width r: cube mass (and inertia) scaled by U(1 - r, 1 + r)."""
    camera_pos_range: float = 0.0
    """Half-width (m) of a uniform per-axis offset of every camera position."""
    camera_fovy_range: float = 0.0
    """Half-width (deg) of a uniform offset of every camera's vertical field of view."""
    light_range: float = 0.0
    """Relative half-width r: light diffuse intensity scaled by U(1 - r, 1 + r), its direction jittered by r rad."""
    colour_range: float = 0.0
    """Half-width of a uniform per-channel RGB offset of the table, floor and cube colours (0..1 units)."""
    action_delay_steps: int = 0
    """Actions take effect this many control steps late (a latency of k / control_hz seconds)."""
    state_noise_std: float = 0.0
    """Std of Gaussian noise added to every entry of the ``state`` observation (its units: m, rad, m/s)."""


@dataclass
class PandaPickCubeConfig(EnvConfig):
    """Franka Panda + 4 cm cube on a table; 10 Hz end-effector delta actions, OSC at the physics rate."""

    name: str = "panda_pick_cube"
    control_hz: float = 10.0
    """Policy rate (Hz); each step runs ``1 / (control_hz * physics_dt)`` physics + OSC steps."""
    physics_dt: float = 0.002
    """Physics and operational-space-control step (s): 500 Hz keeps grasp contacts and the OSC stable."""
    action_scale: float = 0.025
    """TCP displacement (m) per control step at action +-1 on each of x, y, z."""
    workspace_low: tuple[float, float, float] = (0.25, -0.3, 0.015)
    """Safety box lower corner (m, world frame): the TCP target is clipped into the box every step."""
    workspace_high: tuple[float, float, float] = (0.75, 0.3, 0.4)
    """Safety box upper corner (m, world frame)."""
    lift_height: float = 0.1
    """Success when the cube's centre is this far (m) above its resting height on the table."""
    render_size: int = 256
    """Default square size (px) of :meth:`render` frames (videos)."""
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    """Domain randomization; every knob is off by default (the deterministic twin)."""
    cameras: dict[str, CameraConfig] = field(default_factory=lambda: {"front": CameraConfig(),
                                                                      "wrist": CameraConfig()})
    """Per camera (``front``, ``wrist``): region of interest ``crop`` (x, y, w, h) and output ``size`` (h, w),
    applied by :func:`robot_rl.images.prepare_frame` (the same function as the ROS 2 node and dataset import) to a
    frame rendered at ``camera_native_size``. A camera with neither renders ``image_size`` squares directly."""
    camera_native_size: tuple[int, int] = (480, 640)
    """Native (height, width) the twin's cameras render at before a configured crop/resize (a 640x480 sensor)."""


@dataclass
class PandaPickPlaceCubeConfig(PandaPickCubeConfig):
    """Same cell; the cube must be put down inside the green target disc and released."""

    name: str = "panda_pick_place_cube"
    max_episode_steps: int = 100
    place_tolerance: float = 0.025
    """Success needs the cube centre within this xy distance (m) of the target centre."""


@dataclass
class PickCubeWarpConfig(PandaPickCubeConfig):
    """The pick-cube task with the actors on the MuJoCo Warp twin (``robot_rl.sim.pick_cube_warp``): same
    spec, action scaling and success rule, ``num_envs`` worlds per actor stepped as one batch (on the GPU when
    there is one). State observations only. The learner's evaluation and the scripted demos use the CPU twin
    of the same model, which has the same spec."""

    name: str = "pick_cube_warp"


store("env", "panda_pick_cube", PandaPickCubeConfig)
store("env", "pick_cube_warp_schema", PickCubeWarpConfig)  # conf/env/pick_cube_warp.yaml builds on it
store("env", "panda_pick_place_cube", PandaPickPlaceCubeConfig)


@ENVS.register("panda_pick_cube")
def make_panda_pick_cube(cfg: PandaPickCubeConfig, seed: int | None = None) -> "PandaPickCube":
    from robot_rl.sim.panda_pick_cube import PandaPickCube

    return PandaPickCube(cfg, seed)


@ENVS.register("pick_cube_warp")
def make_pick_cube_warp_single(cfg: PickCubeWarpConfig, seed: int | None = None) -> "PandaPickCube":
    """A single (CPU) env of the Warp task, for evaluation and demos; actors batch it on Warp (see
    :func:`robot_rl.actor.batched_backend`)."""
    from robot_rl.sim.panda_pick_cube import PandaPickCube

    return PandaPickCube(cfg, seed)


@ENVS.register("panda_pick_place_cube")
def make_panda_pick_place_cube(cfg: PandaPickPlaceCubeConfig, seed: int | None = None) -> "PandaPickPlaceCube":
    from robot_rl.sim.panda_pick_cube import PandaPickPlaceCube

    return PandaPickPlaceCube(cfg, seed)
