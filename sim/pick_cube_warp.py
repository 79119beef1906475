"""The pick-cube twin on MuJoCo Warp (``pip install mujoco-warp``): N worlds stepped together on a GPU (or,
slowly, on the CPU), behind :class:`robot_rl.sim.batched.BatchedEnv`.

Same model (:func:`robot_rl.sim.panda_model.build_mjcf`), spec, action scaling, safety box, target-lead limit,
operational-space controller and success rule as :class:`robot_rl.sim.panda_pick_cube.PandaPickCube`; the OSC
runs batched in torch on views of the Warp arrays (zero-copy). Env ``j``'s episode ``k`` starts from the cube
pose the CPU twin draws for seed ``seeds[j] + k``. Differences: float32 physics (the CPU twin is float64),
``obs="state"`` only (no renderer), and of the domain-randomization knobs only the cube pose and state noise.
"""
from __future__ import annotations

import math
from typing import Any

import mujoco
import numpy as np
import torch

from robot_rl.sim import panda_model as pm
from robot_rl.sim.batched import BatchedStep, check_actions, check_obs
from robot_rl.sim.panda_config import PandaPickCubeConfig
from robot_rl.sim.randomization import sample_object_pose
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec

_GRIPPER_OPEN, _GRIPPER_CLOSED = pm.FINGER_RANGE[1], pm.FINGER_RANGE[0]
_UNSUPPORTED_KNOBS = ("friction_range", "mass_range", "camera_pos_range", "camera_fovy_range", "light_range",
                      "colour_range", "action_delay_steps")


