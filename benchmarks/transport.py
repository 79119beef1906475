"""Transport benchmark: image-transition throughput (ours vs bare pyzmq), weights broadcast latency, replay memory.

    python benchmarks/transport.py [--transitions 20000] [--repeats 3] [--throughput-only]

Every figure runs actor(s) and learner in separate processes over loopback TCP, as deployed. Both durabilities
are measured in the same run, the default first: ``checkpoint`` (with ``spill_all_chunks``, the configuration
that keeps the exactly-once promise across a ``kill -9`` of an actor or the learner: every chunk is written to
the actor's spill directory and kept until the learner commits it, here every second, as if checkpointing),
then ``ack`` (a chunk is forgotten once acked). Baseline: the same bytes (one transition = obs + next_obs, two
128x128x3 uint8 images + a 32-float state each, plus the per-step fields) through bare pyzmq PUSH/PULL in
chunks of 32, from 1 and from 4 producer processes into one PULL socket, measured in the same run. Our wire
sends each observation frame once (next_obs[i] is obs[i+1]: 33 frames per 32-transition chunk, not 64), so a
second baseline sends exactly our wire's frame bytes through bare pyzmq (``ratio_vs_raw_zmq_same_wire_bytes``):
the first ratio says how fast we move transitions against the naive layout, the second how close our transport
gets to the socket on the bytes it actually moves. Prints a table and ends with one JSON line.

Every sender (ours and bare pyzmq alike) first streams for ``WARMUP_S`` untimed, then ``--transitions`` more:
the headline figures are steady state, transitions acked (ours) or received (bare pyzmq) after the warm-up
divided by the time from the warm-up's end to the last ack or receive. The first commit period is special for the default durability:
nothing is committed yet, so every chunk needs a new spill file (page cache allocated and zeroed, ~5 ms for a
3 MB chunk) where later chunks reuse committed ones. ``*_cold`` figures count from the very first transition.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import time

import numpy as np

IMG = (128, 128, 3)
STATE = 32
CHUNK = 32
WINDOW = int(os.environ.get("BENCH_WINDOW", 64))  # chunks an actor may be ahead of its acks
WARMUP_S = 2.5  # untimed streaming first: past two of the learner's 1 s commit periods (spill files recycled by then)


def _specs():
    from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec, spec_hash

    obs = ObsSpec({"state": ArraySpec((STATE,), "float32"), "images/front": ArraySpec(IMG, "uint8"),
                   "images/wrist": ArraySpec(IMG, "uint8")})
    act = ActionSpec((4,), -1, 1)
    return obs, act, spec_hash(obs, act)


def _transitions(actor_id: str, n_distinct: int = 64):
    """A pool of realistic transitions (random pixels do not compress; nothing on the wire compresses)."""
    from robot_rl.types import Transition

    rng = np.random.default_rng(0)
    frames = [{"state": rng.standard_normal(STATE).astype(np.float32),
               "images/front": rng.integers(0, 255, IMG, np.uint8),
               "images/wrist": rng.integers(0, 255, IMG, np.uint8)} for _ in range(n_distinct + 1)]
    return [Transition(frames[i], rng.uniform(-1, 1, 4).astype(np.float32), 0.0, frames[i + 1], False, False,
                       actor_id, 0, i) for i in range(n_distinct)]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cfg(ports, **kw):
    from robot_rl.config import TransportConfig

    return TransportConfig(transitions_port=ports[0], weights_port=ports[1], chunk_size=CHUNK, **kw)


# ------------------------------------------------------------------------------------------ our transport
def _learner_proc(ports, ready, stop_evt, ingest_replay):
    from robot_rl.replay import ReplayBuffer
    from robot_rl.transport.zmq_learner import ZmqLearnerServer

    obs, act, sh = _specs()
    replay = ReplayBuffer(obs, act, 4096) if ingest_replay else None
    count = [0]

    def sink(chunk):
        if replay is not None:
            replay.add_batch(chunk.batch)
        count[0] += len(chunk.batch)

    server = ZmqLearnerServer(_cfg(ports), obs, act, sh, "bench", sink)
    server.start()
    ready.set()
    last_commit = time.perf_counter()
    while not stop_evt.is_set():  # every actor has had its last chunk acked
        time.sleep(0.01)  # a coarse poll: this loop must not compete with the transport for the 2 cores
        if time.perf_counter() - last_commit > 1.0:  # as if checkpointing every second
            server.commit(server.ledger.marks())
            last_commit = time.perf_counter()
    server.close()


def _unacked(client) -> int:
    """Transitions handed to ``client`` and not acked yet (its IO thread may reorder the table meanwhile)."""
    for _ in range(100):
        try:
            return len(client._incoming) + sum(c.n_transitions for c in list(client.pending._chunks.values())
                                               if not c.acked)
        except RuntimeError:  # the table changed while it was read: read it again
            continue
    raise RuntimeError("could not read the pending table")


def _actor_proc(ports, actor_id, n, start_evt, result_q, durability):
    from robot_rl.transport.zmq_actor import ZmqActorClient

    obs, act, sh = _specs()
    pool = _transitions(actor_id)
    spill = tempfile.mkdtemp(prefix="bench-spill-")
    client = ZmqActorClient(_cfg(ports, durability=durability), actor_id, obs, act, sh, "bench", spill_dir=spill)
    while not client.connected:  # handshake first, then time the data path only
        time.sleep(0.01)
    start_evt.wait()
    t0 = time.perf_counter()
    i, warm, t_warm, in_flight = 0, None, None, 0
    while warm is None or i < warm + n:
        client.send(pool[i % len(pool)])
        i += 1
        # Closed loop, like a real producer: stay at most 64 chunks ahead of the acks (the bare-zmq
        # baseline gets the same back-pressure from its high-water mark). Checked once per chunk's worth of
        # transitions, sleeping 1 ms: a tighter poll took the GIL from the transport's IO thread thousands of
        # times a second and showed up as this loop's own CPU in the profile.
        if i % CHUNK == 0:
            while client.pending.unacked + len(client._incoming) / CHUNK > WINDOW:
                time.sleep(0.001)
            if warm is None and time.perf_counter() - t0 >= WARMUP_S:
                # what is in flight now is acked inside the timed window too: it counts there
                warm, t_warm, in_flight = i, time.perf_counter(), _unacked(client)
    ok = client.wait_acked(120)
    result_q.put((t0, t_warm, time.perf_counter(), n + in_flight, warm + n, ok))
    client.close()
    shutil.rmtree(spill, ignore_errors=True)  # what was not committed yet was spilled here at close


def ours_throughput(n_per_actor: int, n_actors: int, durability: str,
                    ingest_replay: bool = False) -> tuple[float, float]:
    """(steady-state, cold) acked transitions/s of ``n_actors`` actors into one learner."""
    ctx = mp.get_context("spawn")
    ports = _free_ports(2)
    ready, start, stop, result_q = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    learner = ctx.Process(target=_learner_proc, args=(ports, ready, stop, ingest_replay))
    learner.start()
    ready.wait(60)
    actors = [ctx.Process(target=_actor_proc, args=(ports, f"a{i}", n_per_actor, start, result_q, durability))
              for i in range(n_actors)]
    for a in actors:
        a.start()
    time.sleep(2.0)  # imports + handshakes
    start.set()
    results = [result_q.get(timeout=300) for _ in actors]
    stop.set()
    for a in actors:
        a.join()
    learner.join()
    assert all(r[-1] for r in results), "not every transition was acked"
    t0, t_warm, t1 = min(r[0] for r in results), min(r[1] for r in results), max(r[2] for r in results)
    return sum(r[3] for r in results) / (t1 - t_warm), sum(r[4] for r in results) / (t1 - t0)


# ------------------------------------------------------------------------------------------- bare pyzmq
def _raw_pull(port, n_producers, ready, result_q):
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"tcp://127.0.0.1:{port}")
    ready.set()
    # Steady state is measured here, at the receiver: a PUSH socket queues up to its high-water mark (1,000
    # messages, no copy with copy=False) ahead of what was received, so the senders' clocks say little.
    ended, first, mark, after_mark = 0, None, None, 0
    while ended < n_producers:  # each producer ends with a one-frame message
        if len(pull.recv_multipart(copy=False)) == 1:
            ended += 1
            continue
        now = time.perf_counter()
        first = first or now
        if mark is None and now - first >= WARMUP_S:
            mark = now
        elif mark is not None:
            after_mark += 1
    result_q.put(("end", time.perf_counter(), mark, after_mark))
    pull.close(0)
    ctx.term()


def _raw_push(port, n_msgs, start_evt, result_q, frames_once=False):
    import zmq

    from robot_rl.types import Batch

    pool = _transitions("raw")
    # the same arrays our chunk carries, pre-stacked (the baseline does no per-transition work at all)
    chunk = Batch.from_transitions(pool[:CHUNK]).arrays()
    if frames_once:  # our wire's bytes: each key's CHUNK + 1 frames once (obs rows, then the last next_obs)
        obs_keys = [k[len("obs/"):] for k in chunk if k.startswith("obs/")]
        for key in obs_keys:
            chunk[f"frames/{key}"] = np.concatenate([chunk.pop(f"obs/{key}"), chunk.pop(f"next_obs/{key}")[-1:]])
        chunk["obs_row"] = np.arange(CHUNK, dtype=np.int32)
    frames = [b"header" * 20] + [np.ascontiguousarray(v) for v in chunk.values()]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    start_evt.wait()
    t0 = time.perf_counter()
    warm = 0
    while time.perf_counter() - t0 < WARMUP_S:
        push.send_multipart(frames, copy=False)
        warm += 1
    for _ in range(n_msgs):
        push.send_multipart(frames, copy=False)
    push.send_multipart([b"end"])
    result_q.put(("push", t0, warm + n_msgs))
    push.close(linger=-1)
    ctx.term()


def raw_throughput(n_per_producer: int, n_producers: int, frames_once: bool = False) -> tuple[float, float]:
    """(steady-state, cold) transitions/s from ``n_producers`` PUSH processes into one PULL (to the last
    receive). ``frames_once``: each chunk carries the bytes our wire carries (each frame once) instead of every
    transition's obs + next_obs."""
    ctx = mp.get_context("spawn")
    port = _free_ports(1)[0]
    n_msgs = n_per_producer // CHUNK
    ready, start, q = ctx.Event(), ctx.Event(), ctx.Queue()
    pull = ctx.Process(target=_raw_pull, args=(port, n_producers, ready, q))
    pull.start()
    ready.wait(60)
    pushes = [ctx.Process(target=_raw_push, args=(port, n_msgs, start, q, frames_once)) for _ in range(n_producers)]
    for push in pushes:
        push.start()
    time.sleep(1.5 + 0.5 * n_producers)  # imports + connects
    start.set()
    got = [q.get(timeout=300) for _ in range(n_producers + 1)]
    for push in pushes:
        push.join()
    pull.join()
    _, t1, mark, after_mark = next(r for r in got if r[0] == "end")
    pushed = [r for r in got if r[0] == "push"]
    return after_mark * CHUNK / (t1 - mark), sum(r[2] for r in pushed) * CHUNK / (t1 - min(r[1] for r in pushed))


