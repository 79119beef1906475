"""Every message on the actor <-> learner wire, defined once, versioned, validated. No pickle anywhere.

A message is multipart: frame 0 is a small msgpack header ``{"t": type, "v": PROTOCOL_VERSION, ...}``, the
following frames are raw array buffers (C-contiguous, native little-endian) described by the header and
sent/received zero-copy. Weights are the exception: SUB sockets with ZMQ_CONFLATE only keep single-frame
messages, so a weights message is one frame ``[tensor bytes, 64-byte aligned][msgpack header][u32 length]``.

Decoders never trust the peer: unknown type, wrong version or spec hash, a header that is not a msgpack map,
array descriptions that disagree with the handshake spec (or are not even lists), buffers of the wrong length,
oversized messages, NaN/inf and actions outside the :class:`ActionSpec` bounds all raise :class:`WireError`
with a reason the receiver logs (rate-limited) before carrying on. Nothing else may escape a decoder: any
other exception inside one is a bug in this module, and it is still turned into a :class:`WireError` (the
frame is rejected and acked as such, so an actor never resends it forever).
"""
from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, fields as dataclass_fields
from enum import Enum
from typing import Any, Callable, Mapping, Sequence, TypeVar

import msgpack
import numpy as np

from robot_rl.specs import ActionSpec, ObsSpec, SpecError
from robot_rl.transport.chunking import frame_rows
from robot_rl.types import SCALAR_FIELDS, VECTOR_FIELDS, Batch

PROTOCOL_VERSION = 4
"""1: hello/welcome/reject/heartbeat/chunk/ack/commit/unknown_peer/weights. 2: weights carry the learner incarnation
(a restarted learner's versions are taken at once). 3: + control (learner -> actor: the dashboard's pause/resume/
label) and status (actor -> learner: its fleet-table figures). 4: a chunk carries each observation frame once
(``frames/<key>`` + ``obs_row``, see :func:`chunk_layout`) instead of ``obs/<key>`` and ``next_obs/<key>``."""
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_TRANSITIONS = 4096
_ALIGN = 64  # tensor payloads start on a 64-byte boundary inside a weights frame
_WEIGHT_DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")  # numpy has no bfloat16


class WireError(ValueError):
    """A message that must be rejected; ``str(err)`` is the reason to log."""


_F = TypeVar("_F", bound=Callable[..., Any])


