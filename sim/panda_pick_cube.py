"""MuJoCo twin of a Franka Panda pick-cube cell, with SERL/HIL-SERL semantics.

Action ``(4,)`` float32 in [-1, 1]: ``dx, dy, dz`` (the TCP target moves ``action_scale`` = 2.5 cm per step at
+-1 and is clipped into the safety box; zero holds the hand where it is commanded) and ``grip`` (> 0 closes
the hand, <= 0 opens it). The hand keeps pointing straight down (fixed orientation target). Control runs at
``control_hz`` (10 Hz); each step runs operational-space control + physics at ``1 / physics_dt`` (500 Hz).

``state`` observation (float32), shared prefix in every mode (21 entries):

====== ======================================================================
0:3    TCP position (m, world frame; the robot base is at the origin on the table top)
3:7    TCP orientation quaternion (w, x, y, z), sign fixed so it is continuous around the home orientation
7:10   TCP linear velocity (m/s, world frame)
10:13  TCP angular velocity (rad/s, world frame)
13     gripper opening: sum of both finger joint positions (m, 0 closed .. 0.08 open)
14:21  arm joint positions q1..q7 (rad)
====== ======================================================================

``obs="state"`` appends the cube: ``21:24`` position (m), ``24:28`` quaternion (w, x, y, z, w >= 0).
``obs="pixels"`` adds ``images/front`` and ``images/wrist`` (uint8, image_size x image_size x 3) instead.
``obs="state+pixels"`` emits both: the ``state`` of ``obs="state"`` (with the cube) and the two cameras. This
is the real-robot reward setting: a state policy (``policy.obs_keys=[state]``) trained on a learned reward
that reads only the cameras (``reward.views=[images/front,images/wrist]``).
:class:`PandaPickPlaceCube` appends the place-target centre (3, m) at the end of ``state`` in both modes:
it is the commanded goal, not something the robot has to perceive.

Reward is sparse: 1.0 on the step where the task succeeds, which terminates the episode; otherwise 0.0 and the
episode truncates after ``max_episode_steps``.
"""
from __future__ import annotations

import os
import sys
from typing import Any

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    # Headless Linux (servers, containers, CI): without a display MuJoCo's default GLFW backend cannot make a
    # context, so pixel observations and eval videos would fail; EGL renders offscreen. Must precede the mujoco
    # import; an explicit MUJOCO_GL (egl, osmesa, glfw) still wins.
    os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np

from robot_rl.env import StepResult
from robot_rl.images import CameraConfig, prepare_camera
from robot_rl.sim import panda_model as pm
from robot_rl.sim.episode_outcome import GraspOutcome
from robot_rl.sim.osc import OperationalSpaceController
from robot_rl.sim.panda_config import PandaPickCubeConfig, PandaPickPlaceCubeConfig
from robot_rl.sim.panda_experts import PickCubeExpert, PickPlaceCubeExpert
from robot_rl.sim.randomization import (ActionDelay, ModelRandomizer, RandomizedIds, add_state_noise,
                                        sample_object_pose)
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec

PROPRIO_DIM = 21
CUBE_STATE_DIM = 7
CAMERAS = ("front", "wrist")
OBS_MODES = ("state", "pixels", "state+pixels")
_GRIPPER_OPEN, _GRIPPER_CLOSED = pm.FINGER_RANGE[1], pm.FINGER_RANGE[0]
_TCP_QUAT_REFERENCE = np.array([0.0, 1.0, 0.0, 0.0])  # the home (pointing down) orientation