def warp_available() -> tuple[bool, str]:
    """(True, "") when mujoco_warp and warp import; else (False, the import error)."""
    try:
        import mujoco_warp  # noqa: F401
        import warp  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def mat_to_quat(mat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` -> unit quaternions ``(N, 4)`` (w, x, y, z), Shepperd's method."""
    m = mat
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([  # (4, N, 4): the four branches, each stable where its pivot is largest
        torch.stack([1 + trace, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], m[:, 0, 1] + m[:, 1, 0],
                     m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                     m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ])
    pivots = torch.stack([trace, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], 0).argmax(0)  # (N,)
    q = cands[pivots, torch.arange(m.shape[0], device=m.device)]  # (N, 4)
    return q / q.norm(dim=-1, keepdim=True)


class PickCubeWarp:
    """``num_envs`` pick-cube worlds on one Warp device. See the module docstring."""

    task = "pick up the red cube and lift it"

    def __init__(self, cfg: PandaPickCubeConfig | None = None, num_envs: int = 1, seed: int = 0,
                 device: str | None = None, nconmax: int = 48, njmax: int = 256) -> None:
        ok, why = warp_available()
        if not ok:
            raise RuntimeError(f"the MuJoCo Warp twin needs `pip install mujoco-warp` ({why})")
        import mujoco_warp as mjw
        import warp as wp

        cfg = cfg if cfg is not None else PandaPickCubeConfig()
        if cfg.obs != "state":
            raise ValueError(f"the Warp twin has state observations only, got obs={cfg.obs!r}")
        bad = [k for k in _UNSUPPORTED_KNOBS if getattr(cfg.randomization, k)]
        if bad:
            raise ValueError(f"the Warp twin randomizes only the cube pose and state noise; turn off {bad}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._wp, self._mjw = wp, mjw
        wp.config.quiet = True
        self.cfg, self.num_envs = cfg, int(num_envs)
        self.wp_device = device or ("cuda:0" if wp.is_cuda_available() else "cpu")
        self.device = torch.device(self.wp_device)
        self.control_hz, self.max_episode_steps = float(cfg.control_hz), int(cfg.max_episode_steps)
        self.n_substeps = int(round(1.0 / (cfg.control_hz * cfg.physics_dt)))
        if self.n_substeps < 1:
            raise ValueError(f"physics_dt={cfg.physics_dt} is longer than one control period")
        self.action_spec = ActionSpec((4,), (-1.0,) * 4, (1.0,) * 4, ("dx", "dy", "dz", "grip"))
        self.obs_spec = ObsSpec({"state": ArraySpec((28,), "float32")})
        mjm = mujoco.MjModel.from_xml_string(pm.build_mjcf(cfg.physics_dt, False, 64))
        self.mjm = mjm
        self._tcp_site = mujoco.mj_name2id(mjm, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        cube_joint = mujoco.mj_name2id(mjm, mujoco.mjtObj.mjOBJ_JOINT, "cube_joint")
        self._cube_q = int(mjm.jnt_qposadr[cube_joint])  # 7 entries: xyz + quat (wxyz)
        n, nv, dev = self.num_envs, mjm.nv, self.device
        with wp.ScopedDevice(self.wp_device):
            self.m = mjw.put_model(mjm)
            self.d = mjw.put_data(mjm, mujoco.MjData(mjm), nworld=n, nconmax=nconmax, njmax=njmax)
            self._jacp = wp.zeros((n, 3, nv), dtype=float)  # translational Jacobian of the TCP site
            self._jacr = wp.zeros((n, 3, nv), dtype=float)  # rotational Jacobian
            self._rhs = wp.zeros((n, nv), dtype=float)  # one column of J^T for solve_m
            self._sol = wp.zeros((n, nv), dtype=float)  # M^-1 times that column
            self._body = wp.array(np.full(n, mjm.site_bodyid[self._tcp_site], np.int32), dtype=wp.int32)
            self._point = wp.zeros(n, dtype=wp.vec3)  # TCP position, the Jacobian's reference point
        t = wp.to_torch  # zero-copy torch views of the Warp arrays
        self.qpos, self.qvel, self.ctrl = t(self.d.qpos), t(self.d.qvel), t(self.d.ctrl)  # (N, nq) (N, nv) (N, nu)
        self.bias = t(self.d.qfrc_bias)  # (N, nv) Coriolis + gravity
        self.site_xpos = t(self.d.site_xpos)[:, self._tcp_site]  # (N, 3)
        self.site_xmat = t(self.d.site_xmat)[:, self._tcp_site]  # (N, 3, 3)
        self.jac = torch.cat([t(self._jacp), t(self._jacr)], 1)  # (N, 6, nv) copy, refreshed by _jacobian()
        self.rhs, self.sol, self.point = t(self._rhs), t(self._sol), t(self._point)  # (N, nv) (N, nv) (N, 3)
        f32 = dict(dtype=torch.float32, device=dev)
        kp = torch.tensor([900.0] * 3 + [400.0] * 3, **f32)  # as OperationalSpaceController's defaults
        self.kp, self.kd = kp, 2.0 * torch.sqrt(kp)  # (6,)
        self.kp_posture, self.kd_posture = 10.0, 2.0 * math.sqrt(10.0)
        self.posture = torch.tensor(pm.HOME_QPOS, **f32)  # (7,)
        self.torque_limits = torch.tensor(pm.TORQUE_LIMITS, **f32)  # (7,)
        self.ws_low = torch.tensor(cfg.workspace_low, **f32)  # (3,)
        self.ws_high = torch.tensor(cfg.workspace_high, **f32)  # (3,)
        self.max_lead = 2.0 * cfg.action_scale
        self.target = torch.zeros(n, 3, **f32)  # TCP position targets (m, world)
        self.home_rot = torch.eye(3, **f32).repeat(n, 1, 1)  # (N, 3, 3) orientation targets
        self.steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self.cube_rest_z = pm.CUBE_HALF_SIZE
        self.seeds = [seed + 1000 * j for j in range(n)]
        self._episodes = np.zeros(n, np.int64)
        self._noise = torch.Generator(device=dev).manual_seed(seed)
        self._quat_ref = torch.tensor([0.0, 1.0, 0.0, 0.0], **f32)
        self.reset()  # a valid state from the start; the first explicit reset() draws the same episode again
        self._episodes[:] = 0

    # ------------------------------------------------------------------ physics + control
    def _jacobian(self) -> torch.Tensor:
        """(N, 6, nv) TCP Jacobian (rows: linear 3, angular 3) at the current kinematics."""
        self.point.copy_(self.site_xpos)
        self._mjw.jac(self.m, self.d, self._jacp, self._jacr, self._point, self._body)
        t = self._wp.to_torch
        self.jac[:, :3], self.jac[:, 3:] = t(self._jacp), t(self._jacr)
        return self.jac

    def _torques(self) -> torch.Tensor:
        """Operational-space control, batched: tau (N, 7) for the current state (after step1)."""
        jac = self._jacobian()  # (N, 6, nv)
        minv_jt = torch.empty_like(jac)  # (N, 6, nv): rows of (M^-1 J^T)^T
        for c in range(6):  # M^-1 J^T by 6 back-substitutions with MuJoCo's factored mass matrix
            self.rhs.copy_(jac[:, c])
            self._mjw.solve_m(self.m, self.d, self._sol, self._rhs)
            minv_jt[:, c] = self.sol
        lam_inv = jac @ minv_jt.transpose(1, 2) + 1e-4 * torch.eye(6, device=jac.device)  # (N, 6, 6)
        chol = torch.linalg.cholesky(lam_inv)  # (N, 6, 6)
        err_rot = self.home_rot @ self.site_xmat.transpose(1, 2)  # (N, 3, 3)
        error = torch.cat([self.target - self.site_xpos,
                           0.5 * torch.stack([err_rot[:, 2, 1] - err_rot[:, 1, 2], err_rot[:, 0, 2] - err_rot[:, 2, 0],
                                              err_rot[:, 1, 0] - err_rot[:, 0, 1]], -1)], -1)  # (N, 6)
        q_arm, v_arm = self.qpos[:, :7], self.qvel[:, :7]  # (N, 7)
        tau_posture = self.kp_posture * (self.posture - q_arm) - self.kd_posture * v_arm  # (N, 7)
        twist = (jac @ self.qvel.unsqueeze(-1)).squeeze(-1)  # (N, 6)
        rhs = self.kp * error - self.kd * twist - (minv_jt[:, :, :7] @ tau_posture.unsqueeze(-1)).squeeze(-1)
        wrench = torch.cholesky_solve(rhs.unsqueeze(-1), chol)  # (N, 6, 1)
        tau = (jac[:, :, :7].transpose(1, 2) @ wrench).squeeze(-1) + tau_posture + self.bias[:, :7]  # (N, 7)
        return torch.maximum(torch.minimum(tau, self.torque_limits), -self.torque_limits)

    def _physics(self) -> None:
        mjw = self._mjw
        with self._wp.ScopedDevice(self.wp_device):
            for _ in range(self.n_substeps):
                mjw.step1(self.m, self.d)
                self.ctrl[:, :7] = self._torques()
                mjw.step2(self.m, self.d)
            mjw.forward(self.m, self.d)

    # ------------------------------------------------------------------ episodes
    def _reset_rows(self, rows: np.ndarray) -> None:
        """Fresh episodes for worlds ``rows`` (cube pose drawn exactly as the CPU twin's reset draws it)."""
        mask = torch.zeros(self.num_envs, dtype=torch.bool)
        mask[torch.as_tensor(rows)] = True
        with self._wp.ScopedDevice(self.wp_device):
            self._mjw.reset_data(self.m, self.d, self._wp.from_torch(mask.to(self.device)))
        cube = np.zeros((len(rows), 7), np.float32)
        for i, j in enumerate(rows):
            rng = np.random.default_rng(self.seeds[j] + int(self._episodes[j]))
            xy, yaw = sample_object_pose(rng, self.cfg.randomization, pm.CUBE_HOME_XY)
            cube[i] = (xy[0], xy[1], self.cube_rest_z, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
            self._episodes[j] += 1
        idx = torch.as_tensor(rows, device=self.device)
        self.qpos[idx, :7] = torch.as_tensor(pm.HOME_QPOS, dtype=torch.float32, device=self.device)
        self.qpos[idx, 7:9] = _GRIPPER_OPEN
        self.qpos[idx, self._cube_q:self._cube_q + 7] = torch.as_tensor(cube, device=self.device)
        self.qvel[idx] = 0.0
        self.ctrl[idx] = 0.0
        self.ctrl[idx, 7:9] = _GRIPPER_OPEN
        with self._wp.ScopedDevice(self.wp_device):
            self._mjw.forward(self.m, self.d)
        self.home_rot[idx] = self.site_xmat[idx]
        self.target[idx] = torch.minimum(torch.maximum(self.site_xpos[idx], self.ws_low), self.ws_high)
        self.steps[idx] = 0

    def reset(self, *, seed: int | None = None) -> dict[str, torch.Tensor]:
        if seed is not None:
            self.seeds = [seed + 1000 * j for j in range(self.num_envs)]
            self._episodes[:] = 0
            self._noise.manual_seed(seed)
        self._reset_rows(np.arange(self.num_envs))
        return check_obs(self._observation(), self.obs_spec, self.num_envs)

    def step(self, action: Any) -> BatchedStep:
        action = check_actions(action, self.num_envs, self.action_spec, self.device)  # (N, 4)
        # TCP target integrates the deltas inside the safety box and leads the TCP by at most two steps.
        tcp = self.site_xpos.clone()  # (N, 3)
        target = torch.minimum(torch.maximum(self.target + self.cfg.action_scale * action[:, :3], self.ws_low),
                               self.ws_high)
        lead = target - tcp
        norm = lead.norm(dim=-1, keepdim=True)  # (N, 1)
        limited = torch.minimum(torch.maximum(tcp + lead * (self.max_lead / norm.clamp_min(1e-12)), self.ws_low),
                                self.ws_high)
        self.target = torch.where(norm > self.max_lead, limited, target)
        self.ctrl[:, 7:9] = torch.where(action[:, 3:4] > 0.0, _GRIPPER_CLOSED, _GRIPPER_OPEN)
        self._physics()
        self.steps += 1
        success = self.qpos[:, self._cube_q + 2] >= self.cube_rest_z + self.cfg.lift_height  # (N,)
        truncated = ~success & (self.steps >= self.max_episode_steps)
        final_obs = check_obs(self._observation(), self.obs_spec, self.num_envs, "final_obs")
        done = success | truncated
        obs = final_obs
        if bool(done.any()):  # same-step auto-reset of the finished worlds
            self._reset_rows(torch.nonzero(done).flatten().cpu().numpy())
            obs = {"state": torch.where(done[:, None], self._observation()["state"], final_obs["state"])}
        return BatchedStep(obs=obs, final_obs=final_obs, reward=success.float(), terminated=success,
                           truncated=truncated, success=success)

    # ------------------------------------------------------------------ observations
    def _observation(self) -> dict[str, torch.Tensor]:
        """``state`` (N, 28): the CPU twin's layout (TCP pos, quat, lin vel, ang vel, grip, q1..q7, cube pose)."""
        twist = (self._jacobian() @ self.qvel.unsqueeze(-1)).squeeze(-1)  # (N, 6): linear, angular
        quat = mat_to_quat(self.site_xmat)  # (N, 4)
        quat = torch.where((quat @ self._quat_ref < 0)[:, None], -quat, quat)
        cube = self.qpos[:, self._cube_q:self._cube_q + 7]  # (N, 7)
        cube_quat = torch.where(cube[:, 3:4] < 0, -cube[:, 3:], cube[:, 3:])
        state = torch.cat([self.site_xpos, quat, twist[:, :3], twist[:, 3:], self.qpos[:, 7:8] + self.qpos[:, 8:9],
                           self.qpos[:, :7], cube[:, :3], cube_quat], -1).float()
        std = self.cfg.randomization.state_noise_std
        if std > 0:
            state = state + std * torch.randn(state.shape, generator=self._noise, device=self.device)
        return {"state": state}

    def cube_pose(self) -> torch.Tensor:
        """(N, 7) cube position + quaternion (w >= 0)."""
        return self._observation()["state"][:, 21:28]

    def close(self) -> None:
        pass
