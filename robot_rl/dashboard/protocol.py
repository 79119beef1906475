"""The learner <-> dashboard link: every message defined once, versioned, validated (msgpack, no pickle).

The learner's :class:`~robot_rl.dashboard.feed.DashboardFeed` binds two ZeroMQ sockets and writes their
endpoints to ``<run_dir>/dashboard/feed.json``:

- ``status`` (PUB, learner -> dashboards): a :class:`FeedStatus` map every ``1 / status_hz`` s, and a ``frame``
  message (header + raw uint8 pixels) per actor camera at ``frame_hz``. PUB never blocks: with no dashboard, or a
  slow one, messages are dropped at the high-water mark.
- ``control`` (PULL, dashboards -> learner): :class:`FeedControl` commands the learner relays to an actor over
  the actor wire (:class:`robot_rl.transport.wire.Control`) or, for ``stop``, applies itself.

A message with another ``v`` is refused: a dashboard and a learner from different versions say so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from robot_rl.transport.wire import CONTROL_ACTIONS

FEED_VERSION = 2  # 2: FeedStatus.critic_alarms
RUN_CONTROL_ACTIONS = ("stop",)
"""Controls the learner applies itself (the rest go to one actor: ``robot_rl.transport.wire.CONTROL_ACTIONS``)."""
ALL_CONTROL_ACTIONS = (*CONTROL_ACTIONS, *RUN_CONTROL_ACTIONS)
MAX_FRAME_PIXELS = 4096 * 4096


class FeedError(ValueError):
    """A feed message that must be refused; ``str(err)`` says why."""


def _pack(kind: str, **fields: Any) -> bytes:
    return msgpack.packb({"t": kind, "v": FEED_VERSION, **fields}, use_bin_type=True)


def unpack(frame: bytes, expect: str) -> dict[str, Any]:
    """Decode one header and check its kind and version."""
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise FeedError(f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise FeedError(f"a {type(header).__name__}, not a map")
    if header.get("v") != FEED_VERSION:
        raise FeedError(f"feed version {header.get('v')!r} != {FEED_VERSION} (learner and dashboard differ)")
    if header.get("t") != expect:
        raise FeedError(f"expected a {expect} message, got {header.get('t')!r}")
    return header


@dataclass(frozen=True)
class FeedControl:
    """dashboard -> learner: one operator command."""

    action: str
    """``stop`` (the run, cleanly: the learner checkpoints and exits) or one of the actor wire's actions."""
    actor_id: str
    """Target actor; "" for ``stop``."""
    issued_at: float
    """Unix time of the operator's click."""

    def encode(self) -> bytes:
        return _pack("control", action=self.action, actor_id=self.actor_id, issued_at=float(self.issued_at))

    @staticmethod
    def decode(frame: bytes) -> "FeedControl":
        h = unpack(frame, "control")
        action, actor_id, issued_at = h.get("action"), h.get("actor_id"), h.get("issued_at")
        if action not in ALL_CONTROL_ACTIONS:
            raise FeedError(f"unknown action {action!r} (expected one of {ALL_CONTROL_ACTIONS})")
        if not isinstance(actor_id, str) or (action not in RUN_CONTROL_ACTIONS and not actor_id):
            raise FeedError(f"{action} needs an actor_id string")
        if not isinstance(issued_at, (int, float)) or isinstance(issued_at, bool):
            raise FeedError("issued_at must be a number")
        return FeedControl(action, actor_id, float(issued_at))


@dataclass(frozen=True)
class FeedStatus:
    """learner -> dashboard: the run at a glance."""

    time: float
    """Unix time of the snapshot."""
    updates: int
    env_steps: int
    """Online transitions ingested by the learner."""
    updates_per_s: float
    """Over the last snapshot period."""
    eval: list
    """``[[env_steps, success_rate], ...]``: the learner's deterministic evaluations so far."""
    fleet: list
    """``robot_rl.transport.base.LearnerTransport.fleet()`` records, one per actor."""
    weights_version: int
    """Latest published policy version (an actor's lag is this minus its own)."""
    stopping: bool
    """A stop was requested: the learner is checkpointing and exiting."""
    reward_alarms: list | None = None
    """Learned-reward alarms when the reward module raises any (``labeller.alarms()``); None when it has none."""
    critic_alarms: list | None = None
    """The learner's critic check alarms (``robot_rl.value_check``: Q far above the realised returns), newest
    last; None when the algorithm has no critic check."""

    def encode(self) -> bytes:
        return _pack("status", **{k: v for k, v in self.__dict__.items()})

    @staticmethod
    def decode(frame: bytes) -> "FeedStatus":
        h = unpack(frame, "status")
        try:
            return FeedStatus(**{k: v for k, v in h.items() if k not in ("t", "v")})
        except TypeError as exc:
            raise FeedError(f"status fields: {exc}") from None


def encode_frame(actor_id: str, camera: str, image: np.ndarray, steps: int) -> list[bytes]:
    """One camera frame: header + the raw (H, W, 3) uint8 pixels (the dashboard makes the JPEG, not the learner)."""
    image = np.ascontiguousarray(image, np.uint8)
    return [_pack("frame", actor_id=actor_id, camera=camera, shape=list(image.shape), steps=int(steps)),
            image.tobytes()]


def decode_frame(frames: list[bytes]) -> tuple[str, str, np.ndarray, int]:
    """``(actor_id, camera, (H, W, 3) uint8, learner env steps)``."""
    if len(frames) != 2:
        raise FeedError(f"frame message has {len(frames)} parts, expected 2")
    h = unpack(frames[0], "frame")
    shape, actor_id, camera = h.get("shape"), h.get("actor_id"), h.get("camera")
    if not (isinstance(shape, list) and len(shape) == 3 and shape[2] == 3 and all(isinstance(x, int) and x > 0
                                                                                  for x in shape)):
        raise FeedError(f"frame shape {shape!r} is not (H, W, 3)")
    if shape[0] * shape[1] > MAX_FRAME_PIXELS or len(frames[1]) != shape[0] * shape[1] * 3:
        raise FeedError(f"frame of {len(frames[1])} bytes does not match shape {shape}")
    if not isinstance(actor_id, str) or not isinstance(camera, str):
        raise FeedError("frame actor_id/camera must be strings")
    return actor_id, camera, np.frombuffer(frames[1], np.uint8).reshape(shape), int(h.get("steps", 0))