# --------------------------------------------------------------------------------------------- weights
def _weights_sub(ports, idx, n_expected, result_q):
    from robot_rl.transport.zmq_actor import ZmqActorClient

    obs, act, sh = _specs()
    client = ZmqActorClient(_cfg(ports), f"sub{idx}", obs, act, sh, "bench")
    latencies, seen = [], set()
    deadline = time.time() + 120
    while len(seen) < n_expected and time.time() < deadline:
        w = client.poll_weights()
        if w is not None and w.version not in seen:
            latencies.append((time.time_ns() - w.progress["t_ns"]) / 1e6)
            seen.add(w.version)
        time.sleep(0.0005)
    result_q.put(latencies)
    client.close()


def weights_latency(n_params: int = 10_000_000, n_subs: int = 4, n_publishes: int = 30):
    from robot_rl.transport.zmq_learner import ZmqLearnerServer

    ctx = mp.get_context("spawn")
    ports = _free_ports(2)
    obs, act, sh = _specs()
    server = ZmqLearnerServer(_cfg(ports), obs, act, sh, "bench", lambda c: None)
    server.start()
    rng = np.random.default_rng(0)
    # a 10M-parameter MLP-ish state dict (largest tensor 4M floats)
    sizes = [4_000_000, 3_000_000, 2_000_000, 1_000_000 - 4096, 4096]
    assert sum(sizes) == n_params
    weights = {f"layer{i}.weight": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(sizes)}
    q = ctx.Queue()
    subs = [ctx.Process(target=_weights_sub, args=(ports, i, n_publishes, q)) for i in range(n_subs)]
    for s in subs:
        s.start()
    time.sleep(4.0)  # subscribers connected (and past their imports)
    for v in range(1, n_publishes + 1):
        server.publish_weights(weights, v, {"t_ns": time.time_ns()})
        time.sleep(0.25)
    lat = [x for _ in subs for x in q.get(timeout=180)]
    for s in subs:
        s.join()
    server.close()
    received = len(lat) / (n_subs * n_publishes)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), received


