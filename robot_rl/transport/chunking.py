"""Stacking an actor's transitions into a chunk's wire buffers, wherever those buffers live.

A chunk carries each observation frame once (protocol 4): within an episode a transition's ``next_obs`` is the
next transition's ``obs``, and sending both doubled the bytes stacked, spilled, sent and received (four
128x128x3 images per transition where two are new). :func:`frame_rows` lists the distinct frames in row order
and ``obs_row`` (int32, (n,)) says where each transition's ``obs`` is; its ``next_obs`` is always the row after.

The layout is known from the transitions before anything is copied, so the buffers can be views into the
chunk's spill file mapped in memory (:meth:`robot_rl.transport.spill.SpillDir.open_mapped`): the one copy the
stacking makes is then also the spill write. The result is byte for byte what
``encode_chunk(Batch.from_transitions(items), ...)`` produces; the learner validates it the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from robot_rl.types import SCALAR_FIELDS, VECTOR_FIELDS, Transition

Field = tuple[str, tuple[int, ...], np.dtype]  # (wire name, full shape (rows, ...), dtype)
Frame = Mapping[str, Any]  # one observation: key -> array


def _same_array(a: Any, b: Any) -> bool:
    if a is b:
        return True
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    # different frames almost always differ in their first bytes: no full comparison for them
    return bool(np.array_equal(flat_a[:64], flat_b[:64]) and np.array_equal(flat_a, flat_b))


def same_frame(a: Frame, b: Frame) -> bool:
    """``a`` and ``b`` hold the same observation (the same objects, as the actor loop passes them, or equal
    bytes, as a batched env's per-step copies are)."""
    return a is b or (a.keys() == b.keys() and all(_same_array(a[k], b[k]) for k in a))


def frame_rows(obs: Sequence[Frame], next_obs: Sequence[Frame]) -> tuple[list[Frame], np.ndarray]:
    """The distinct frames of a chunk in row order, and ``obs_row`` (int32, (n,)): transition i's obs is row
    ``obs_row[i]``, its next_obs row ``obs_row[i] + 1``. A frame is shared when ``next_obs[i]`` is
    ``obs[i + 1]``; otherwise (an episode boundary, interleaved envs) both are sent."""
    rows: list[Frame] = []
    obs_row = np.empty(len(obs), np.int32)
    for i, frame in enumerate(obs):
        if not (i and same_frame(next_obs[i - 1], frame)):
            rows.append(frame)
        obs_row[i] = len(rows) - 1
        rows.append(next_obs[i])
    return rows, obs_row


def chunk_fields(items: Sequence[Transition], n_rows: int) -> list[Field]:
    """The chunk's buffers in wire order (:func:`robot_rl.transport.wire.chunk_layout`) for ``n_rows`` distinct
    frames, shaped and typed as :meth:`Batch.from_transitions` stacks them: frames take the first transition's
    shape and dtype, actions are float32."""
    first, n = items[0], len(items)
    fields = [(f"frames/{k}", (n_rows, *np.shape(first.obs[k])), np.asarray(first.obs[k]).dtype)
              for k in sorted(first.obs)]
    fields += [(name, (n, *np.shape(getattr(first, name))), np.dtype(np.float32)) for name in VECTOR_FIELDS]
    fields += [(name, (n,), np.dtype(dtype)) for name, dtype in SCALAR_FIELDS.items()]
    fields.append(("obs_row", (n,), np.dtype(np.int32)))
    return fields


def stack_into(items: Sequence[Transition], rows: Sequence[Frame], obs_row: np.ndarray,
               arrays: dict[str, np.ndarray]) -> None:
    """Copy ``items`` (their frames as :func:`frame_rows` ordered them) into ``arrays`` (one per
    :func:`chunk_fields` entry). Raises ValueError when a frame does not match the first one's shapes (the
    chunk is then not made)."""
    for key in items[0].obs:
        np.stack([frame[key] for frame in rows], out=arrays[f"frames/{key}"])
    for name in VECTOR_FIELDS:
        arrays[name][...] = np.stack([getattr(t, name) for t in items])  # float64 actions are cast, as before
    for name in SCALAR_FIELDS:
        arrays[name][...] = [getattr(t, name) for t in items]
    arrays["obs_row"][...] = obs_row


def empty_arrays(fields: Sequence[Field],
                 alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray]) -> dict[str, np.ndarray]:
    """In-memory buffers for a chunk: frames from ``alloc`` (the actor's pool), the small rest fresh."""
    return {name: alloc(shape, dtype) if name.startswith("frames/") else np.empty(shape, dtype)
            for name, shape, dtype in fields}


def views_as_arrays(fields: Sequence[Field], views: Sequence[memoryview]) -> dict[str, np.ndarray]:
    """Writable arrays over ``views`` (one per field, e.g. into a mapped spill file)."""
    return {name: np.frombuffer(view, dtype=dtype).reshape(shape)
            for (name, shape, dtype), view in zip(fields, views)}