def rejects_malformed(what: str) -> Callable[[_F], _F]:
    """Decorator for decoders: any exception other than :class:`WireError` (a check this module forgot, e.g.
    ``len()`` of an int a peer sent where a list belongs) becomes a :class:`WireError` naming ``what``, so the
    receiver rejects the frame with a reason instead of dying or never answering it."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def decoder(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except WireError:
                raise
            except Exception as exc:  # noqa: BLE001 - by design: nothing but WireError leaves a decoder
                raise WireError(f"malformed {what} ({type(exc).__name__}: {str(exc)[:120]})") from None

        return decoder  # type: ignore[return-value]

    return wrap


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Msg(str, Enum):
    HELLO = "hello"          # actor -> learner: identity, protocol version, spec hash, config hash
    WELCOME = "welcome"      # learner -> actor: accepted; learner incarnation, committed seqs, weights version
    REJECT = "reject"        # learner -> actor: handshake refused (reason), the actor must not send data
    HEARTBEAT = "heartbeat"  # both ways: liveness; the learner's carries its incarnation
    CHUNK = "chunk"          # actor -> learner: N transitions + seq
    ACK = "ack"              # learner -> actor: chunk seq received (status ok/duplicate/rejected)
    COMMIT = "commit"        # learner -> actor: chunks up to seq are in a durable checkpoint; drop them
    UNKNOWN_PEER = "unknown_peer"  # learner -> actor: data before hello (e.g. learner restarted): say hello
    WEIGHTS = "weights"      # learner -> actors (PUB): versioned policy state_dict
    CONTROL = "control"      # learner -> actor: an operator's command from the dashboard (pause/resume/label)
    STATUS = "status"        # actor -> learner: the actor's figures for the dashboard's fleet table (~2 Hz)


# ----------------------------------------------------------------------------------------------- headers
def pack_header(kind: Msg, **fields: Any) -> bytes:
    return msgpack.packb({"t": kind.value, "v": PROTOCOL_VERSION, **fields}, use_bin_type=True)


@rejects_malformed("header")
def unpack_header(frame: bytes | memoryview) -> tuple[Msg, dict[str, Any]]:
    """Decode and sanity-check a header frame. Raises :class:`WireError` on anything unexpected."""
    if len(frame) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(frame)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise WireError(f"header is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise WireError(f"header is a {type(header).__name__}, not a map")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version!r} != {PROTOCOL_VERSION}")
    try:
        kind = Msg(header.get("t"))
    except ValueError:
        raise WireError(f"unknown message type {header.get('t')!r}") from None
    return kind, header


def require(header: Mapping[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in header:
        raise WireError(f"{header.get('t')}: missing field {key!r}")
    value = header[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is int:
        raise WireError(f"{header.get('t')}: field {key!r} has type {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------ hello
@dataclass(frozen=True)
class Hello:
    actor_id: str
    incarnation: str
    """Random id of this actor process run; sequence numbers restart at 0 for each incarnation."""
    spec_hash: str
    config_hash: str
    obs_spec: dict
    action_spec: dict

    def encode(self) -> list[bytes]:
        return [pack_header(Msg.HELLO, actor_id=self.actor_id, incarnation=self.incarnation,
                            spec_hash=self.spec_hash, config_hash=self.config_hash,
                            obs_spec=self.obs_spec, action_spec=self.action_spec)]

    @staticmethod
    @rejects_malformed("hello")
    def decode(header: Mapping[str, Any]) -> "Hello":
        return Hello(require(header, "actor_id", str), require(header, "incarnation", str),
                     require(header, "spec_hash", str), require(header, "config_hash", str),
                     require(header, "obs_spec", dict), require(header, "action_spec", dict))


def spec_differences(actor_obs: Mapping[str, Any], learner_obs: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two ``ObsSpec.to_dict()``s, images first (size, channels, dtype)."""
    out = []
    for key in sorted(set(actor_obs) | set(learner_obs), key=lambda k: (not k.startswith("images/"), k)):
        a, b = actor_obs.get(key), learner_obs.get(key)
        if a is None:
            out.append(f"{key}: the actor sends none, the learner expects {tuple(b['shape'])} {b['dtype']}")
        elif b is None:
            out.append(f"{key}: the actor sends {tuple(a['shape'])} {a['dtype']}, the learner expects no such key")
        elif list(a.get("shape", ())) != list(b["shape"]) or a.get("dtype") != b["dtype"]:
            shape_a, shape_b = tuple(a.get("shape", ())), tuple(b["shape"])
            what = ""
            if key.startswith("images/") and len(shape_a) == 3 and len(shape_b) == 3:
                if shape_a[2] != shape_b[2]:
                    what = f" ({shape_a[2]} channels instead of {shape_b[2]})"
                elif shape_a[:2] != shape_b[:2]:
                    what = (f" ({shape_a[0]}x{shape_a[1]} px instead of {shape_b[0]}x{shape_b[1]}: set the same "
                            f"env.image_size / env.cameras.<name>.size on both sides)")
            out.append(f"{key}: the actor sends {shape_a} {a.get('dtype')}, the learner expects {shape_b} "
                       f"{b['dtype']}{what}")
    return out


def handshake_mismatch(hello: Hello, spec_hash: str, config_hash: str, obs_spec: Any = None) -> str | None:
    """Reason to refuse an actor, or None. The message names both hashes so either side can be fixed; given the
    learner's ``obs_spec`` (an :class:`ObsSpec`) it also says which observation differs and how (image size,
    channel count, dtype)."""
    if hello.spec_hash != spec_hash:
        diffs = spec_differences(hello.obs_spec, obs_spec.to_dict()) if obs_spec is not None else []
        return (f"spec hash mismatch: actor {hello.actor_id} has {hello.spec_hash}, learner has {spec_hash}"
                + (f": {'; '.join(diffs)}" if diffs else "")
                + f" (actor obs={hello.obs_spec} action={hello.action_spec})")
    if hello.config_hash != config_hash:
        return (f"config hash mismatch: actor {hello.actor_id} has {hello.config_hash}, learner has "
                f"{config_hash} (env/policy configs differ; compare the resolved config files)")
    return None


