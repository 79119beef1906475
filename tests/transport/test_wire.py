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
