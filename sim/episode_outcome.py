"""How far a Panda twin episode got: the stage a failed episode stopped at, from the simulator itself.

A success rate says how often a policy fails, not how. On the pick-cube twins nearly every failure is one of a
few things, and telling them apart says where to look: a hand that closes beside the cube is the policy's aim
(its grasp of the cube's position), one that holds the cube and never lifts it is the lift, one that never
closes is the approach. ``robot-rl eval`` counts the stages (:func:`robot_rl.evaluate.run_episodes`), and the
learner logs them per evaluation (``eval/outcome/<stage>``).

Stages, in the order an episode passes them (a failure is named by the furthest one it reached):

- ``never_closed``: the gripper was never commanded closed.
- ``closed_off_object``: it closed, but never with both finger pads on the cube.
- ``held_not_lifted`` (pick): both pads held the cube, but it never rose ``lift_height``.
- ``held_not_placed`` (pick-and-place): held it, but did not leave it released on the target.
- ``success``.

Alongside the stage: ``closes`` (times the command went from open to closed), ``nearest_close_xy_m`` (the
horizontal TCP-to-cube distance at the close nearest the cube; None without a close), ``max_lift_m`` (highest
the cube rose above its resting height) and, with a target, ``cube_to_target_m`` at the end.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the twin imports mujoco; this module only reads its data
    import mujoco

STAGES = ("never_closed", "closed_off_object", "held_not_lifted", "held_not_placed", "success")
"""Every stage name, in the order an episode passes them."""


class GraspOutcome:
    """Per-episode record of what the hand did with the cube, updated after every control step."""

    def __init__(self, cube_geom: int, pad_geoms: tuple[int, int]) -> None:
        self._cube_geom = cube_geom
        self._pads = frozenset(pad_geoms)
        self.reset()

    def reset(self) -> None:
        self.closes = 0
        self.nearest_close_xy: float | None = None
        self.held = False
        self.max_lift = 0.0
        self._was_closed = False

    def _pads_on_cube(self, data: mujoco.MjData) -> bool:
        """Both finger pads touch the cube (a contact from each: the cube is between them)."""
        touching = set()
        for i in range(data.ncon):
            contact = data.contact[i]
            pair = (int(contact.geom1), int(contact.geom2))
            if self._cube_geom in pair:
                other = pair[1] if pair[0] == self._cube_geom else pair[0]
                if other in self._pads:
                    touching.add(other)
        return touching == self._pads

    def update(self, data: mujoco.MjData, closing: bool, tcp_xy: np.ndarray, cube_xyz: np.ndarray,
               cube_rest_z: float) -> None:
        """After a step: ``closing`` the gripper command of that step, ``tcp_xy (2,)``, ``cube_xyz (3,)`` (m)."""
        if closing and not self._was_closed:
            self.closes += 1
            xy_error = float(np.linalg.norm(np.asarray(tcp_xy) - np.asarray(cube_xyz[:2])))
            self.nearest_close_xy = xy_error if self.nearest_close_xy is None \
                else min(self.nearest_close_xy, xy_error)
        self._was_closed = closing
        if closing and not self.held:
            self.held = self._pads_on_cube(data)
        self.max_lift = max(self.max_lift, float(cube_xyz[2]) - cube_rest_z)

    def outcome(self, success: bool, with_target: bool) -> dict[str, Any]:
        """The episode's stage and figures (module docstring)."""
        if success:
            stage = "success"
        elif self.held:
            stage = "held_not_placed" if with_target else "held_not_lifted"
        elif self.closes:
            stage = "closed_off_object"
        else:
            stage = "never_closed"
        return {"stage": stage, "closes": self.closes, "nearest_close_xy_m": self.nearest_close_xy,
                "max_lift_m": self.max_lift}