# ------------------------------------------------------------------------------------- control and status
CONTROL_ACTIONS = ("pause", "resume", "label_success", "label_failure")
"""What an operator can ask one actor from the dashboard. ``label_*`` take the same path as the teleop device's
success/failure keys (:meth:`robot_rl.hardware.teleop.session.HilSession.push_events`)."""


@dataclass(frozen=True)
class Control:
    """learner -> actor: one operator command (the learner relays it from the dashboard)."""

    action: str
    """One of :data:`CONTROL_ACTIONS`."""
    issued_at: float
    """Unix time the operator asked (logged by the actor, so the command's latency is on record)."""

    def encode(self) -> list[bytes]:
        return [pack_header(Msg.CONTROL, action=self.action, issued_at=float(self.issued_at))]

    @staticmethod
    def decode(header: Mapping[str, Any]) -> "Control":
        action = require(header, "action", str)
        if action not in CONTROL_ACTIONS:
            raise WireError(f"control: unknown action {action!r} (expected one of {CONTROL_ACTIONS})")
        return Control(action, float(require(header, "issued_at", (int, float))))


@dataclass(frozen=True)
class ActorStatus:
    """actor -> learner: what the dashboard's fleet table shows of one actor (sent with its heartbeats)."""

    steps: int
    """Env steps so far (summed over the actor's envs)."""
    steps_per_s: float
    """Env steps per second over the last few seconds (0 while paused or held)."""
    episodes: int
    """Finished episodes."""
    success_rate: float
    """Success rate of the last 20 episodes (0 before the first)."""
    intervention_rate: float
    """Fraction of intervened steps over the last 20 episodes and the current one."""
    operator_s: float
    """Seconds of wall time during which the operator drove (the human cost of the run so far)."""
    pending_bytes: int
    """Chunks held in memory until the learner commits them."""
    spilled: int
    """Chunks spilled to disk so far (memory bound reached or shutdown)."""
    weights_version: int
    """Policy version the actor acts with (-1: initial weights)."""
    paused: bool
    """Paused from the dashboard: nothing is stepped."""
    hil: str
    """Operator kind (``hil.name``: ``none``, ``keyboard``, ``virtual``, ...): labels need one."""
    safety_event: str
    """Latest safety event: ``hold: <reason>``, ``estop``, ``stale: ...`` ("" when none yet)."""
    safety_event_at: float
    """Unix time of ``safety_event`` (0.0 when none)."""

    def encode(self) -> list[bytes]:
        return [pack_header(Msg.STATUS, **{f.name: getattr(self, f.name) for f in dataclass_fields(ActorStatus)})]

    @staticmethod
    def decode(header: Mapping[str, Any]) -> "ActorStatus":
        values = {}
        for f in dataclass_fields(ActorStatus):
            typ = {"int": int, "float": (int, float), "bool": bool, "str": str}[str(f.type)]
            value = require(header, f.name, typ)
            if f.type == "float" and not np.isfinite(value):
                raise WireError(f"status: field {f.name!r} is {value}")
            values[f.name] = float(value) if f.type == "float" else value
        return ActorStatus(**values)


# ------------------------------------------------------------------------------------------------ chunks
def chunk_layout(obs_spec: ObsSpec, action_spec: ActionSpec) -> list[tuple[str, tuple[int, ...], str]]:
    """Expected ``(name, per-row shape, dtype)`` of every buffer in a chunk of n transitions, in wire order:
    ``frames/<key>`` (m rows, n < m <= 2n: the distinct observation frames), then the per-step fields
    (n rows) and ``obs_row`` (int32, (n,)): transition i's obs is frame row ``obs_row[i]`` and its next_obs row
    ``obs_row[i] + 1``. Within an episode next_obs[i] is obs[i + 1], so m = n + 1 and the frame bytes are half
    of sending obs and next_obs apart."""
    layout = [(f"frames/{k}", s.shape, s.dtype) for k, s in obs_spec.fields.items()]
    layout += [(name, action_spec.shape, "float32") for name in VECTOR_FIELDS]
    layout += [(name, (), dtype) for name, dtype in SCALAR_FIELDS.items()]
    layout.append(("obs_row", (), "int32"))
    return layout