def _canonical_quat(quat: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """q or -q, whichever is closer to ``reference``: one continuous sign instead of flips at w = 0."""
    return -quat if float(quat @ reference) < 0.0 else quat


class PandaPickCube:
    """Pick up the cube and lift it ``lift_height`` above the table. See the module docstring for the spec."""

    task = "pick up the red cube and lift it"
    _with_target = False

    def __init__(self, cfg: PandaPickCubeConfig | None = None, seed: int | None = None) -> None:
        cfg = cfg if cfg is not None else PandaPickCubeConfig()
        if cfg.obs not in OBS_MODES:
            raise ValueError(f"obs must be one of {OBS_MODES}, got {cfg.obs!r}")
        self.cfg = cfg
        self._cube_in_state = cfg.obs in ("state", "state+pixels")  # privileged cube pose in obs['state']
        self._cameras_on = cfg.obs in ("pixels", "state+pixels")
        self.control_hz = float(cfg.control_hz)
        self.max_episode_steps = int(cfg.max_episode_steps)
        self.n_substeps = int(round(1.0 / (cfg.control_hz * cfg.physics_dt)))
        if self.n_substeps < 1:
            raise ValueError(f"physics_dt={cfg.physics_dt} is longer than one control period")
        unknown = sorted(set(cfg.cameras) - set(CAMERAS))
        if unknown:
            raise ValueError(f"env.cameras names unknown cameras {unknown}; this twin has {list(CAMERAS)}")
        offscreen = max(cfg.render_size, cfg.image_size, 256, *cfg.camera_native_size)
        self.model = mujoco.MjModel.from_xml_string(pm.build_mjcf(cfg.physics_dt, self._with_target, offscreen))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._cube_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "cube")
        cube_joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "cube_joint")
        self._cube_qpos = int(m.jnt_qposadr[cube_joint])  # 7 entries: xyz + quat (wxyz)
        self._cube_qvel = int(m.jnt_dofadr[cube_joint])  # 6 entries
        geom = lambda name: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        self._target_geom = geom("target") if self._with_target else -1
        self._outcome = GraspOutcome(geom("cube"), (geom("left_pad"), geom("right_pad")))
        self.randomizer = ModelRandomizer(m, cfg.randomization, RandomizedIds(
            cube_body=self._cube_body,
            friction_geoms=[geom("cube"), geom("left_pad"), geom("right_pad"), geom("table")],
            colour_geoms=[geom("table"), geom("floor"), geom("cube")],
            cameras=[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in CAMERAS],
            lights=list(range(m.nlight)),
        ))
        self.controller = OperationalSpaceController(m, self.data, "tcp", 7, pm.TORQUE_LIMITS, pm.HOME_QPOS)
        self.workspace_low = np.asarray(cfg.workspace_low, np.float64)
        self.workspace_high = np.asarray(cfg.workspace_high, np.float64)
        self.cube_rest_z = pm.CUBE_HALF_SIZE
        self.action_spec = ActionSpec((4,), (-1.0,) * 4, (1.0,) * 4, ("dx", "dy", "dz", "grip"))
        self._action_delay = ActionDelay(cfg.randomization.action_delay_steps, np.array([0.0, 0.0, 0.0, -1.0]))
        state_dim = PROPRIO_DIM + (CUBE_STATE_DIM if self._cube_in_state else 0) + (3 if self._with_target else 0)
        fields = {"state": ArraySpec((state_dim,), "float32")}
        if self._cameras_on:
            for camera in CAMERAS:
                fields[f"images/{camera}"] = ArraySpec((*self._camera_shape(camera), 3), "uint8")
        self.obs_spec = ObsSpec(fields)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}  # one per frame size, created on first use
        self._rng = np.random.default_rng(cfg.seed if seed is None else seed)
        self.target_xy = np.asarray(pm.TARGET_HOME_XY, np.float64)
        self._steps = 0
        self._home_rot = np.eye(3)
        self._target = np.zeros(3)  # TCP position target (m), world frame
        self._max_lead = 2.0 * cfg.action_scale
        self.reset()

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        m, d, rng = self.model, self.data, self._rng
        self.randomizer.apply(rng)
        mujoco.mj_resetData(m, d)
        self._arm_to_home_pose()
        self._place_objects(rng)
        mujoco.mj_forward(m, d)
        self._home_rot = d.site_xmat[self._tcp_site].reshape(3, 3).copy()
        self._target = np.clip(d.site_xpos[self._tcp_site], self.workspace_low, self.workspace_high)
        self.controller.set_target(self._target, self._home_rot)
        self._new_episode()
        return self._observation()

    def _new_episode(self) -> None:
        """Per-episode counters back to the start (a reset, or a start from a snapshot: ``set_state``)."""
        self._action_delay.reset()
        self._steps = 0
        self._outcome.reset()
        self._success_seen = False

    def _arm_to_home_pose(self) -> None:
        """Arm joints at home, fingers and their command open (velocities as the caller left them)."""
        d = self.data
        d.qpos[:7] = pm.HOME_QPOS
        d.qpos[7:9] = _GRIPPER_OPEN
        d.ctrl[7:9] = _GRIPPER_OPEN

    def _place_objects(self, rng: np.random.Generator) -> None:
        xy, yaw = sample_object_pose(rng, self.cfg.randomization, pm.CUBE_HOME_XY)
        q = self._cube_qpos
        self.data.qpos[q:q + 3] = (xy[0], xy[1], self.cube_rest_z)
        self.data.qpos[q + 3:q + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    def step(self, action: np.ndarray) -> StepResult:
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape != (4,):
            raise ValueError(f"action must have 4 entries (dx, dy, dz, grip), got shape {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite action {action}")
        action = self._action_delay.push(np.clip(action, -1.0, 1.0))
        m, d, ctrl = self.model, self.data, self.controller
        # The TCP target integrates the deltas (like SERL's mocap target), clipped into the safety box; it may
        # lead the measured TCP by at most two steps, so a blocked hand (table, cube) does not wind it up.
        tcp = d.site_xpos[self._tcp_site]
        target = np.clip(self._target + self.cfg.action_scale * action[:3], self.workspace_low, self.workspace_high)
        lead = target - tcp
        lead_norm = float(np.linalg.norm(lead))
        if lead_norm > self._max_lead:
            target = np.clip(tcp + lead * (self._max_lead / lead_norm), self.workspace_low, self.workspace_high)
        self._target = target
        ctrl.set_target(target)
        d.ctrl[7:9] = _GRIPPER_CLOSED if action[3] > 0.0 else _GRIPPER_OPEN
        # Physics + OSC at the physics rate: step1 (state-dependent terms) -> torques -> step2 (integrate).
        for _ in range(self.n_substeps):
            mujoco.mj_step1(m, d)
            d.ctrl[:7] = ctrl.compute_torques()
            mujoco.mj_step2(m, d)
        mujoco.mj_forward(m, d)  # positions/velocities/sensors consistent with the integrated state
        self._steps += 1
        cube = d.qpos[self._cube_qpos:self._cube_qpos + 3]
        self._outcome.update(d, action[3] > 0.0, d.site_xpos[self._tcp_site][:2], cube, self.cube_rest_z)
        success = self._success()
        self._success_seen = self._success_seen or success
        truncated = (not success) and self._steps >= self.max_episode_steps
        return StepResult(self._observation(), float(success), success, truncated, success)

    def arm_fault(self, margin: float = 0.05) -> str:
        """Why the simulated arm is in a state no episode can start from, or ``""``: a non-finite state, or
        the TCP more than ``margin`` (m) outside the workspace box (e.g. driven under the table, where the
        controller cannot bring it back through the table top). A real Panda stops on a reflex long before;
        the twin, like an operator, puts the arm back (:meth:`recover_arm`)."""
        d = self.data
        if not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()):
            return "non-finite joint state"
        tcp = d.site_xpos[self._tcp_site]
        if (tcp < self.workspace_low - margin).any() or (tcp > self.workspace_high + margin).any():
            return (f"TCP at {np.round(tcp, 3).tolist()} m, more than {margin} m outside the workspace "
                    f"{self.workspace_low.tolist()}..{self.workspace_high.tolist()}")
        return ""

    def recover_arm(self) -> None:
        """Arm back to its home pose at rest, gripper open, controller target on the home TCP; the cube is
        left alone (the caller places it). Keeps the physics clock (``data.time``) running."""
        m, d = self.model, self.data
        self._arm_to_home_pose()
        d.qvel[:9] = 0.0
        d.qacc_warmstart[:] = 0.0
        if not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all()):  # the cube went non-finite too
            d.qvel[:] = 0.0
            self._place_objects(self._rng)
        mujoco.mj_forward(m, d)
        self._target = np.clip(d.site_xpos[self._tcp_site], self.workspace_low, self.workspace_high)
        self.controller.set_target(self._target, self._home_rot)

    def _success(self) -> bool:
        return bool(self.data.qpos[self._cube_qpos + 2] >= self.cube_rest_z + self.cfg.lift_height)

    def episode_outcome(self) -> dict[str, Any]:
        """How far the episode since the last reset got: ``stage`` (``robot_rl.sim.episode_outcome.STAGES``;
        a failure is named by the furthest stage it reached) and its figures. ``robot-rl eval`` counts them."""
        out = self._outcome.outcome(self._success_seen, self._with_target)
        if self._with_target:
            cube_xy = self.data.qpos[self._cube_qpos:self._cube_qpos + 2]
            out["cube_to_target_m"] = float(np.linalg.norm(cube_xy - self.target_xy))
        return out

    # ------------------------------------------------------------------ observations
    def _proprio(self) -> np.ndarray:
        d, site = self.data, self._tcp_site
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[site])
        velocity = np.empty(6)  # (angular 3, linear 3) in the world frame
        mujoco.mj_objectVelocity(self.model, d, mujoco.mjtObj.mjOBJ_SITE, site, velocity, 0)
        return np.concatenate([d.site_xpos[site], _canonical_quat(quat, _TCP_QUAT_REFERENCE), velocity[3:],
                               velocity[:3], [d.qpos[7] + d.qpos[8]], d.qpos[:7]])

    def cube_pose(self) -> np.ndarray:
        """Ground-truth cube position (3) + quaternion (4, w >= 0), e.g. for a motion-capture-fed expert."""
        q = self._cube_qpos
        quat = self.data.qpos[q + 3:q + 7]
        return np.concatenate([self.data.qpos[q:q + 3], -quat if quat[0] < 0 else quat])

    def start_features(self) -> np.ndarray:
        """What a reset randomizes that a demo's start should cover, from the simulator itself: the cube pose
        (7) and, in pick-and-place, the target's xy (2). ``robot_rl.demos.spread_order`` spreads scripted demos
        over it, whatever the observation holds (``env.obs=pixels`` has no cube pose in it)."""
        parts = [self.cube_pose()]
        if self._with_target:
            parts.append(self.target_xy[:2])
        return np.concatenate(parts).astype(np.float64)

    def start_feature_names(self) -> list[str]:
        """A name per entry of :meth:`start_features` (``robot-rl eval starts=map.png`` labels its axes)."""
        names = ["cube x", "cube y", "cube z", "cube qw", "cube qx", "cube qy", "cube qz"]
        return names + (["target x", "target y"] if self._with_target else [])

    def _state(self) -> np.ndarray:
        parts = [self._proprio()]
        if self._cube_in_state:
            parts.append(self.cube_pose())
        if self._with_target:
            parts.append([self.target_xy[0], self.target_xy[1], 0.0])
        state = np.concatenate(parts).astype(np.float32)
        return add_state_noise(state, self.cfg.randomization.state_noise_std, self._rng)

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"state": self._state()}
        if self._cameras_on:
            for camera in CAMERAS:
                obs[f"images/{camera}"] = self.camera_image(camera)
        return obs

    def _camera_config(self, camera: str) -> CameraConfig | None:
        """The camera's crop/resize config, or None when it renders ``image_size`` squares directly."""
        cam = self.cfg.cameras.get(camera)
        return cam if cam is not None and (cam.crop is not None or cam.size is not None) else None

    def _camera_shape(self, camera: str) -> tuple[int, int]:
        """(height, width) of the camera's observation image."""
        cam = self._camera_config(camera)
        if cam is None:
            return (self.cfg.image_size, self.cfg.image_size)
        if cam.size is not None:
            return (int(cam.size[0]), int(cam.size[1]))
        if cam.crop is not None:
            return (int(cam.crop[3]), int(cam.crop[2]))
        return tuple(self.cfg.camera_native_size)

    def camera_image(self, camera: str) -> np.ndarray:
        """The camera's observation image: a native frame through :func:`robot_rl.images.prepare_camera` when
        ``env.cameras.<camera>`` sets a crop or size, else an ``image_size`` render."""
        cam = self._camera_config(camera)
        if cam is None:
            return self.render(camera, self.cfg.image_size)
        return prepare_camera(self.render(camera, tuple(self.cfg.camera_native_size)), cam, camera)

    # ------------------------------------------------------------------ rendering
    def render(self, camera: str = "front", size: int | tuple[int, int] | None = None) -> np.ndarray:
        """uint8 (H, W, 3) frame from ``camera`` (``front`` or ``wrist``); ``size`` px square or (H, W)."""
        size = self.cfg.render_size if size is None else size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        renderer = self._renderers.get((height, width))
        if renderer is None:
            renderer = mujoco.Renderer(self.model, height, width)
            # Shadows and reflections cost extra passes in software GL and add nothing for learning.
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            self._renderers[(height, width)] = renderer
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ------------------------------------------------------------------ reset to a state (HIL protocol)
    def get_state(self) -> np.ndarray:
        """Full simulator state, for return-and-explore (:mod:`robot_rl.sim.twin_state`)."""
        from robot_rl.sim.twin_state import capture

        return capture(self)

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Start a fresh episode from a :meth:`get_state` snapshot; returns its observation."""
        from robot_rl.sim.twin_state import restore

        return restore(self, state)

    def reset_like(self, first_state: np.ndarray, seed: int | None = None) -> dict[str, np.ndarray]:
        """Reset with the cube where a recorded episode's first ``state`` frame had it (demo replay)."""
        from robot_rl.sim.twin_state import reset_like

        return reset_like(self, first_state, seed)

    def expert(self) -> PickCubeExpert:
        """Scripted expert reading ``obs['state']``; in pixel mode it is fed the ground-truth cube pose."""
        return PickCubeExpert(self.cfg.action_scale, None if self._cube_in_state else self.cube_pose)


