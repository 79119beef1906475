"""Flattening a Gymnasium observation space (Box, Dict, nested Dict) onto our ``state`` / ``images/<camera>`` keys.

The rule (also in the README, "Your own env"):

1. The space is walked depth first, the keys of every ``Dict`` in sorted order. A leaf's *path* is its keys
   joined with ``/`` (``pixels/front``, ``robot/qpos``); a plain (non-Dict) observation is the one leaf ``""``.
2. ``key_map`` maps a path to a new camera name, or to ``""`` to drop it; a dropped ``Dict`` path drops its
   whole subtree. Paths that match nothing are an error (a typo would otherwise be ignored silently).
3. An image leaf is a uint8 Box laid out (H, W, C) or (C, H, W) with C in 1, 3, 4: it becomes
   ``images/<camera>`` as (H, W, 3) uint8 (grey repeated, alpha dropped, channels-first transposed). Its camera
   name is ``key_map[path]``, else its own key (``pixels/front`` -> ``images/front``), else ``image_key`` for a
   plain image observation. Two leaves landing on one camera name are an error naming both paths.
4. Every other leaf goes into ``state`` (float32): Box flattened in C order, Discrete(n) one-hot (n,),
   MultiBinary and MultiDiscrete as their values. The pieces are concatenated in walk order; ``state_layout``
   says which slice is which path.
5. Any other space (Tuple, Text, Graph, Sequence) is an error naming its path: drop it with ``key_map``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from robot_rl.specs import IMAGE_PREFIX, ArraySpec, ObsSpec

_CHANNELS = (1, 3, 4)


def image_layout(space: Any) -> str:
    """``"hwc"`` or ``"chw"`` for a uint8 image Box, ``""`` for anything else."""
    if space.__class__.__name__ != "Box" or space.dtype != np.uint8 or len(space.shape) != 3:
        return ""
    h_w_c, c_h_w = space.shape[2] in _CHANNELS, space.shape[0] in _CHANNELS
    if h_w_c:
        return "hwc"
    return "chw" if c_h_w else ""


def to_rgb(frame: np.ndarray, layout: str = "hwc") -> np.ndarray:
    """(H, W, C) or (C, H, W) uint8 with C in 1, 3, 4 -> contiguous (H, W, 3) uint8."""
    frame = np.asarray(frame)
    if layout == "chw":
        frame = frame.transpose(1, 2, 0)
    if frame.ndim != 3 or frame.shape[2] not in _CHANNELS:
        raise ValueError(f"not an image: shape {frame.shape} (expected (H, W, 1|3|4))")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)


@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]
    """Dict keys from the root to this leaf (empty for a plain observation)."""
    kind: str
    """``image`` (with ``layout``), ``box``, ``discrete``, ``multi``."""
    size: int = 0
    """Entries in ``state`` (0 for images)."""
    layout: str = ""
    """Image layout ``hwc`` / ``chw``."""
    camera: str = ""
    """Camera name of an image leaf."""
    start: int = 0
    """Offset into ``state`` (vector leaves)."""
    base: int = 0
    """Discrete only: the space's ``start`` (value ``base`` is one-hot index 0)."""


