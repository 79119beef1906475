"""Chunks an actor of an older protocol left in its spill directory, converted to the current protocol.

An actor killed (or stopped) with uncommitted chunks and then upgraded finds them in its spill directory. Sent
as they are, the learner refuses them (protocol version), and the transitions they hold would never reach
replay: so the new actor converts each such file in place before it resends it, under the same incarnation
and seq (the learner's ledger still deduplicates them).

Protocol 3 (the last one with another chunk layout): header ``{"t": "chunk", "v": 3, actor_id, incarnation,
seq, n, spec_hash, fields}`` and one buffer per field of :meth:`Batch.arrays`: ``obs/<key>`` and
``next_obs/<key>`` (n rows each, sorted keys), then ``action``, ``policy_action`` and the scalar fields.
Protocol 4 sends each observation frame once (:func:`robot_rl.transport.wire.encode_chunk`).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from robot_rl.transport.spill import read_first_frame, read_frames, write_frames
from robot_rl.transport.wire import MAX_HEADER_BYTES, PROTOCOL_VERSION, WireError, encode_chunk
from robot_rl.types import Batch

log = logging.getLogger("robot_rl.actor.transport")

UPGRADABLE_VERSIONS = (3,)


def chunk_version(header_frame: bytes | None) -> int | None:
    """The protocol version in a chunk's header frame, None when it is not a chunk header at all."""
    if header_frame is None or len(header_frame) > MAX_HEADER_BYTES:
        return None
    try:
        header = msgpack.unpackb(header_frame, raw=False)
    except Exception:  # garbage: not ours to judge here (the learner refuses it with a reason)
        return None
    if not isinstance(header, dict) or header.get("t") != "chunk" or not isinstance(header.get("v"), int):
        return None
    return header["v"]


def upgrade_v3_chunk(frames: list[Any]) -> list[Any]:
    """A protocol-3 chunk's frames as a protocol-4 chunk with the same transitions, actor, incarnation and seq.
    Raises :class:`WireError` when the frames do not hold what their header describes."""
    header = msgpack.unpackb(frames[0], raw=False)
    try:
        actor_id, incarnation, seq, n = header["actor_id"], header["incarnation"], header["seq"], header["n"]
        spec_hash, fields = header["spec_hash"], header["fields"]
    except KeyError as exc:
        raise WireError(f"protocol-3 chunk header lacks {exc}") from None
    if len(fields) != len(frames) - 1:
        raise WireError(f"protocol-3 chunk describes {len(fields)} fields and holds {len(frames) - 1} buffers")
    arrays: dict[str, np.ndarray] = {}
    for (name, shape, dtype), buf in zip(fields, frames[1:]):
        view = memoryview(buf).cast("B")
        if view.nbytes != math.prod(shape) * np.dtype(dtype).itemsize or (shape and shape[0] != n):
            raise WireError(f"protocol-3 chunk field {name}: {view.nbytes} bytes for {dtype} {shape}, n={n}")
        arrays[name] = np.frombuffer(view, dtype=dtype).reshape(shape)
    try:
        batch = Batch.from_arrays(arrays, actor_id=(actor_id,) * n)
    except KeyError as exc:
        raise WireError(f"protocol-3 chunk lacks the field {exc}") from None
    if sorted(batch.obs) != sorted(batch.next_obs) or not batch.obs:
        raise WireError(f"protocol-3 chunk has obs keys {sorted(batch.obs)} and next_obs keys {sorted(batch.next_obs)}")
    return encode_chunk(batch, actor_id, incarnation, seq, spec_hash)


def upgrade_spill_file(path: Path) -> bool:
    """Rewrite ``path`` (a chunk file) in the current protocol if it is in an older one it can convert; True
    when it was rewritten. A file that cannot be converted is left untouched and logged (its transitions stay
    in the actor's episode store)."""
    # Only the header is read to decide: a restarted actor may find gigabytes of current-protocol chunks.
    version = chunk_version(read_first_frame(path, MAX_HEADER_BYTES))
    if version is None or version == PROTOCOL_VERSION:
        return False
    if version not in UPGRADABLE_VERSIONS:
        log.error("spill file %s holds a protocol-%s chunk, which this version (protocol %d) cannot convert: "
                  "the learner will refuse it; its episodes are still in the actor's episode store",
                  path, version, PROTOCOL_VERSION)
        return False
    try:
        upgraded = upgrade_v3_chunk(read_frames(path))
    except WireError as exc:
        log.error("spill file %s: cannot convert its protocol-3 chunk (%s); left as it is", path, exc)
        return False
    write_frames(path, upgraded)  # temporary name, then a rename: a kill here leaves the old file whole
    return True
