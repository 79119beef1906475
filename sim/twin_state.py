"""Reset-to-state for the Panda twins: what return-and-explore and demo replay need from a simulator.

:func:`capture` takes the full dynamic state (joint positions and velocities, actuator commands, the TCP
target the controller integrates); :func:`restore` puts it back and starts a fresh episode there (the
time limit restarts; the randomised model of the current episode is kept). :func:`reset_like` starts an
episode whose cube sits where a recorded first frame had it (arm at home, as every reset), so recorded
actions can be replayed open loop. Works on :class:`~robot_rl.sim.panda_pick_cube.PandaPickCube` and its
subclasses; a real robot has no such reset (a person drives it back), see the HIL docs.
"""
from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

_CUBE_POSE = slice(21, 28)


def capture(env: Any) -> np.ndarray:
    d = env.data
    return np.concatenate([d.qpos, d.qvel, d.ctrl, env._target]).astype(np.float64)


def restore(env: Any, state: np.ndarray) -> dict[str, np.ndarray]:
    m, d = env.model, env.data
    sizes = (m.nq, m.nv, m.nu, 3)
    state = np.asarray(state, np.float64)
    if state.shape != (sum(sizes),):
        raise ValueError(f"twin state has {state.shape} entries, this model needs {sum(sizes)}")
    parts = np.split(state, np.cumsum(sizes)[:-1])
    d.qpos[:], d.qvel[:], d.ctrl[:] = parts[0], parts[1], parts[2]
    d.qacc_warmstart[:] = 0.0
    env._target = parts[3].copy()
    env.controller.set_target(env._target, env._home_rot)
    env._new_episode()
    mujoco.mj_forward(m, d)
    return env._observation()


def reset_like(env: Any, first_state: np.ndarray, seed: int | None = None) -> dict[str, np.ndarray]:
    """Reset, then move the cube to the pose in ``first_state`` (a recorded ``obs['state']`` frame 0)."""
    if not env._cube_in_state:
        raise ValueError("reset_like needs state observations: a pixel demo's frames carry no cube pose")
    first_state = np.asarray(first_state, np.float64)
    env.reset(seed=seed)
    tcp = env.data.site_xpos[env._tcp_site]
    if np.linalg.norm(first_state[:3] - tcp) > 0.01:
        raise ValueError(f"the recorded episode does not start at the home pose (TCP {first_state[:3]} vs {tcp})")
    q = env._cube_qpos
    env.data.qpos[q:q + 7] = first_state[_CUBE_POSE]
    env.data.qvel[env._cube_qvel:env._cube_qvel + 6] = 0.0
    mujoco.mj_forward(env.model, env.data)
    return env._observation()
