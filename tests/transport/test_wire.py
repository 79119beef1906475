"""Round trip of every message type, and every kind of bad frame rejected with a clear reason."""
import msgpack
import numpy as np
import pytest

from robot_rl.transport import wire
from robot_rl.transport.wire import Hello, Msg, WireError
from robot_rl.types import Batch
from support import rollout, specs_and_hash


def _chunk(env, n=8):
    obs_spec, action_spec, sh = specs_and_hash(env)
    batch = Batch.from_transitions(rollout(env, n))
    frames = wire.encode_chunk(batch, "a0", "inc", 7, sh)
    return frames, batch, obs_spec, action_spec, sh


def _decode(frames, obs_spec, action_spec, sh):
    kind, header = wire.unpack_header(frames[0])
    assert kind is Msg.CHUNK
    return wire.decode_chunk(header, [memoryview(f) for f in frames[1:]], obs_spec, action_spec, sh)


def test_chunk_round_trip_is_exact_and_zero_copy(pixel_env):
    frames, batch, obs_spec, action_spec, sh = _chunk(pixel_env)
    chunk = _decode(frames, obs_spec, action_spec, sh)
    assert (chunk.actor_id, chunk.incarnation, chunk.seq) == ("a0", "inc", 7)
    for name, arr in batch.arrays().items():
        np.testing.assert_array_equal(chunk.batch.arrays()[name], arr)
    # zero-copy: the decoded image array is a view of the received buffer, not a copy
    assert not chunk.batch.obs["images/top"].flags.owndata


def test_control_messages_round_trip(pixel_env):
    obs_spec, action_spec, sh = specs_and_hash(pixel_env)
    hello = Hello("a0", "inc", sh, "cfg", obs_spec.to_dict(), action_spec.to_dict())
    kind, header = wire.unpack_header(hello.encode()[0])
    assert kind is Msg.HELLO and Hello.decode(header) == hello
    assert wire.handshake_mismatch(hello, sh, "cfg") is None
    assert "spec hash mismatch" in wire.handshake_mismatch(hello, "other", "cfg")
    assert "config hash mismatch" in wire.handshake_mismatch(hello, sh, "other")
    for kind, fields in [(Msg.WELCOME, {"incarnation": "L", "committed": {"inc": 3}, "weights_version": 2}),
                         (Msg.REJECT, {"reason": "x"}), (Msg.HEARTBEAT, {"incarnation": "L"}),
                         (Msg.ACK, {"incarnation": "inc", "seq": 4, "status": "ok"}),
                         (Msg.COMMIT, {"committed": {"inc": 9}}), (Msg.UNKNOWN_PEER, {"incarnation": "L"})]:
        got_kind, got = wire.unpack_header(wire.pack_header(kind, **fields))
        assert got_kind is kind and {k: got[k] for k in fields} == fields


def test_weights_round_trip():
    weights = {"layer.weight": np.random.randn(64, 33).astype(np.float32), "layer.bias": np.arange(64.0),
               "steps": np.array(5, np.int64)}
    frame = wire.encode_weights(weights, 12, "s", "c", {"updates": 3, "env_steps": 10})
    got = wire.decode_weights(frame, "s", "c", max_bytes=10**8)
    assert got.version == 12 and got.progress == {"updates": 3, "env_steps": 10}
    for k, v in weights.items():
        np.testing.assert_array_equal(got.arrays[k], v)
        assert got.arrays[k].dtype == v.dtype
    with pytest.raises(WireError, match="spec"):
        wire.decode_weights(frame, "other", "c", max_bytes=10**8)
    with pytest.raises(WireError, match="exceeds cap"):
        wire.decode_weights(frame, "s", "c", max_bytes=100)
    with pytest.raises(WireError):
        wire.decode_weights(frame[:-8], "s", "c", max_bytes=10**8)
    with pytest.raises(WireError, match="truncated"):
        wire.decode_weights(frame[:2], "s", "c", max_bytes=10**8)


