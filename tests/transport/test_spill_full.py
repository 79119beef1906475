"""The actor's spill directory cannot take more (disk full): backpressure and a clear error, never a crash.

Once there is room again, every chunk whose write failed is written (``spill_all_chunks``: nothing a SIGKILL
could lose stays in memory only). A real write failure, no mock: a child process lowers its RLIMIT_FSIZE soft limit so every spill file write
fails with EFBIG ("File too large"), the way ENOSPC fails it on a full disk, then raises it again."""
from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import logging, resource, signal, sys, threading, time
    from pathlib import Path
    from robot_rl.actor import Actor
    from robot_rl.config import TransportConfig, load_config
    from robot_rl.sim.point_reach import PointReach, PointReachConfig
    from robot_rl.specs import spec_hash
    from robot_rl.transport.zmq_actor import ZmqActorClient
    sys.path.insert(0, sys.argv[3])
    from support import free_ports, rollout

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    env = PointReach(PointReachConfig(obs="pixels", image_size=16))
    p1, p2 = free_ports(2)  # nobody listens: no learner, nothing is ever committed
    cfg = TransportConfig(transitions_port=p1, weights_port=p2, chunk_size=8, max_pending_bytes=100_000,
                          spill_all_chunks=True)
    client = ZmqActorClient(cfg, "a0", env.obs_spec, env.action_spec, spec_hash(env.obs_spec, env.action_spec),
                            "cfg", spill_dir=Path(sys.argv[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # the "disk" is full from here on
    data = rollout(env, 200)

    def chunks():  # the IO thread keeps reordering the table (resends): copy it, retrying a concurrent change
        for _ in range(200):
            try:
                return list(client.pending._chunks.values())
            except RuntimeError:
                time.sleep(0.005)
        raise AssertionError("could not read the pending table")

    for tr in data:
        client.send(tr)
    # the IO thread takes a transition off the queue before its chunk is in the pending table: an empty queue
    # can come a moment before the last chunk does (a race a loaded machine widens), so wait for both, bounded
    deadline = time.monotonic() + 20
    while ((client.stats()["queue_depth"] > 0 or sum(c.n_transitions for c in chunks()) < 200)
           and time.monotonic() < deadline):
        time.sleep(0.01)
    reason = client.backpressure()
    assert reason is not None and "File too large" in reason, reason
    s = client.stats()
    assert s["spill_failures"] > 0 and s["backpressure"] == 1.0, s
    held = sum(c.n_transitions for c in chunks())
    assert held == 200, held  # nothing dropped
    # The control loop holds (does not step, does not crash) while the transport cannot take more data.
    cfg_all = load_config(["env=point_reach", "env.obs=pixels", "env.image_size=16", "actor.actor_id=a0",
                           f"run_dir={sys.argv[2]}", "actor.wait_for_weights=false", "actor.pace=false"])
    actor = Actor(cfg_all, client, envs=[env])
    stop, out = threading.Event(), {}
    thread = threading.Thread(target=lambda: out.update(actor.run(max_steps=50, stop=stop)), daemon=True)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive() and actor.stats.steps == 0 and actor._held_since is not None, actor.stats.steps
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again: the IO thread spills, the actor resumes
    thread.join(30)
    assert not thread.is_alive() and out["steps"] == 50, out
    # every chunk whose write at creation failed is on disk again: a SIGKILL now would lose nothing. The IO
    # thread rewrites them asynchronously (until then they are in memory), and it chunks the actor's tail
    # (a chunk is in the table a moment before its spill file is assigned), so wait for both, bounded.
    def on_disk():
        return all(c.spill_path is not None and c.spill_path.exists() for c in chunks())

    deadline = time.monotonic() + 10
    while (client.pending.unpersisted or client.backpressure() is not None or client.pending.mem_bytes > 100_000
           or sum(c.n_transitions for c in chunks()) < 250 or not on_disk()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.pending.unpersisted
    assert client.backpressure() is None and client.pending.mem_bytes <= 100_000, client.pending.mem_bytes
    assert sum(c.n_transitions for c in chunks()) == 250  # the 200 sent above + the actor's 50, nothing lost
    assert on_disk()
    client.close()
    print("OK", flush=True)
""")


def test_full_spill_directory_applies_backpressure_with_a_clear_error(tmp_path):
    tests_dir = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "spill"), str(tmp_path / "run"), tests_dir],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stderr
    assert "File too large; keeping" in log and "in memory" in log  # the clear error, from the spill store
    assert "holding the robot" in log and "resuming after" in log  # the actor says why it holds, and when it ends
    assert "Traceback" not in log