# ---------------------------------------------------------------------------------------- replay memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _replay_mem(n, result_q):
    from robot_rl.replay import ReplayBuffer
    from robot_rl.types import Batch, Transition

    obs_spec, act, _ = _specs()
    rng = np.random.default_rng(0)
    episode_len = 100
    # distinct frames for every step (touching memory honestly), generated chunk by chunk
    frame = lambda: {"state": rng.standard_normal(STATE).astype(np.float32),
                     "images/front": rng.integers(0, 255, IMG, np.uint8),
                     "images/wrist": rng.integers(0, 255, IMG, np.uint8)}
    replay = ReplayBuffer(obs_spec, act, n)
    before = _rss_bytes()
    cur, ep, step = frame(), 0, 0
    for start in range(0, n, CHUNK):
        items = []
        for _ in range(min(CHUNK, n - start)):
            nxt = frame()
            done = step == episode_len - 1
            items.append(Transition(cur, np.zeros(4, np.float32), 0.0, nxt, False, done, "a", ep, step))
            cur, step = (frame(), 0) if done else (nxt, step + 1)
            ep += done
        replay.add_batch(Batch.from_transitions(items))
    growth = _rss_bytes() - before
    raw = n * obs_spec.nbytes  # every observation frame once
    result_q.put((growth, raw))