def _mutated_header(frames, **changes):
    header = msgpack.unpackb(frames[0])
    header.update(changes)
    return [msgpack.packb(header), *frames[1:]]


@pytest.mark.parametrize("case", ["garbage", "not_a_map", "wrong_version", "unknown_type", "wrong_spec_hash",
                                  "truncated_buffer", "missing_buffer", "wrong_dtype", "wrong_shape",
                                  "nan_reward", "too_many_rows", "missing_field", "field_order"])
def test_bad_chunks_are_rejected_with_a_reason(pixel_env, case):
    frames, batch, obs_spec, action_spec, sh = _chunk(pixel_env)
    fields = msgpack.unpackb(frames[0])["fields"]
    if case == "garbage":
        frames = [b"\xc1\xff\x00garbage", *frames[1:]]
    elif case == "not_a_map":
        frames = [msgpack.packb([1, 2, 3]), *frames[1:]]
    elif case == "wrong_version":
        frames = _mutated_header(frames, v=999)
    elif case == "unknown_type":
        frames = _mutated_header(frames, t="launch_missiles")
    elif case == "wrong_spec_hash":
        frames = _mutated_header(frames, spec_hash="deadbeef")
    elif case == "truncated_buffer":
        frames = [*frames[:1], bytes(memoryview(frames[1]))[:-5], *frames[2:]]
    elif case == "missing_buffer":
        frames = frames[:-1]
    elif case == "wrong_dtype":
        fields[0][2] = "float64"
        frames = _mutated_header(frames, fields=fields)
    elif case == "wrong_shape":
        fields[0][1] = [8, 17, 16, 3]
        frames = _mutated_header(frames, fields=fields)
    elif case == "nan_reward":
        batch.reward[2] = np.nan
        frames = wire.encode_chunk(batch, "a0", "inc", 7, sh)
    elif case == "too_many_rows":
        frames = _mutated_header(frames, n=wire.MAX_CHUNK_TRANSITIONS + 1)
    elif case == "missing_field":
        header = msgpack.unpackb(frames[0])
        del header["seq"]
        frames = [msgpack.packb(header), *frames[1:]]
    elif case == "field_order":
        fields[0], fields[1] = fields[1], fields[0]
        frames = _mutated_header(frames, fields=fields)
    with pytest.raises(WireError) as err:
        kind, header = wire.unpack_header(frames[0])
        wire.decode_chunk(header, [memoryview(f) for f in frames[1:]], obs_spec, action_spec, sh)
    assert str(err.value)  # a reason the learner can log


def _random_value(rng, depth=0):
    """A random msgpack-able value: what a buggy or hostile peer could put anywhere in a header."""
    choices = ["int", "neg", "big", "float", "str", "bytes", "none", "bool", "list", "map"]
    kind = choices[rng.integers(len(choices) if depth < 2 else len(choices) - 2)]
    if kind == "int":
        return int(rng.integers(0, 10))
    if kind == "neg":
        return -int(rng.integers(1, 2**40))
    if kind == "big":
        return 2**63 - 1
    if kind == "float":
        return float(rng.choice([0.5, np.nan, np.inf, -1e300]))
    if kind == "str":
        return str(rng.choice(["", "obs/state", "float32", "chunk", "x" * 300]))
    if kind == "bytes":
        return bytes(rng.integers(0, 256, int(rng.integers(0, 8)), dtype=np.uint8))
    if kind == "none":
        return None
    if kind == "bool":
        return bool(rng.integers(2))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {str(rng.integers(3)): _random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 3)))}


