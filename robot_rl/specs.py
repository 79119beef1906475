"""Observation and action specs: the contract between a task's twin, its real robot, the actor and the learner.

An observation is a flat dict: ``state`` (float32 vector) and ``images/<camera>`` (uint8 HxWx3).
The actor/learner handshake compares :func:`spec_hash` of the (ObsSpec, ActionSpec) pair, and every array
that crosses the wire or enters replay is checked against these specs (shape, dtype, finiteness).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

IMAGE_PREFIX = "images/"
_ALLOWED_DTYPES = ("float32", "float64", "uint8", "int32", "int64", "bool")


class SpecError(ValueError):
    """An array or message does not match the spec it claims to follow."""


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one named array (without the batch dimension)."""

    shape: tuple[int, ...]
    """Per-sample shape, e.g. ``(32,)`` for a state vector or ``(128, 128, 3)`` for an RGB image."""
    dtype: str
    """NumPy dtype name; images are ``uint8`` end to end, states ``float32``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.dtype not in _ALLOWED_DTYPES:
            raise SpecError(f"dtype {self.dtype!r} not in {_ALLOWED_DTYPES}")
        if any(d <= 0 for d in self.shape):
            raise SpecError(f"shape {self.shape} has a non-positive dimension")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def check(self, name: str, value: np.ndarray, *, batched: bool = False, finite: bool = True) -> None:
        """Raise :class:`SpecError` naming ``name`` when ``value`` differs from this spec or holds NaN/inf."""
        if not isinstance(value, np.ndarray):
            raise SpecError(f"{name}: expected numpy array, got {type(value).__name__}")
        if value.dtype != np.dtype(self.dtype):
            raise SpecError(f"{name}: dtype {value.dtype} != spec {self.dtype}")
        shape = value.shape[1:] if batched else value.shape
        if batched and value.ndim == 0:
            raise SpecError(f"{name}: expected a batch dimension")
        if shape != self.shape:
            raise SpecError(f"{name}: shape {shape} != spec {self.shape}")
        if finite and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise SpecError(f"{name}: contains NaN or inf")

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "ArraySpec":
        return ArraySpec(shape=tuple(d["shape"]), dtype=str(d["dtype"]))


@dataclass(frozen=True)
class ObsSpec:
    """Named observation arrays. Keys are ``state`` and/or ``images/<camera>``."""

    fields: Mapping[str, ArraySpec]
    """Observation key -> per-sample array spec, in a fixed (sorted) order."""

    def __post_init__(self) -> None:
        if not self.fields:
            raise SpecError("ObsSpec needs at least one field")
        for key, spec in self.fields.items():
            if key.startswith(IMAGE_PREFIX):
                if spec.dtype != "uint8" or len(spec.shape) != 3 or spec.shape[2] != 3:
                    raise SpecError(f"{key}: images must be uint8 HxWx3, got {spec.shape} {spec.dtype}")
        object.__setattr__(self, "fields", dict(sorted(self.fields.items())))

    def keys(self) -> list[str]:
        return list(self.fields)

    @property
    def image_keys(self) -> list[str]:
        return [k for k in self.fields if k.startswith(IMAGE_PREFIX)]

    @property
    def has_images(self) -> bool:
        return bool(self.image_keys)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.fields.values())

    def check(self, obs: Mapping[str, np.ndarray], *, batched: bool = False, what: str = "obs") -> None:
        """Fail loudly on a missing/extra key, a shape or dtype mismatch, or NaN/inf in float fields."""
        missing = set(self.fields) - set(obs)
        extra = set(obs) - set(self.fields)
        if missing or extra:
            raise SpecError(f"{what}: missing keys {sorted(missing)}, unexpected keys {sorted(extra)}")
        for key, spec in self.fields.items():
            spec.check(f"{what}[{key!r}]", obs[key], batched=batched)

    def select(self, keys: Sequence[str]) -> "ObsSpec":
        """The spec restricted to ``keys`` (all of them when empty), e.g. what a state policy reads of an env
        that also renders cameras for a learned reward. Fails loudly on a key the spec does not have."""
        if not keys:
            return self
        unknown = sorted(set(keys) - set(self.fields))
        if unknown:
            raise SpecError(f"observation keys {unknown} are not in the env's spec {self.keys()}")
        return ObsSpec({k: self.fields[k] for k in keys})

    def zeros(self, batch: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
        return {k: np.zeros(batch + s.shape, dtype=s.dtype) for k, s in self.fields.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: s.to_dict() for k, s in self.fields.items()}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "ObsSpec":
        return ObsSpec({k: ArraySpec.from_dict(v) for k, v in d.items()})


@dataclass(frozen=True)
class ActionSpec:
    """A bounded continuous action vector. Policies output values in [low, high]."""

    shape: tuple[int, ...]
    """Action shape, e.g. ``(4,)`` for an end-effector xyz delta + gripper."""
    low: tuple[float, ...]
    """Per-dimension lower bound (flattened)."""
    high: tuple[float, ...]
    """Per-dimension upper bound (flattened)."""
    names: tuple[str, ...] = field(default=())
    """Optional per-dimension names, e.g. ``("dx", "dy", "dz", "grip")``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        n = int(np.prod(self.shape))
        low = tuple(float(x) for x in np.broadcast_to(np.asarray(self.low, np.float64), (n,)))
        high = tuple(float(x) for x in np.broadcast_to(np.asarray(self.high, np.float64), (n,)))
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "names", tuple(self.names))
        if any(lo >= hi for lo, hi in zip(low, high)):
            raise SpecError(f"action bounds low={low} must be < high={high}")
        if self.names and len(self.names) != n:
            raise SpecError(f"{len(self.names)} action names for {n} dimensions")

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    @property
    def array(self) -> ArraySpec:
        return ArraySpec(self.shape, "float32")

    def low_array(self) -> np.ndarray:
        return np.asarray(self.low, np.float32).reshape(self.shape)

    def high_array(self) -> np.ndarray:
        return np.asarray(self.high, np.float32).reshape(self.shape)

    def check(self, action: np.ndarray, *, batched: bool = False, what: str = "action") -> None:
        """Raise on a wrong shape/dtype, NaN/inf, or a value outside [low, high] (tolerance 1e-5)."""
        self.array.check(what, action, batched=batched)
        if (action < self.low_array() - 1e-5).any() or (action > self.high_array() + 1e-5).any():
            raise SpecError(f"{what}: values outside bounds [{self.low}, {self.high}]")

    def clip(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self.low_array(), self.high_array()).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "low": list(self.low), "high": list(self.high), "names": list(self.names)}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "ActionSpec":
        return ActionSpec(tuple(d["shape"]), tuple(d["low"]), tuple(d["high"]), tuple(d.get("names", ())))


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of canonical JSON (sorted keys, no whitespace): equal on every machine and Python version."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def spec_hash(obs_spec: ObsSpec, action_spec: ActionSpec) -> str:
    """The hash actor and learner compare in their handshake."""
    return stable_hash({"obs": obs_spec.to_dict(), "action": action_spec.to_dict()})
