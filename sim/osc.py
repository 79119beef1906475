"""Operational-space (task-space impedance) control of the Panda arm, evaluated at every physics step.

tau = J^T Lambda (Kp e - Kd v) + (I - J^T Jbar^T) tau_posture + bias, with
  J (6 x nv) the TCP twist Jacobian, Lambda = (J M^-1 J^T)^-1 the task-space inertia (6 x 6),
  Jbar = M^-1 J^T Lambda the dynamically consistent pseudo-inverse, tau_posture a joint-space PD towards the
  home posture projected into the nullspace (the redundant 7th DoF stays near home), and bias = Coriolis +
  gravity (``qfrc_bias``) so the arm floats at its target. Torques are clipped to Franka's limits.

The hot loop calls MuJoCo through ``mj_step1`` (kinematics, mass matrix and its factorization at the current
state) -> control -> ``mj_step2`` (actuation, constraints, integration), so the controller sees the exact current
state and no quantity is computed twice. All buffers are preallocated: the Python cost per physics step is a
dozen small numpy calls.
"""
from __future__ import annotations

import mujoco
import numpy as np


class OperationalSpaceController:
    """Drives ``n_arm`` arm joints (dofs/actuators ``0..n_arm-1``) so that ``site`` tracks a position and orientation.

    Gains are per unit task-space inertia (Lambda-scaled), so ``pos_stiffness`` = omega^2 (1/s^2) and damping is
    critical by default: the closed loop behaves like a unit mass-spring-damper in every task direction.
    """

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, site: str, n_arm: int,
                 torque_limits: np.ndarray, posture: np.ndarray, pos_stiffness: float = 900.0,
                 rot_stiffness: float = 400.0, posture_stiffness: float = 10.0, damping_ratio: float = 1.0) -> None:
        self.model, self.data = model, data
        self.site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        self.n_arm = n_arm
        self.torque_limits = np.asarray(torque_limits, np.float64)
        self.posture = np.asarray(posture, np.float64).copy()
        self.kp = np.array([pos_stiffness] * 3 + [rot_stiffness] * 3)  # (6,)
        self.kd = 2.0 * damping_ratio * np.sqrt(self.kp)  # (6,)
        self.kp_posture = posture_stiffness
        self.kd_posture = 2.0 * np.sqrt(posture_stiffness)
        nv = model.nv
        self._jac = np.zeros((6, nv))  # rows 0..2 translational, 3..5 rotational Jacobian of the site
        self._minv_jt_t = np.zeros((6, nv))  # (M^-1 J^T)^T, via the sparse factorization of M
        self._regularizer = 1e-4 * np.eye(6)  # keeps Lambda finite at kinematic singularities
        self._chol = np.zeros((6, 6))  # Lambda^-1, then its Cholesky factor
        self._error = np.zeros(6)  # position error (3) + rotation-vector error (3)
        self._wrench = np.zeros(6)  # Lambda (Kp e - Kd v) - Jbar^T tau_posture
        # Views into the preallocated buffers and into MjData (stable for the data's lifetime): slicing MjData
        # attributes anew costs ~0.4 us each, a sizeable share of a ~15 us control step.
        self._jac_pos, self._jac_rot = self._jac[:3], self._jac[3:]
        self._jac_arm_t = self._jac[:, :n_arm].T  # (n_arm, 6)
        self._minv_jt_t_arm = self._minv_jt_t[:, :n_arm]  # (6, n_arm)
        self._site_xpos = data.site_xpos[self.site_id]
        self._site_xmat = data.site_xmat[self.site_id]
        self._qpos_arm, self._qvel_arm, self._qvel = data.qpos[:n_arm], data.qvel[:n_arm], data.qvel
        self._bias_arm = data.qfrc_bias[:n_arm]
        self._neg_torque_limits = -self.torque_limits
        self.target_pos = np.zeros(3)
        self.target_rot = np.eye(3)

    def set_target(self, pos: np.ndarray, rot: np.ndarray | None = None) -> None:
        self.target_pos[:] = pos
        if rot is not None:
            self.target_rot[:] = rot

    def compute_torques(self) -> np.ndarray:
        """Arm torques (n_arm,) for the current ``data`` state (needs ``mj_step1``/``mj_forward`` done)."""
        jac, minv_jt_t, chol = self._jac, self._minv_jt_t, self._chol
        mujoco.mj_jacSite(self.model, self.data, self._jac_pos, self._jac_rot, self.site_id)
        mujoco.mj_solveM(self.model, self.data, minv_jt_t, jac)
        # Lambda^-1 = J M^-1 J^T (6, 6), Cholesky-factored in place (MuJoCo's C routine: no LAPACK call overhead).
        np.matmul(jac, minv_jt_t.T, out=chol)
        chol += self._regularizer
        mujoco.mju_cholFactor(chol, 0.0)
        # Orientation error: vee of the skew part of R_target R^T (a rotation vector, exact for small angles
        # and bounded for large ones, which the fixed-orientation task never sees).
        err_rot = self.target_rot @ self._site_xmat.reshape(3, 3).T
        error = self._error
        np.subtract(self.target_pos, self._site_xpos, out=error[:3])
        error[3] = 0.5 * (err_rot[2, 1] - err_rot[1, 2])
        error[4] = 0.5 * (err_rot[0, 2] - err_rot[2, 0])
        error[5] = 0.5 * (err_rot[1, 0] - err_rot[0, 1])
        # Joint-space posture PD (arm dofs only), later projected into the task nullspace.
        tau_posture = self.kp_posture * (self.posture - self._qpos_arm) - self.kd_posture * self._qvel_arm  # (n,)
        # Impedance acceleration minus the part of the posture torque that would move the TCP
        # (Jbar^T tau_posture = Lambda J M^-1 tau_posture), both solved with the factored Lambda^-1 at once.
        rhs = self.kp * error - self.kd * (jac @ self._qvel) - self._minv_jt_t_arm @ tau_posture  # (6,)
        mujoco.mju_cholSolve(self._wrench, chol, rhs)
        torques = self._jac_arm_t @ self._wrench
        torques += tau_posture
        torques += self._bias_arm
        np.minimum(torques, self.torque_limits, out=torques)
        return np.maximum(torques, self._neg_torque_limits, out=torques)