def _mutate(value, rng):
    """Replace one randomly chosen node of a nested header (maps and lists) by a random value."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = list(value)[rng.integers(len(value))]
        return {**value, key: _mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = int(rng.integers(len(value)))
        return value[:i] + [_mutate(value[i], rng)] + value[i + 1:]
    return _random_value(rng)


def test_fuzzed_headers_only_ever_raise_wire_errors(pixel_env):
    """Thousands of malformed chunk and weights headers (one node replaced by a random msgpack value, at any
    depth, e.g. a field's shape that is an int or a map): the decoders reject each with a WireError and a
    reason, and nothing else ever comes out (a TypeError used to leave the chunk un-acked, resent forever)."""
    frames, batch, obs_spec, action_spec, sh = _chunk(pixel_env)
    chunk_header = msgpack.unpackb(frames[0])
    weights = {"layer.weight": np.ones((3, 2), np.float32), "step": np.array(1, np.int64)}
    wframe = wire.encode_weights(weights, 3, "s", "c")
    (hlen,) = np.frombuffer(wframe[-4:], "<u4")
    payload, wheader = wframe[:len(wframe) - 4 - int(hlen)], msgpack.unpackb(wframe[len(wframe) - 4 - int(hlen):-4])
    rng = np.random.default_rng(0)
    outcomes = {"chunk": 0, "weights": 0}
    for _ in range(1500):
        bad = msgpack.packb(_mutate(chunk_header, rng))
        try:
            kind, header = wire.unpack_header(bad)
            wire.decode_chunk(header, [memoryview(f) for f in frames[1:]], obs_spec, action_spec, sh)
        except WireError as exc:
            assert str(exc)
            outcomes["chunk"] += 1
        bad_header = msgpack.packb(_mutate(wheader, rng))
        bad_frame = payload + bad_header + np.uint32(len(bad_header)).tobytes()
        try:
            wire.decode_weights(bad_frame, "s", "c", max_bytes=10**8)
        except WireError as exc:
            assert str(exc)
            outcomes["weights"] += 1
    # Most mutations must be rejected (a few are harmless, e.g. a changed seq or progress counter).
    assert outcomes["chunk"] > 1000 and outcomes["weights"] > 600, outcomes


@pytest.mark.parametrize("shape", [17, None, {"a": 1}, "16", [8.0, 16, 16, 3], [True, 16, 16, 3]])
def test_a_field_shape_that_is_not_a_list_of_ints_is_a_wire_error(pixel_env, shape):
    frames, batch, obs_spec, action_spec, sh = _chunk(pixel_env)
    fields = msgpack.unpackb(frames[0])["fields"]
    fields[0][1] = shape
    frames = _mutated_header(frames, fields=fields)
    with pytest.raises(WireError, match="field description|described"):
        _decode(frames, obs_spec, action_spec, sh)


@pytest.mark.parametrize("field,value", [("action", 1e30), ("action", -1.5), ("policy_action", 1e30)])
def test_finite_actions_outside_the_bounds_are_rejected(pixel_env, field, value):
    frames, batch, obs_spec, action_spec, sh = _chunk(pixel_env)
    getattr(batch, field)[3, 1] = value  # finite, but outside [-1, 1]
    frames = wire.encode_chunk(batch, "a0", "inc", 7, sh)
    with pytest.raises(WireError, match=f"{field}: values outside bounds"):
        _decode(frames, obs_spec, action_spec, sh)


def test_weights_carry_the_learner_incarnation():
    weights = {"w": np.ones(2, np.float32)}
    old = wire.decode_weights(wire.encode_weights(weights, 80, "s", "c", incarnation="L1"), "s", "c", 10**6)
    new = wire.decode_weights(wire.encode_weights(weights, 51, "s", "c", incarnation="L2"), "s", "c", 10**6)
    later = wire.decode_weights(wire.encode_weights(weights, 52, "s", "c", incarnation="L2"), "s", "c", 10**6)
    assert (old.incarnation, new.incarnation) == ("L1", "L2")
    assert new.supersedes(old)  # a restarted learner's first weights win despite the lower version
    assert later.supersedes(new) and not new.supersedes(later) and not later.supersedes(later)


def _frame_transitions(pattern: str, seed: int = 0):
    """Transitions whose frames follow ``pattern``: 'c' = obs is the previous next_obs (same episode), 'b' = a
    new episode starts (a reset frame), 'i' = an equal copy of the previous next_obs (a batched env's per-step
    copy). Returns them with the spec."""
    from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec, spec_hash
    from robot_rl.types import Transition

    obs_spec = ObsSpec({"images/top": ArraySpec((4, 5, 3), "uint8"), "state": ArraySpec((3,), "float32")})
    action_spec = ActionSpec((2,), -1, 1)
    rng = np.random.default_rng(seed)
    frame = lambda: {"images/top": rng.integers(0, 255, (4, 5, 3), np.uint8),
                     "state": rng.standard_normal(3).astype(np.float32)}
    items, nxt = [], None
    for i, kind in enumerate(pattern):
        obs = nxt if kind == "c" and nxt is not None else (
            {k: v.copy() for k, v in nxt.items()} if kind == "i" and nxt is not None else frame())
        nxt = frame()
        items.append(Transition(obs, rng.uniform(-1, 1, 2).astype(np.float32), float(i), nxt, False, False, "a0", 0, i))
    return items, obs_spec, action_spec, spec_hash(obs_spec, action_spec)


@pytest.mark.parametrize("pattern,frames", [("bcccccc", 8), ("bccbccc", 9), ("bbbb", 8), ("bicic", 6)])
def test_a_chunk_carries_each_frame_once_and_decodes_to_the_same_batch(pattern, frames):
    items, obs_spec, action_spec, sh = _frame_transitions(pattern)
    batch = Batch.from_transitions(items)
    encoded = wire.encode_chunk(batch, "a0", "inc", 7, sh)
    layout = {name: shape for name, shape, _ in msgpack.unpackb(encoded[0])["fields"]}
    assert layout["frames/images/top"][0] == frames  # n + 1 within one episode, one more per boundary
    chunk = _decode(encoded, obs_spec, action_spec, sh)
    for name, arr in batch.arrays().items():
        np.testing.assert_array_equal(chunk.batch.arrays()[name], arr)
    obs, nxt = chunk.batch.obs["images/top"], chunk.batch.next_obs["images/top"]
    # regular rows (n + 1: next_obs is obs shifted by one row; 2n: every other row): views of the received
    # buffer, no copy; irregular ones are gathered
    assert (not obs.flags.owndata and not nxt.flags.owndata) == (frames in (len(items) + 1, 2 * len(items)))
    assert np.shares_memory(obs, nxt) == (frames == len(items) + 1)


@pytest.mark.parametrize("obs_row", [[0, 1, 3, 5], [1, 2, 3, 4], [0, 2, 1, 3], [0, 1, 2, 3], [0, 3, 4, 4], [-2, 0, 2, 4]])
def test_an_obs_row_that_does_not_index_the_frames_in_order_is_rejected(obs_row):
    items, obs_spec, action_spec, sh = _frame_transitions("bcbc")  # 6 frames, obs_row [0, 1, 3, 4]
    encoded = wire.encode_chunk(Batch.from_transitions(items), "a0", "inc", 7, sh)
    encoded[-1] = np.asarray(obs_row, np.int32)
    with pytest.raises(WireError, match="obs_row"):
        _decode(encoded, obs_spec, action_spec, sh)


@pytest.mark.parametrize("rows", [4, 9])
def test_a_frame_count_outside_n_plus_1_to_2n_is_rejected(rows):
    items, obs_spec, action_spec, sh = _frame_transitions("bccc")
    encoded = wire.encode_chunk(Batch.from_transitions(items), "a0", "inc", 7, sh)
    fields = msgpack.unpackb(encoded[0])["fields"]
    fields[0][1][0] = rows
    with pytest.raises(WireError, match="frames"):
        _decode(_mutated_header(encoded, fields=fields), obs_spec, action_spec, sh)
