"""Scripted experts for the Panda cube twins: small state machines over ``obs['state']`` (layout in
:mod:`robot_rl.sim.panda_pick_cube`). Pure numpy; they return float32 actions in [-1, 1].

In ``obs="state"`` mode the cube pose is read from the observation. Pixel-mode observations carry no cube
pose, so there the env hands the expert a ``cube_pose_source`` (ground truth, as a motion-capture system or a
fiducial tracker would supply on a real cell); the expert never touches the simulator otherwise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

_TCP, _OPENING, _CUBE = slice(0, 3), 13, slice(21, 28)
_CUBE_WIDTH = 0.04
_CLOSED_ON_NOTHING = 0.01
"""A grip reading below this (m) means the fingers closed on air: the grasp missed."""


class PickCubeExpert:
    """approach above the cube -> descend -> close -> lift; re-approaches when the cube slips or is missed."""

    def __init__(self, action_scale: float, cube_pose_source: Callable[[], np.ndarray] | None = None,
                 lift_to: float = 0.2, hover: float = 0.07, grasp_steps: int = 3, gain: float = 0.4) -> None:
        self.action_scale = action_scale
        self.gain = gain
        """Fraction of the remaining TCP error commanded per step (< 1 stays stable with a step or two of latency)."""
        self.cube_pose_source = cube_pose_source
        self.lift_to = lift_to
        """TCP height (m) to carry the cube to (success needs its centre 0.12 m up)."""
        self.hover = hover
        """Height (m) above the cube centre at which the hand lines up before descending."""
        self.grasp_steps = grasp_steps
        """Control steps to hold still while the fingers close."""
        self.phase = "approach"
        self._timer = 0

    def reset(self) -> None:
        self.phase = "approach"
        self._timer = 0

    def _cube(self, state: np.ndarray) -> np.ndarray:
        pose = self.cube_pose_source() if self.cube_pose_source is not None else state[_CUBE]
        return np.asarray(pose[:3], np.float64)

    def _move(self, tcp: np.ndarray, target: np.ndarray, grip: float) -> np.ndarray:
        delta = np.clip(self.gain * (target - tcp) / self.action_scale, -1.0, 1.0)
        return np.array([*delta, grip], np.float32)

    def _grasp_lost(self, tcp: np.ndarray, cube: np.ndarray, opening: float) -> bool:
        return opening < _CLOSED_ON_NOTHING or np.linalg.norm(cube - tcp) > 0.03

    def _pick(self, tcp: np.ndarray, cube: np.ndarray, opening: float) -> np.ndarray | None:
        """Actions of the shared pick phases; ``None`` once the cube is held (``phase == 'holding'``)."""
        xy_error = np.linalg.norm(cube[:2] - tcp[:2])
        if self.phase == "approach":
            above = cube + np.array([0.0, 0.0, self.hover])
            if xy_error < 0.006 and abs(tcp[2] - above[2]) < 0.015 and opening > _CUBE_WIDTH + 0.02:
                self.phase = "descend"
            else:
                return self._move(tcp, above, -1.0)
        if self.phase == "descend":
            if xy_error > 0.015:
                self.phase = "approach"
                return self._move(tcp, cube + np.array([0.0, 0.0, self.hover]), -1.0)
            if abs(tcp[2] - cube[2]) < 0.006:
                self.phase, self._timer = "grasp", 0
            else:
                return self._move(tcp, cube, -1.0)
        if self.phase == "grasp":
            self._timer += 1
            if self._timer <= self.grasp_steps:
                return self._move(tcp, cube, 1.0)
            if self._grasp_lost(tcp, cube, opening):
                self.phase = "approach"
                return self._move(tcp, tcp + np.array([0.0, 0.0, 0.05]), -1.0)
            self.phase = "holding"
        return None

    def progress(self, obs: dict[str, np.ndarray]) -> float:
        """Task potential (m) that rises as the pick advances, whatever the route: minus the TCP-cube distance,
        plus twice the cube's height above the table. The virtual operator watches it, not the expert's actions,
        so a policy that descends diagonally instead of hovering first is not "heading for failure"."""
        state = np.asarray(obs["state"], np.float64)
        tcp, cube = state[_TCP], self._cube(state)
        return float(-np.linalg.norm(cube - tcp) + 2.0 * max(0.0, cube[2] - _CUBE_WIDTH / 2))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], np.float64)
        tcp, opening, cube = state[_TCP], float(state[_OPENING]), self._cube(state)
        action = self._pick(tcp, cube, opening)
        if action is not None:
            return action
        if self._grasp_lost(tcp, cube, opening):
            self.phase = "approach"
            return self._move(tcp, tcp + np.array([0.0, 0.0, 0.03]), -1.0)
        return self._move(tcp, np.array([tcp[0], tcp[1], self.lift_to]), 1.0)


class PickPlaceCubeExpert(PickCubeExpert):
    """pick (as above) -> carry over the target -> lower -> open -> back off upwards."""

    def __init__(self, action_scale: float, cube_pose_source: Callable[[], np.ndarray] | None = None,
                 carry_height: float = 0.1) -> None:
        super().__init__(action_scale, cube_pose_source)
        self.carry_height = carry_height
        """TCP height (m) while carrying the cube to the target."""

    def progress(self, obs: dict[str, np.ndarray]) -> float:
        """Task potential (m): minus the TCP-cube distance and the cube's horizontal distance to the target."""
        state = np.asarray(obs["state"], np.float64)
        tcp, cube, target = state[_TCP], self._cube(state), state[-3:]
        return float(-np.linalg.norm(cube - tcp) - np.linalg.norm(cube[:2] - target[:2]))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], np.float64)
        tcp, opening, cube = state[_TCP], float(state[_OPENING]), self._cube(state)
        target = state[-3:]  # place-target centre on the table
        if self.phase in ("release", "retreat"):
            self._timer += 1
            if self.phase == "release" and self._timer > 2:
                self.phase = "retreat"
            if self.phase == "retreat" and np.linalg.norm(cube[:2] - target[:2]) > 0.02 and opening > 0.06:
                # The cube landed off target: pick it up again.
                self.phase = "approach"
            else:
                return self._move(tcp, np.array([tcp[0], tcp[1], cube[2] + self.hover]), -1.0)
        action = self._pick(tcp, cube, opening)
        if action is not None:
            return action
        if self._grasp_lost(tcp, cube, opening):
            self.phase = "approach"
            return self._move(tcp, tcp + np.array([0.0, 0.0, 0.03]), -1.0)
        # Holding: offset the TCP by where the cube sits in the hand so the cube (not the TCP) lands on target.
        in_hand = cube[:2] - tcp[:2]
        goal_xy = target[:2] - in_hand
        xy_error = np.linalg.norm(goal_xy - tcp[:2])
        if xy_error > 0.02:  # still travelling: carry at a safe height
            return self._move(tcp, np.array([goal_xy[0], goal_xy[1], self.carry_height]), 1.0)
        if xy_error > 0.006:  # fine alignment at the current height
            return self._move(tcp, np.array([goal_xy[0], goal_xy[1], tcp[2]]), 1.0)
        place_z = tcp[2] - (cube[2] - (_CUBE_WIDTH / 2 + 0.002))
        if tcp[2] - place_z > 0.004:
            return self._move(tcp, np.array([goal_xy[0], goal_xy[1], place_z]), 1.0)
        self.phase, self._timer = "release", 0
        return self._move(tcp, tcp, -1.0)
