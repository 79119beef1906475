"""How a LeRobotDataset's features become our observation, action and reward (``robot-rl data import-lerobot``).

Given on the command line as ``key=value`` (``camera.front=observation.images.top crop.front=80,0,480,480``)
or in a yaml file (``mapping=FILE``) with the same keys (``cameras:`` and ``crop:`` as mappings)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from robot_rl.datasets.common import DatasetError

MISSING_REWARD = ("error", "zero", "success_at_end")
SPEC_SOURCES = ("env", "dataset")


@dataclass(frozen=True)
class LeRobotMapping:
    """Feature mapping of one import. Defaults fit datasets recorded by LeRobot and those we export."""

    state: tuple[str, ...] = ("observation.state",)
    """Dataset features concatenated, in this order, into our ``state`` vector (float32)."""
    cameras: Mapping[str, str] = field(default_factory=dict)
    """Our camera name -> dataset image/video feature (``images/<name>`` <- ``observation.images.top``). Empty: every
    ``observation.images.<name>`` feature becomes ``images/<name>``."""
    crop: Mapping[str, tuple[int, int, int, int]] = field(default_factory=dict)
    """Our camera name -> region of interest ``(x, y, width, height)`` in the dataset's pixels, cut before resizing
    (``robot_rl.images.prepare_frame``)."""
    image_size: tuple[int, int] | None = None
    """Output ``(height, width)`` of every camera with ``spec=dataset``; None keeps the (cropped) size. With
    ``spec=env`` the env's image size is used."""
    action: str = "action"
    """Dataset feature holding the action sent to the robot."""
    reward: str = "next.reward"
    """Dataset feature holding the reward of each step (LeRobot: ``next.reward``)."""
    done: str = "next.done"
    """Dataset feature marking the episode's last step (LeRobot: ``next.done``); absent: the last row."""
    missing_reward: str = "error"
    """When the dataset has no ``reward`` feature: ``error``, ``zero`` (rewards 0, episodes truncated) or
    ``success_at_end`` (sparse task reward: 1 on the last step, which terminates; for successful demos)."""
    intervened: str = "intervened"
    """Optional dataset feature (bool) marking steps where a human's command replaced the policy's."""
    policy_action: str = "policy_action"
    """Optional dataset feature with the policy's proposed action (equals ``action`` when absent)."""
    success: str = "success"
    """Optional dataset feature (bool) with the episode's success label (``next.success`` is read too, as in
    LeRobot's sim datasets): a successful episode's last step terminates, any other's is truncated. Without one,
    a positive reward on the last step means success."""
    task: str = ""
    """Task text for episodes whose dataset has none."""
    spec: str = "env"
    """Target spec: ``env`` (the configured env's ObsSpec/ActionSpec, so the episodes load as its demos) or
    ``dataset`` (the spec stored by our export in ``meta/robot_rl.json``, else one derived from the features,
    action bounds from the data's min/max)."""
    clip_actions: bool = False
    """Clip actions outside the target ActionSpec's bounds instead of refusing the episode."""
    tolerance_s: float = 1e-4
    """Largest distance (s) between a row's timestamp and the video frame used for it (LeRobot's default)."""
    actor_id: str = "lerobot"
    """``actor_id`` of the imported episodes (episode ids are the dataset's episode indices)."""

    def __post_init__(self) -> None:
        if self.missing_reward not in MISSING_REWARD:
            raise DatasetError(f"missing_reward must be one of {MISSING_REWARD}, got {self.missing_reward!r}")
        if self.spec not in SPEC_SOURCES:
            raise DatasetError(f"spec must be one of {SPEC_SOURCES}, got {self.spec!r}")

    @staticmethod
    def from_items(items: Mapping[str, str]) -> "LeRobotMapping":
        """Build from ``key=value`` strings (and ``mapping=FILE`` yaml underneath them)."""
        raw: dict[str, Any] = {}
        if "mapping" in items:
            import yaml

            doc = yaml.safe_load(Path(items["mapping"]).read_text()) or {}
            if not isinstance(doc, dict):
                raise DatasetError(f"{items['mapping']}: expected a mapping of keys to values")
            raw.update(doc)
        cameras, crop = dict(raw.pop("cameras", {}) or {}), dict(raw.pop("crop", {}) or {})
        for key, value in items.items():
            if key == "mapping":
                continue
            if key.startswith("camera."):
                cameras[key[len("camera."):]] = value
            elif key.startswith("crop."):
                crop[key[len("crop."):]] = value
            else:
                raw[key] = value
        names = {f.name: f for f in fields(LeRobotMapping)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise DatasetError(f"unknown mapping keys {unknown}; known: {sorted(names)} + camera.<name>, crop.<name>")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "state":
                kwargs[key] = tuple(_split(value))
            elif key == "image_size":
                kwargs[key] = None if value in (None, "", "none") else _ints(value, 2, key)
            elif key == "clip_actions":
                kwargs[key] = str(value).lower() in ("1", "true", "yes")
            elif key == "tolerance_s":
                kwargs[key] = float(value)
            else:
                kwargs[key] = str(value)
        kwargs["cameras"] = {str(k): str(v) for k, v in cameras.items()}
        kwargs["crop"] = {str(k): _ints(v, 4, f"crop.{k}") for k, v in crop.items()}
        return LeRobotMapping(**kwargs)


def _split(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _ints(value: Any, n: int, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in _split(value))
    except ValueError as e:
        raise DatasetError(f"{what}: expected {n} integers, got {value!r}") from e
    if len(out) != n:
        raise DatasetError(f"{what}: expected {n} integers, got {value!r}")
    return out
