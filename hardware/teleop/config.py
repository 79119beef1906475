"""Schema of the ``hil`` config group (human in the loop): teleop device, intervention, graded protocol.

The core keeps only the base :class:`robot_rl.config.HilConfig` (``name``); this subclass is stored as
``hil/teleop_schema`` and the presets in ``robot_rl/conf/hil/<name>.yaml`` build on it
(``robot-rl train hil=keyboard``), the same way env configs extend ``EnvConfig``. Light on purpose:
loading a config imports this module, so it never imports a device library or mujoco.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robot_rl.config import ConfigNode, HilConfig, store

DEVICES = ("none", "keyboard", "spacemouse", "gamepad", "virtual")
ROLES = ("intervene", "grip", "success", "failure", "reset", "pause")
"""Button roles a device may map: take over, toggle the gripper, label the episode, reset, pause."""


@dataclass
class DeviceConfig(ConfigNode):
    """How a physical teleop device is read and mapped onto an end-effector delta + gripper command."""

    path: str = ""
    """Device node (``/dev/hidraw3``, ``/dev/input/event7``; ``stdin`` or a tty path for the keyboard).
    Empty: discover the first matching device (3Dconnexion vendor ids; an input device with gamepad buttons)."""
    dead_zone: float = 0.1
    """Fraction of full scale below which an axis reads 0; the rest is rescaled so output stays continuous."""
    full_scale: float = 350.0
    """SpaceMouse raw counts at full deflection (3Dconnexion devices report about +-350)."""
    axis_map: tuple[str, str, str] = ("x", "y", "z")
    """Device axis driving the robot's dx, dy, dz (SpaceMouse: x y z rx ry rz; gamepad: evdev names such
    as ABS_Y; keyboard: x y z)."""
    axis_sign: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Sign per robot axis (flip an axis that moves the wrong way from where the operator stands)."""
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Gain per robot axis applied after the dead zone; the result is clipped to the action bounds."""
    buttons: dict[str, str] = field(default_factory=dict)
    """Role (intervene, grip, success, failure, reset, pause) -> device button: a bit index for the
    SpaceMouse (``"0"``), an evdev key name for gamepads (``BTN_TL``), a key for the keyboard (``i``, ``up``)."""
    keys: dict[str, str] = field(default_factory=dict)
    """Keyboard only: motion key -> ``+x -x +y -y +z -z`` (``up: +x``)."""
    intervene_mode: str = "hold"
    """``hold``: intervene while the button is held; ``toggle``: a press starts, the next ends;
    ``motion``: any deflection beyond the dead zone takes over (the button still toggles)."""
    motion_hold_s: float = 0.5
    """``motion`` mode: control returns to the policy this long after the last deflection."""
    key_timeout_s: float = 0.6
    """Keyboard: a motion key acts this long after its last byte (longer than the terminal's autorepeat
    delay, so a held key moves continuously; a terminal reports no key releases)."""
    stale_timeout_s: float = 0.3
    """A device deflected or intervening that sends nothing for this long is taken as lost: robot held."""
    abs_ranges: dict[str, list[int]] = field(default_factory=dict)
    """Gamepad: axis ranges (min, max) used when the node cannot be asked (EVIOCGABS fails on a pipe)."""
    reconnect_s: float = 1.0
    """Seconds between attempts to reopen a device node that disappeared."""


@dataclass
class VirtualOperatorConfig(ConfigNode):
    """The headless operator: the scripted expert takes over when the policy stalls or heads for failure."""

    window: int = 8
    """Steps over which progress, stalling and disagreement are judged."""
    min_progress: float = 0.01
    """The policy heads for failure when the expert's task potential (``expert.progress(obs)``: for the Panda
    twins minus the TCP-cube distance plus the cube's lift, in m) rose by less than this over ``window`` steps.
    This judges the outcome, as a person watching does, so a route other than the expert's is left alone."""
    stall_distance: float = 0.01
    """The policy stalls when the first three state entries (TCP position) moved less than this over
    ``window`` steps (units of the state, m for the Panda twins)."""
    stall_expert_motion: float = 0.3
    """...but only while the expert would move: its mean motion command over the window is larger than this
    (L2, action units). Standing still to close the gripper is what the expert does too."""
    disagreement: float = 0.0
    """0 = off. Above 0: also take over when the policy's mean motion over ``window`` steps differs from the
    expert's by more than this (L2, action units), or its gripper is the other way on most of those steps. Strict:
    it flags any route but the expert's. It is the only failure judge for experts without ``progress``."""
    takeover_steps: int = 15
    """Steps the operator keeps control once it took over."""
    cooldown_steps: int = 10
    """Steps the policy keeps control after a takeover before the operator may step in again."""
    takeover_prob: float = 1.0
    """Chance the operator acts on a trigger (below 1: an inattentive person)."""
    label_failure: bool = True
    """Press "failure" on episodes that time out without success (the label a watching person gives)."""


@dataclass
class ProtocolConfig(ConfigNode):
    """VLAC's graded human-in-the-loop protocol: demo replay, return-and-explore, guided exploration."""

    demo_replay_episodes: int = 0
    """First N episodes replay recorded demos open loop from their start states (operator actions,
    ``intervened=True``, the policy's proposals kept). Needs an env with ``reset_like`` (the twins)."""
    demos: str = ""
    """Episode store with the demos to replay; empty: ``learner.demos``, else ``<run_dir>/demos``."""
    return_prob: float = 0.0
    """Chance an episode starts from a state where the policy failed (where the operator had to take
    over) instead of a fresh reset. Needs an env with ``get_state``/``set_state`` (the twins)."""
    failure_states: int = 64
    """Most recent failure states kept for return-and-explore."""
    guided: bool = True
    """Human-guided exploration: the operator may intervene during policy episodes."""


@dataclass
class TeleopConfig(HilConfig):
    """Human in the loop: ``hil=keyboard|spacemouse|gamepad|virtual`` (``hil=none``: the policy alone)."""

    name: str = "virtual"
    """Operator: ``keyboard``, ``spacemouse``, ``gamepad`` or ``virtual`` (the scripted expert)."""
    device: DeviceConfig = field(default_factory=DeviceConfig)
    """Device reading and mapping (keyboard, spacemouse, gamepad)."""
    virtual: VirtualOperatorConfig = field(default_factory=VirtualOperatorConfig)
    """The scripted operator (``hil=virtual``)."""
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    """Which stages of the graded protocol this run uses."""
    success_reward: float = 1.0
    """Reward written on the step where the operator presses "success" (the step also terminates)."""
    window: str = "auto"
    """Live camera window of the twin: ``auto`` (only when a display exists), ``on`` or ``off``."""
    hold_poll_s: float = 0.02
    """While the robot is held (device lost, paused) the actor re-checks this often."""


store("hil", "teleop_schema", TeleopConfig)