def chunk_header(fields: Sequence[tuple[str, tuple[int, ...], np.dtype]], actor_id: str, incarnation: str,
                 seq: int, n: int, spec_hash: str) -> bytes:
    """The header frame of a chunk whose buffers are ``fields``: ``(name, full shape (n, ...), dtype)`` in wire
    order. Known before the buffers are filled, so an actor can lay a chunk out in its spill file first."""
    return pack_header(Msg.CHUNK, actor_id=actor_id, incarnation=incarnation, seq=int(seq), n=int(n),
                       spec_hash=spec_hash,
                       fields=[[name, [int(d) for d in shape], _dtype_name(dtype)] for name, shape, dtype in fields])


@functools.lru_cache(maxsize=64)
def _dtype_name(dtype: Any) -> str:
    """``np.dtype(dtype).name`` (per field of every chunk: numpy's property costs ~10 us a call)."""
    return np.dtype(dtype).name


def encode_chunk(batch: Batch, actor_id: str, incarnation: str, seq: int, spec_hash: str) -> list[Any]:
    """Header + one buffer per field (tests and tools; an actor stacks its transitions straight into these
    buffers, :mod:`robot_rl.transport.chunking`). Frames are shared where ``next_obs[i]`` equals ``obs[i + 1]``."""
    keys = sorted(batch.obs)
    n = len(batch)
    rows, obs_row = frame_rows([{k: batch.obs[k][i] for k in keys} for i in range(n)],
                               [{k: batch.next_obs[k][i] for k in keys} for i in range(n)])
    arrays = {f"frames/{k}": np.stack([row[k] for row in rows]) for k in keys}
    arrays.update({name: np.ascontiguousarray(getattr(batch, name)) for name in VECTOR_FIELDS + tuple(SCALAR_FIELDS)})
    arrays["obs_row"] = obs_row
    header = chunk_header([(name, a.shape, a.dtype) for name, a in arrays.items()], actor_id, incarnation, seq, n,
                          spec_hash)
    return [header, *arrays.values()]


