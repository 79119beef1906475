"""Stacking an actor's transitions into a chunk's wire buffers, wherever those buffers live.

The layout is known from the first transition before anything is copied, so the buffers can be views into the
chunk's spill file mapped in memory (:meth:`robot_rl.transport.spill.SpillDir.open_mapped`): the one copy the
stacking makes is then also the spill write. The result is byte for byte what
``encode_chunk(Batch.from_transitions(items), ...)`` produces; the learner validates it the same way.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from robot_rl.types import SCALAR_FIELDS, VECTOR_FIELDS, Transition

Field = tuple[str, tuple[int, ...], np.dtype]  # (wire name, full shape (n, ...), dtype)


def chunk_fields(items: Sequence[Transition]) -> list[Field]:
    """The chunk's buffers in wire order (:meth:`Batch.arrays`), shaped and typed as
    :meth:`Batch.from_transitions` stacks them: observations take the first transition's shape and dtype,
    actions are float32."""
    first, n = items[0], len(items)
    keys = sorted(first.obs)
    fields = [(f"obs/{k}", (n, *np.shape(first.obs[k])), np.asarray(first.obs[k]).dtype) for k in keys]
    fields += [(f"next_obs/{k}", (n, *np.shape(first.next_obs[k])), np.asarray(first.next_obs[k]).dtype)
               for k in keys]
    fields += [(name, (n, *np.shape(getattr(first, name))), np.dtype(np.float32)) for name in VECTOR_FIELDS]
    fields += [(name, (n,), np.dtype(dtype)) for name, dtype in SCALAR_FIELDS.items()]
    return fields


def stack_into(items: Sequence[Transition], arrays: dict[str, np.ndarray]) -> None:
    """Copy ``items`` row by row into ``arrays`` (one per :func:`chunk_fields` entry). Raises ValueError when
    a transition does not match the first one's shapes (the chunk is then not made)."""
    for key in items[0].obs:
        np.stack([t.obs[key] for t in items], out=arrays[f"obs/{key}"])
        np.stack([t.next_obs[key] for t in items], out=arrays[f"next_obs/{key}"])
    for name in VECTOR_FIELDS:
        arrays[name][...] = np.stack([getattr(t, name) for t in items])  # float64 actions are cast, as before
    for name in SCALAR_FIELDS:
        arrays[name][...] = [getattr(t, name) for t in items]


def empty_arrays(fields: Sequence[Field],
                 alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray]) -> dict[str, np.ndarray]:
    """In-memory buffers for a chunk: observations from ``alloc`` (the actor's pool), the small rest fresh."""
    return {name: alloc(shape, dtype) if name.startswith(("obs/", "next_obs/")) else np.empty(shape, dtype)
            for name, shape, dtype in fields}


def views_as_arrays(fields: Sequence[Field], views: Sequence[memoryview]) -> dict[str, np.ndarray]:
    """Writable arrays over ``views`` (one per field, e.g. into a mapped spill file)."""
    return {name: np.frombuffer(view, dtype=dtype).reshape(shape)
            for (name, shape, dtype), view in zip(fields, views)}
