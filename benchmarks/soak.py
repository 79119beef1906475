"""Soak under injected faults: actors on the twin and a learner for N minutes; is the transport's promise kept?

    python benchmarks/soak.py [--minutes 10] [--actors 4] [--env panda_pick_cube] [--out DIR]

Real processes, as deployed (``robot-rl learner`` and ``robot-rl actor``, the default durability:
``transport.durability=checkpoint``, ``transport.spill_all_chunks=true``), and on a schedule:
- ``kill -9`` of a random actor about every ``--actor-kill-every`` s (restarted at once, same id and spill dir);
- ``kill -9`` of the learner twice (restarted after ``--learner-down`` s; it resumes from its checkpoint);
- network faults, inside private network namespaces (``benchmarks/soak_net.py``): actor 1 partitioned for
  ``--partition`` s; actor 2 behind 10% packet loss each way and a 50 ms delay each way for the whole run;
- actor 3's spill directory is a small tmpfs, filled to the last byte for ``--disk-full`` s (with a small
  ``transport.max_pending_bytes`` so it must spill): a clear error and backpressure, never a crash.
At the end the actors are stopped (SIGTERM), then the learner (its final checkpoint), and the learner's replay
is compared with what the actors stored in their episode stores.

Figures: ``produced`` (transitions in the actors' episode stores), ``in_replay`` (of those, in the final
checkpoint's replay), ``lost`` (produced, neither in replay nor waiting in an actor's spill directory for its
next run), ``duplicated`` (replay rows present twice), ``restarts_survived``, ``rss_slope_mb_per_min_max``
(learner and actors, after a warm-up), ``actor_period_p99_ms_normal`` / ``_outage`` (the control loop's
period while a learner is up / down), the weights version taken after each learner restart. The baseline is
the nominal control period (1 / control_hz), measured in the same run as the normal p99. Ends with one JSON line.

Network faults need ``unshare``, ``nsenter``, ``ip`` (iproute2) and ``nft`` (nftables) and user or root
namespaces; without them (or with ``--no-network-faults``) the process and disk faults still run on loopback
and the JSON says ``"network_faults": false``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_net import ActorSlot, DelayRelay, SmallDisk, in_private_namespaces, missing_tools  # noqa: E402

PARTITIONED, LOSSY, DISK_FULL = 1, 2, 3  # actor slots with a fault of their own


def actor_proc(trace: Path, cli_args: list[str]) -> int:
    """An ordinary ``robot-rl actor`` that also records each control tick (wall time, float64, appended to
    ``<trace>.ticks``) and each weights swap (``<trace>.events``), flushed twice a second."""
    import threading

    import robot_rl.actor as actor_mod
    from robot_rl.cli import main as cli_main

    ticks: list[float] = []
    events: list[str] = []
    rate_sleep, swap = actor_mod.FixedRate.sleep, actor_mod.Actor._maybe_swap_weights

    def sleep(self) -> None:
        rate_sleep(self)
        ticks.append(time.time())

    def swap_weights(self) -> None:
        before = (self.stats.weights_incarnation, self.stats.weights_version)
        swap(self)
        after = (self.stats.weights_incarnation, self.stats.weights_version)
        if after != before:
            events.append(json.dumps({"t": time.time(), "incarnation": after[0], "version": after[1]}))

    def flush() -> None:
        while True:
            time.sleep(0.5)
            n, m = len(ticks), len(events)
            with open(f"{trace}.ticks", "ab") as f:
                f.write(np.asarray(ticks[:n], np.float64).tobytes())
            del ticks[:n]
            if m:
                with open(f"{trace}.events", "a") as f:
                    f.write("".join(e + "\n" for e in events[:m]))
                del events[:m]

    actor_mod.FixedRate.sleep, actor_mod.Actor._maybe_swap_weights = sleep, swap_weights
    threading.Thread(target=flush, daemon=True).start()
    code = cli_main(cli_args)
    time.sleep(0.6)  # the last flush
    return code


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Proc:
    """One process of a role (``learner`` or ``actor-<i>``); a restart is a new Proc."""

    role: str
    popen: subprocess.Popen
    started: float
    trace: Path | None = None
    killed_at: float | None = None
    rss: list[tuple[float, float]] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out or tempfile.mkdtemp(prefix="soak-"))
        self.run_dir, self.logs, self.traces = self.out / "run", self.out / "logs", self.out / "traces"
        for d in (self.logs, self.traces):
            d.mkdir(parents=True, exist_ok=True)
        self.network = in_private_namespaces() and not args.no_network_faults
        self.rng = random.Random(args.seed)
        self.procs: list[Proc] = []
        self.current: dict[str, Proc] = {}
        self.marks: list[tuple[float, str]] = []  # (wall time, what happened)
        self.unexpected_exits: list[str] = []
        self.p1, self.p2 = free_port(), free_port()
        self.slots: list[ActorSlot] = []
        self.relays: list[DelayRelay] = []
        self.disk: SmallDisk | None = None
        self.disk_full = False

    # ------------------------------------------------------------------------------------------ setup
    def common(self) -> list[str]:
        a = self.args
        return [f"env={a.env}", f"env.control_hz={a.control_hz}", "algo=sac", "policy.hidden_dims=[64,64]",
                "algo.critic_hidden_dims=[64,64]", f"run_dir={self.run_dir}", "logger.wandb=disabled",
                "logger.progress=false", "transport.heartbeat_interval_s=0.5", "transport.peer_timeout_s=3",
                "transport.resend_after_s=2",
                *([] if a.spill_all_chunks is None else [f"transport.spill_all_chunks={a.spill_all_chunks}"])]

    def setup(self) -> None:
        if self.network:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            self.slots = [ActorSlot(i) for i in range(self.args.actors)]
            if LOSSY < self.args.actors:
                slot = self.slots[LOSSY]
                self.relay_ports = (free_port(), free_port())
                for port, target in zip(self.relay_ports, (self.p1, self.p2)):
                    self.relays.append(DelayRelay(slot.hub_addr, port, ("127.0.0.1", target), 0.05))
                slot.lossy(10)
            if DISK_FULL < self.args.actors:
                self.disk = SmallDisk(self.run_dir / "spill" / f"actor-{DISK_FULL}", self.args.disk_mb)

    def learner_cmd(self) -> list[str]:
        a = self.args
        return [sys.executable, "-m", "robot_rl.cli", "learner", *self.common(),
                f"transport.bind={'0.0.0.0' if self.network else '127.0.0.1'}",
                f"transport.transitions_port={self.p1}", f"transport.weights_port={self.p2}",
                "learner.utd=0.25", "algo.batch_size=64", "learner.warmup_transitions=200",
                f"learner.checkpoint_every_s={a.checkpoint_every}", "learner.publish_every=10",
                "learner.eval_every_env_steps=0", "learner.max_env_steps=0", "replay.capacity=500000",
                "replay.prefetch=0"]

    def actor_cmd(self, i: int, trace: Path) -> list[str]:
        host, ports, prefix, extra = "127.0.0.1", (self.p1, self.p2), [], []
        if self.network:
            slot = self.slots[i]
            host, prefix = slot.hub_addr, slot.prefix
            if i == LOSSY:
                ports = self.relay_ports
        if i == DISK_FULL:
            extra.append(f"transport.max_pending_bytes={self.args.disk_pending_kb * 1024}")
            extra.append("transport.shm_spill_fraction=0")  # image chunks would go to /dev/shm, not the full disk
        return [*prefix, sys.executable, str(Path(__file__).resolve()), "--actor-proc", "--trace", str(trace), "--",
                "actor", *self.common(), f"actor.actor_id=actor-{i}", "actor.realtime=true", "actor.max_env_steps=0",
                f"transport.host={host}", f"transport.transitions_port={ports[0]}",
                f"transport.weights_port={ports[1]}", *extra]

    def spawn(self, role: str) -> Proc:
        n = sum(p.role == role for p in self.procs)
        log = open(self.logs / f"{role}.{n}.log", "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", COLUMNS="400", WANDB_MODE="disabled")
        trace = None
        if role == "learner":
            cmd = self.learner_cmd()
        else:
            trace = self.traces / f"{role}.{n}"
            cmd = self.actor_cmd(int(role.split("-")[1]), trace)
        proc = Proc(role, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time(), trace)
        self.procs.append(proc)
        self.current[role] = proc
        return proc

    # ------------------------------------------------------------------------------------------ faults
    def kill(self, role: str) -> None:
        proc = self.current[role]
        proc.killed_at = time.time()
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()
        self.marks.append((proc.killed_at, f"kill -9 {role}"))

    def schedule(self, duration: float) -> list[tuple[float, str]]:
        a = self.args
        events = []
        t = min(30.0, 0.2 * duration)
        while t < duration - 15:
            events.append((t, "kill_actor"))
            t += a.actor_kill_every
        events += [(0.3 * duration, "kill_learner"), (0.65 * duration, "kill_learner")]
        if a.actors > PARTITIONED and self.network:
            events += [(0.15 * duration, "partition"), (0.15 * duration + a.partition, "heal")]
        if self.disk is not None:
            full_for = min(a.disk_full, 0.2 * duration)
            events += [(0.45 * duration, "disk_full"), (0.45 * duration + full_for, "disk_free")]
        return sorted(events)

    def fire(self, what: str) -> None:
        now = time.time()
        if what == "kill_actor":
            choices = [i for i in range(self.args.actors) if not (i == DISK_FULL and self.disk_full)]
            role = f"actor-{self.rng.choice(choices)}"
            self.kill(role)
            self.spawn(role)
        elif what == "kill_learner":
            self.kill("learner")
            time.sleep(self.args.learner_down)
            self.spawn("learner")
            self.marks.append((time.time(), "learner restarted"))
        elif what == "partition":
            self.slots[PARTITIONED].partition()
            self.marks.append((now, f"partition actor-{PARTITIONED}"))
        elif what == "heal":
            self.slots[PARTITIONED].heal()
            self.marks.append((now, f"heal actor-{PARTITIONED}"))
        elif what == "disk_full":
            self.disk.fill()
            self.disk_full = True
            self.marks.append((now, f"disk full actor-{DISK_FULL}"))
        elif what == "disk_free":
            self.disk.free()
            self.disk_full = False
            self.marks.append((now, f"disk free actor-{DISK_FULL}"))

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> dict:
        duration = 60.0 * self.args.minutes
        self.setup()
        try:
            self.spawn("learner")
            deadline = time.time() + 120
            while not (self.run_dir / "config_learner.yaml").exists() and time.time() < deadline:
                time.sleep(0.2)
            for i in range(self.args.actors):
                self.spawn(f"actor-{i}")
            # The fault clock starts once every actor runs the learner's weights (startup is slow on a busy box).
            deadline = time.time() + 180
            while time.time() < deadline and not all(Path(f"{self.current[f'actor-{i}'].trace}.events").exists()
                                                     for i in range(self.args.actors)):
                time.sleep(0.5)
            self.t0 = time.time()
            self.marks.append((self.t0, "faults start"))
            pending = self.schedule(duration)
            next_rss = 0.0
            while time.time() - self.t0 < duration:
                elapsed = time.time() - self.t0
                while pending and pending[0][0] <= elapsed:
                    self.fire(pending.pop(0)[1])
                for role, proc in list(self.current.items()):
                    if proc.popen.poll() is not None:  # died on its own: a failure of the promise
                        self.unexpected_exits.append(f"{role} exited with {proc.popen.returncode}")
                        self.spawn(role)
                if time.time() >= next_rss:
                    next_rss = time.time() + 2.0
                    for proc in self.current.values():
                        mb = rss_mb(proc.popen.pid)
                        if mb is not None:
                            proc.rss.append((time.time(), mb))
                time.sleep(0.2)
            if self.disk_full:
                self.fire("disk_free")
            for slot in self.slots:
                slot.heal()
            self.settle()
            self.stop_all()
            return self.analyse()
        finally:
            for p in self.procs:
                if p.popen.poll() is None:
                    p.popen.kill()
            for r in self.relays:
                r.close()
            for s in self.slots:
                s.close()
            if self.disk is not None:
                self.disk.close()

    def settle(self, timeout_s: float = 180.0) -> None:
        """Before stopping: wait until every actor runs the weights of the current learner (a learner killed
        late in the run must be back, and every actor reconnected, for the final count to mean anything)."""
        learner = self.current["learner"]
        deadline = time.time() + timeout_s

        def taken(proc: Proc) -> bool:
            path = Path(f"{proc.trace}.events")
            return path.exists() and any(json.loads(line)["t"] >= learner.started
                                         for line in path.read_text().splitlines() if line)

        while time.time() < deadline and not all(taken(p) for r, p in self.current.items() if r != "learner"):
            time.sleep(1.0)
        time.sleep(2.0 * self.args.checkpoint_every)  # two checkpoints: what they resent is committed

    def stop_all(self) -> None:
        actors = [p for r, p in self.current.items() if r != "learner"]
        for p in actors:
            p.popen.send_signal(signal.SIGTERM)
        for p in actors:
            try:
                p.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.unexpected_exits.append(f"{p.role} did not stop on SIGTERM")
                p.popen.kill()
        learner = self.current["learner"]
        learner.popen.send_signal(signal.SIGTERM)
        learner.popen.wait(timeout=120)
        self.stopped_at = time.time()

    # ------------------------------------------------------------------------------------------ figures
    def analyse(self) -> dict:
        from soak_report import figures

        return figures(self)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--actors", type=int, default=4)
    p.add_argument("--env", default="panda_pick_cube")
    p.add_argument("--control-hz", type=float, default=10.0, help="the twin's native control rate")
    p.add_argument("--actor-kill-every", type=float, default=60.0, help="seconds between actor kills")
    p.add_argument("--learner-down", type=float, default=3.0, help="seconds a killed learner stays down")
    p.add_argument("--partition", type=float, default=20.0, help="seconds actor 1 is partitioned")
    p.add_argument("--disk-full", type=float, default=30.0, help="seconds actor 3's spill tmpfs is full")
    p.add_argument("--disk-mb", type=int, default=8, help="size of actor 3's spill tmpfs")
    p.add_argument("--disk-pending-kb", type=int, default=48, help="actor 3's transport.max_pending_bytes")
    p.add_argument("--checkpoint-every", type=float, default=20.0, help="learner.checkpoint_every_s")
    p.add_argument("--spill-all-chunks", choices=("true", "false"), default=None,
                   help="override transport.spill_all_chunks (default: the config default, true)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="directory for run, logs and traces (default: a temp dir)")
    p.add_argument("--no-network-faults", action="store_true")
    p.add_argument("--actor-proc", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--trace", default="", help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.actor_proc:
        return actor_proc(Path(args.trace), [a for a in args.rest if a != "--"])
    if os.environ.get("SOAK_NETNS") != "1" and not args.no_network_faults:
        missing = missing_tools()
        if missing:
            print(f"soak: {missing} not found (apt-get install iproute2 nftables util-linux); running without "
                  "network faults", file=sys.stderr)
        else:  # re-run inside a fresh network + mount namespace (user namespace too when not root)
            user = [] if os.geteuid() == 0 else ["-r"]
            cmd = ["unshare", "-n", "-m", "--propagation", "private", *user, sys.executable,
                   str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])]
            return subprocess.call(cmd, env=dict(os.environ, SOAK_NETNS="1"))
    result = Soak(args).run()
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and not result["unexpected_exits"] else 1


if __name__ == "__main__":
    sys.exit(main())