def replay_ratio(n: int = 20_000) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_replay_mem, args=(n, q))
    p.start()
    growth, raw = q.get(timeout=600)
    p.join()
    return growth / raw


ROWS = [  # (key, label, runner(n)): interleaved per repeat, so machine noise hits all variants alike
    ("raw_1", "bare pyzmq PUSH/PULL, 1 producer", lambda n: raw_throughput(n, 1)),
    ("raw_4", "bare pyzmq PUSH/PULL, 4 producers", lambda n: raw_throughput(n // 4, 4)),
    ("raw_1_once", "bare pyzmq, our wire's bytes, 1 producer", lambda n: raw_throughput(n, 1, frames_once=True)),
    ("raw_4_once", "bare pyzmq, our wire's bytes, 4 producers", lambda n: raw_throughput(n // 4, 4, frames_once=True)),
    ("ckpt_1", "ours checkpoint+spill (default), 1 actor", lambda n: ours_throughput(n, 1, "checkpoint")),
    ("ckpt_4", "ours checkpoint+spill (default), 4 actors", lambda n: ours_throughput(n // 4, 4, "checkpoint")),
    ("ckpt_1_replay", "ours default, 1 actor, + replay ingest",
     lambda n: ours_throughput(n, 1, "checkpoint", ingest_replay=True)),
    ("ack_1", "ours durability=ack, 1 actor", lambda n: ours_throughput(n, 1, "ack")),
    ("ack_4", "ours durability=ack, 4 actors", lambda n: ours_throughput(n // 4, 4, "ack")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--throughput-only", action="store_true", help="skip the weights and replay figures")
    args = parser.parse_args()
    n = args.transitions
    rows: dict[str, list[tuple[float, float]]] = {key: [] for key, _, _ in ROWS}
    for _ in range(args.repeats):
        for key, _, run in ROWS:
            rows[key].append(run(n))
    med = {k: statistics.median(r[0] for r in v) for k, v in rows.items()}  # steady state
    cold = {k: statistics.median(r[1] for r in v) for k, v in rows.items()}  # from the first transition
    print(f"{'acked image transitions/s (steady state)':48s} {'median':>8s}   all runs   (cold median)")
    for key, label, _ in ROWS:
        print(f"{label:48s} {med[key]:8.0f}   {[round(x) for x, _ in rows[key]]}   ({cold[key]:.0f})")
    ratios = {"ratio_vs_raw_zmq": med["ckpt_1"] / med["raw_1"], "ratio_vs_raw_zmq_ack": med["ack_1"] / med["raw_1"],
              "ratio_vs_raw_zmq_4_actors": med["ckpt_4"] / med["raw_4"],
              "ratio_vs_raw_zmq_ack_4_actors": med["ack_4"] / med["raw_4"],
              "ratio_vs_raw_zmq_cold": cold["ckpt_1"] / cold["raw_1"],
              "ratio_vs_raw_zmq_ack_cold": cold["ack_1"] / cold["raw_1"],
              # like for like: bare pyzmq moving the bytes our wire moves (each frame once)
              "ratio_vs_raw_zmq_same_wire_bytes": med["ckpt_1"] / med["raw_1_once"],
              "ratio_vs_raw_zmq_same_wire_bytes_4_actors": med["ckpt_4"] / med["raw_4_once"]}
    for key, value in ratios.items():
        print(f"{key:48s} {value:8.3f}")
    obs_bytes = _specs()[0].nbytes
    wire_ours, wire_raw = obs_bytes * (CHUNK + 1) / CHUNK, 2 * obs_bytes  # frames sent once vs obs + next_obs
    print(f"{'frame bytes per transition: ours / bare pyzmq':48s} {wire_ours:8.0f} / {wire_raw:.0f}   (ours sends "
          f"each frame once: next_obs[i] is obs[i+1])")
    result = {"image_transitions_per_s": round(med["ckpt_1"]),
              "image_transitions_per_s_4_actors": round(med["ckpt_4"]),
              "image_transitions_per_s_with_replay": round(med["ckpt_1_replay"]),
              "image_transitions_per_s_ack": round(med["ack_1"]),
              "image_transitions_per_s_ack_4_actors": round(med["ack_4"]),
              "image_transitions_per_s_cold": round(cold["ckpt_1"]),
              "raw_zmq_transitions_per_s": round(med["raw_1"]),
              "raw_zmq_transitions_per_s_4_producers": round(med["raw_4"]),
              "raw_zmq_same_wire_bytes_transitions_per_s": round(med["raw_1_once"]),
              "raw_zmq_same_wire_bytes_transitions_per_s_4_producers": round(med["raw_4_once"]),
              "frame_bytes_per_transition": round(wire_ours), "raw_zmq_frame_bytes_per_transition": round(wire_raw),
              **{k: round(v, 3) for k, v in ratios.items()}}
    if not args.throughput_only:
        p50, p99, received = weights_latency()
        ratio = replay_ratio()
        print(f"{'weights 10M params -> 4 subscribers p50/p99 ms':48s} {p50:7.1f}/{p99:.1f}   received {received:.0%}")
        print(f"{'replay memory / raw obs bytes (20k transitions)':48s} {ratio:8.3f}")
        result.update({"weights_p50_ms": round(p50, 1), "weights_p99_ms": round(p99, 1),
                       "replay_bytes_ratio": round(ratio, 3)})
    print(json.dumps({**result, "transitions": n, "repeats": args.repeats, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