def _obs_from_frames(frames: np.ndarray, obs_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(obs, next_obs) of a chunk from its frame rows: views when the rows are regular (m = n + 1 within an
    episode: ``frames[:-1]``/``frames[1:]``; m = 2n when nothing is shared: every other row), else a gather."""
    n, m = len(obs_row), len(frames)
    if m == n + 1:
        return frames[:-1], frames[1:]
    if m == 2 * n:
        return frames[0::2], frames[1::2]
    return frames[obs_row], frames[obs_row + 1]


@dataclass
class Chunk:
    actor_id: str
    incarnation: str
    seq: int
    batch: Batch


@rejects_malformed("chunk")
def decode_chunk(header: Mapping[str, Any], buffers: Sequence[Any], obs_spec: ObsSpec,
                 action_spec: ActionSpec, spec_hash: str) -> Chunk:
    """Validate a chunk against the handshake spec and return it with zero-copy array views."""
    actor_id = require(header, "actor_id", str)
    incarnation = require(header, "incarnation", str)
    seq = require(header, "seq", int)
    n = require(header, "n", int)
    if header.get("spec_hash") != spec_hash:
        raise WireError(f"chunk spec hash {header.get('spec_hash')!r} != {spec_hash}")
    if not 0 < n <= MAX_CHUNK_TRANSITIONS:
        raise WireError(f"chunk of {n} transitions outside 1..{MAX_CHUNK_TRANSITIONS}")
    fields = require(header, "fields", list)
    expected = chunk_layout(obs_spec, action_spec)
    if len(fields) != len(expected) or len(buffers) != len(expected):
        raise WireError(f"chunk has {len(fields)} field descriptions and {len(buffers)} buffers, "
                        f"spec expects {len(expected)}")
    for desc in fields:
        if not (isinstance(desc, list) and len(desc) == 3 and isinstance(desc[0], str)
                and isinstance(desc[1], list) and all(_is_int(d) for d in desc[1]) and isinstance(desc[2], str)):
            raise WireError(f"malformed field description {str(desc)[:200]} (want [name, [dims...], dtype])")
    m = fields[0][1][0] if fields[0][1] else -1  # frame rows, checked against every frames/ field below
    if not n < m <= 2 * n:
        raise WireError(f"chunk of {n} transitions has {m} frames (expected {n + 1}..{2 * n})")
    arrays: dict[str, np.ndarray] = {}
    for (name, shape, dtype), desc, buf in zip(expected, fields, buffers):
        if desc[0] != name:
            raise WireError(f"field order: got {desc[0]!r}, expected {name!r}")
        want_shape = [m if name.startswith("frames/") else n, *shape]
        if desc[1] != want_shape or desc[2] != dtype:
            raise WireError(f"{name}: described as {desc[2]} {desc[1]}, spec says {dtype} {want_shape}")
        view = memoryview(buf)
        nbytes = math.prod(want_shape) * np.dtype(dtype).itemsize  # Python ints: exact, and 10x cheaper
        if view.nbytes != nbytes:
            raise WireError(f"{name}: buffer has {view.nbytes} bytes, expected {nbytes}")
        arrays[name] = np.frombuffer(view, dtype=dtype).reshape(want_shape)
    obs_row = arrays.pop("obs_row")
    # rows in order, each one or two past the previous, the last next_obs the last frame: every index in range
    steps = np.diff(obs_row)
    if obs_row[0] != 0 or obs_row[-1] != m - 2 or not ((steps == 1) | (steps == 2)).all():
        raise WireError(f"obs_row {obs_row[:8].tolist()}... does not index {m} frames in order")
    for key in obs_spec.fields:
        arrays[f"obs/{key}"], arrays[f"next_obs/{key}"] = _obs_from_frames(arrays.pop(f"frames/{key}"), obs_row)
    batch = Batch.from_arrays(arrays, actor_id=(actor_id,) * n)
    try:
        batch.check(obs_spec, action_spec)
    except SpecError as exc:
        raise WireError(f"chunk content: {exc}") from None
    return Chunk(actor_id, incarnation, seq, batch)


# ----------------------------------------------------------------------------------------------- weights
def _weights_layout(weights: Mapping[str, np.ndarray]) -> tuple[list[list[Any]], int]:
    """``[[name, dtype, shape, offset, nbytes], ...]`` with 64-byte aligned offsets, and the payload size."""
    entries, offset = [], 0
    for name, arr in weights.items():
        entries.append([name, arr.dtype.name, list(arr.shape), offset, arr.nbytes])
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN
    return entries, offset


class WeightsEncoder:
    """Builds weights frames ``[tensor 0][pad]...[tensor n][msgpack header][u32 header length]``.

    The payload comes first so tensor offsets do not depend on the header, which lets two frame buffers be
    reused across publishes (double-buffered: a buffer is rewritten only once libzmq has sent it; a fresh
    40 MB allocation per publish costs more in page faults than the copy itself).
    """

    def __init__(self, spec_hash: str, config_hash: str, incarnation: str) -> None:
        self.spec_hash, self.config_hash = spec_hash, config_hash
        self.incarnation = incarnation
        """The publishing learner's run id: versions are ordered only within one incarnation."""
        self._buffers: list[tuple[bytearray, Any]] = []  # (buffer, zmq tracker of its last send)
        self._layout_key: Any = None

    def encode(self, weights: Mapping[str, np.ndarray], version: int,
               progress: Mapping[str, int] | None = None) -> memoryview:
        arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
        entries, payload = _weights_layout(arrays)
        header = pack_header(Msg.WEIGHTS, version=int(version), incarnation=self.incarnation,
                             spec_hash=self.spec_hash,
                             config_hash=self.config_hash, tensors=entries, payload=payload,
                             progress={k: int(v) for k, v in (progress or {}).items()})
        if len(header) > MAX_HEADER_BYTES:
            raise WireError(f"weights header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}")
        key = tuple((e[0], e[1], tuple(e[2])) for e in entries)
        if key != self._layout_key:
            self._buffers, self._layout_key = [], key
        frame = next((b for b, tracker in self._buffers if tracker is None or tracker.done), None)
        if frame is None:
            frame = bytearray(payload + MAX_HEADER_BYTES + 4)
            self._buffers.append((frame, None))
        view = memoryview(frame)
        for (_, _, _, off, nbytes), arr in zip(entries, arrays.values()):
            view[off:off + nbytes] = arr.reshape(-1).view(np.uint8).data
        end = payload + len(header)
        view[payload:end] = header
        struct.pack_into("<I", frame, end, len(header))
        return view[:end + 4]

    def sent(self, frame: memoryview, tracker: Any) -> None:
        """Record the zmq tracker of ``frame``'s send, so its buffer is reused only after libzmq is done."""
        self._buffers = [(b, tracker if frame.obj is b else t) for b, t in self._buffers]


def encode_weights(weights: Mapping[str, np.ndarray], version: int, spec_hash: str, config_hash: str,
                   progress: Mapping[str, int] | None = None, incarnation: str = "standalone") -> bytes:
    """A standalone weights frame (tests, tools); the learner reuses buffers through WeightsEncoder."""
    return bytes(WeightsEncoder(spec_hash, config_hash, incarnation).encode(weights, version, progress))


@dataclass
class Weights:
    version: int
    """Counter of the publishing learner; compare versions only between messages of the same ``incarnation``."""
    arrays: dict[str, np.ndarray]
    """name -> read-only view into the received frame (copy before the frame is released if kept)."""
    progress: dict[str, int]
    """Learner progress when published: ``updates``, ``env_steps`` ingested, ``allowed_env_steps`` (the
    update-to-data budget sim actors pace themselves by)."""
    incarnation: str
    """Random run id of the learner process that published them. A restarted learner resumes its counter from
    its last checkpoint (or from 0), below versions its predecessor published after that checkpoint: an actor
    takes the first weights of a new incarnation at once, whatever their version."""

    def supersedes(self, other: "Weights | None") -> bool:
        """True when these weights should replace ``other``: a newer version, or another learner's."""
        return other is None or self.incarnation != other.incarnation or self.version > other.version


@rejects_malformed("weights")
def decode_weights(frame: Any, spec_hash: str, config_hash: str, max_bytes: int) -> Weights:
    view = memoryview(frame).cast("B")
    if view.nbytes > max_bytes:
        raise WireError(f"weights message of {view.nbytes} bytes exceeds cap {max_bytes}")
    if view.nbytes < 4:
        raise WireError("weights message truncated")
    (hlen,) = struct.unpack_from("<I", view, view.nbytes - 4)
    if hlen + 4 > view.nbytes:
        raise WireError("weights header truncated")
    kind, header = unpack_header(view[view.nbytes - 4 - hlen:view.nbytes - 4])
    if kind is not Msg.WEIGHTS:
        raise WireError(f"expected weights, got {kind.value}")
    if header.get("spec_hash") != spec_hash or header.get("config_hash") != config_hash:
        raise WireError(f"weights for spec {header.get('spec_hash')}/config {header.get('config_hash')}, "
                        f"this actor runs {spec_hash}/{config_hash}")
    version = require(header, "version", int)
    incarnation = require(header, "incarnation", str)
    payload = view[:view.nbytes - 4 - hlen]
    if payload.nbytes != require(header, "payload", int):
        raise WireError(f"weights payload has {payload.nbytes} bytes, header says {header.get('payload')}")
    arrays = {}
    for entry in require(header, "tensors", list):
        if not (isinstance(entry, list) and len(entry) == 5):
            raise WireError(f"malformed tensor entry {entry!r}")
        name, dtype, shape, off, nbytes = entry
        if dtype not in _WEIGHT_DTYPES:
            raise WireError(f"{name}: dtype {dtype!r} not allowed")
        np_dtype = np.dtype(dtype)
        if (not isinstance(off, int) or not isinstance(nbytes, int) or off < 0
                or off + nbytes > payload.nbytes or not isinstance(shape, list) or not isinstance(name, str)
                or not all(_is_int(d) and d >= 0 for d in shape)
                or int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize != nbytes):
            raise WireError(f"{name}: inconsistent offset/size/shape")
        arrays[name] = np.frombuffer(payload[off:off + nbytes], dtype=np_dtype).reshape(shape)
    progress = header.get("progress", {})
    if not isinstance(progress, dict) or not all(isinstance(v, int) for v in progress.values()):
        raise WireError("weights progress must be a map of integers")
    return Weights(version, arrays, progress, incarnation)