class PandaPickPlaceCube(PandaPickCube):
    """Pick the cube up, put it down inside the green target disc and let go of it."""

    task = "pick up the red cube and place it on the green target"
    _with_target = True

    def __init__(self, cfg: PandaPickPlaceCubeConfig | None = None, seed: int | None = None) -> None:
        super().__init__(cfg if cfg is not None else PandaPickPlaceCubeConfig(), seed)

    def _place_objects(self, rng: np.random.Generator) -> None:
        super()._place_objects(rng)
        cube_xy = self.data.qpos[self._cube_qpos:self._cube_qpos + 2]
        # Resample until the target is clear of the cube (a placed-at-start episode would teach nothing).
        for _ in range(100):
            target_xy, _ = sample_object_pose(rng, self.cfg.randomization, pm.TARGET_HOME_XY)
            if np.linalg.norm(target_xy - cube_xy) >= 0.08:
                break
        self.target_xy = target_xy
        self.model.geom_pos[self._target_geom, :2] = target_xy

    def _success(self) -> bool:
        cube = self.data.qpos[self._cube_qpos:self._cube_qpos + 3]
        on_target = np.linalg.norm(cube[:2] - self.target_xy) <= self.cfg.place_tolerance
        resting = cube[2] <= self.cube_rest_z + 0.005
        released = self.data.qpos[7] + self.data.qpos[8] >= 2 * pm.CUBE_HALF_SIZE + 0.01
        return bool(on_target and resting and released)

    def expert(self) -> PickPlaceCubeExpert:
        return PickPlaceCubeExpert(self.cfg.action_scale, None if self._cube_in_state else self.cube_pose)