class ObservationFlattener:
    """Plans the flattening of one observation space once; :meth:`convert` applies it to each observation."""

    def __init__(self, space: Any, key_map: Mapping[str, str] | None = None, image_key: str = "camera") -> None:
        self.key_map = dict(key_map or {})
        self._used_keys: set[str] = set()
        self.leaves: list[_Leaf] = []
        self._walk(space, ())
        unused = sorted(set(self.key_map) - self._used_keys)
        if unused:
            raise ValueError(f"key_map names {unused}, which are not observation paths; paths are "
                             f"{sorted(self.paths(space))} (nested keys joined with '/')")
        cameras: dict[str, str] = {}
        offset = 0
        final: list[_Leaf] = []
        for leaf in self.leaves:
            path = "/".join(leaf.path)
            if leaf.kind == "image":
                camera = self.key_map.get(path) or (leaf.path[-1] if leaf.path else image_key)
                if camera in cameras:
                    raise ValueError(f"observation paths {cameras[camera]!r} and {path!r} both become "
                                     f"images/{camera}: rename one with env.key_map")
                cameras[camera] = path
                final.append(_Leaf(leaf.path, "image", layout=leaf.layout, camera=camera))
            else:
                final.append(_Leaf(leaf.path, leaf.kind, leaf.size, start=offset, base=leaf.base))
                offset += leaf.size
        self.leaves = final
        self.state_dim = offset
        fields: dict[str, ArraySpec] = {}
        if offset:
            fields["state"] = ArraySpec((offset,), "float32")
        for leaf in self.image_leaves:
            shape = self._space_at(space, leaf.path).shape
            h, w = (shape[1], shape[2]) if leaf.layout == "chw" else (shape[0], shape[1])
            fields[IMAGE_PREFIX + leaf.camera] = ArraySpec((h, w, 3), "uint8")
        if not fields:
            raise ValueError("the observation has nothing left to observe (everything dropped by key_map?)")
        self.obs_spec = ObsSpec(fields)

    @property
    def image_leaves(self) -> list[_Leaf]:
        return [leaf for leaf in self.leaves if leaf.kind == "image"]

    @property
    def state_layout(self) -> list[tuple[str, int, int]]:
        """``(path, start, stop)`` of every piece of ``state``, in order."""
        return [("/".join(leaf.path), leaf.start, leaf.start + leaf.size) for leaf in self.leaves
                if leaf.kind != "image"]

    @staticmethod
    def _space_at(space: Any, path: tuple[str, ...]) -> Any:
        for key in path:
            space = space.spaces[key]
        return space

    @classmethod
    def paths(cls, space: Any, prefix: tuple[str, ...] = ()) -> list[str]:
        """Every path of ``space`` (Dicts and leaves), for error messages."""
        out = ["/".join(prefix)] if prefix else []
        if space.__class__.__name__ == "Dict":
            for key in sorted(space.spaces):
                out += cls.paths(space.spaces[key], prefix + (str(key),))
        return out

    def _walk(self, space: Any, path: tuple[str, ...]) -> None:
        name = "/".join(path)
        kind = space.__class__.__name__
        if path and name in self.key_map:
            self._used_keys.add(name)
            if self.key_map[name] == "":
                return  # dropped, with everything under it
            if kind != "Box" or not image_layout(space):
                raise ValueError(f"key_map renames {name!r}, which is not an image (only cameras have names; "
                                 f"map it to '' to drop it)")
        if kind == "Dict":
            for key in sorted(space.spaces):
                self._walk(space.spaces[key], path + (str(key),))
            return
        where = f"observation path {name!r}" if path else "the observation"
        if kind == "Box":
            layout = image_layout(space)
            if layout:
                self.leaves.append(_Leaf(path, "image", layout=layout))
            else:
                self.leaves.append(_Leaf(path, "box", int(np.prod(space.shape))))
        elif kind == "Discrete":
            self.leaves.append(_Leaf(path, "discrete", int(space.n), base=int(space.start)))
        elif kind in ("MultiBinary", "MultiDiscrete"):
            self.leaves.append(_Leaf(path, "multi", int(np.prod(space.shape))))
        else:
            raise ValueError(f"{where}: unsupported space {space} (Box, Dict, Discrete, MultiBinary, "
                             f"MultiDiscrete); drop it with env.key_map={{{name or 'KEY'}: ''}}")

    def convert(self, raw: Any) -> dict[str, np.ndarray]:
        """One raw observation -> ``{"state": (S,) float32, "images/<camera>": (H, W, 3) uint8}``."""
        obs: dict[str, np.ndarray] = {}
        state = np.empty(self.state_dim, np.float32) if self.state_dim else None
        for leaf in self.leaves:
            value = raw
            for key in leaf.path:
                value = value[key]
            if leaf.kind == "image":
                obs[IMAGE_PREFIX + leaf.camera] = to_rgb(value, leaf.layout)
                continue
            if leaf.kind == "discrete":
                piece = np.zeros(leaf.size, np.float32)
                piece[int(value) - leaf.base] = 1.0
            else:
                piece = np.asarray(value, np.float64).reshape(-1)
            state[leaf.start:leaf.start + leaf.size] = piece
        if state is not None:
            obs["state"] = state
        return obs
