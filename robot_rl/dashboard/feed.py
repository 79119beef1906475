"""Learner side of the dashboard: status out (PUB), operator commands in (PULL), on a thread of its own.

The update loop never waits on it. The learner's transport thread only hands over the newest image of each
actor (:meth:`DashboardFeed.observe`: a dict assignment of a small copy); everything else, reading counters,
building the snapshot, sending, relaying commands, runs on the feed's thread at ``status_hz``. Sends are
``NOBLOCK`` on a PUB socket with a small high-water mark, so no dashboard, a frozen one or a dead one costs
nothing but dropped messages. With ``dashboard.enabled`` the feed also starts the web server as a child
process (``robot-rl dashboard RUN_DIR``) and stops it when the learner closes; the server dying is logged and
changes nothing else.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from robot_rl.dashboard.protocol import FeedControl, FeedError, FeedStatus, encode_frame
from robot_rl.transport.wire import Chunk, Control

log = logging.getLogger("robot_rl.dashboard")

FEED_FILE = "feed.json"
URL_FILE = "url.txt"
TOKEN_ENV = "ROBOT_RL_DASHBOARD_TOKEN"


def dashboard_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "dashboard"


def announce_url(run_dir: str | Path, timeout_s: float = 300.0) -> threading.Thread:
    """Log the dashboard's URL (with its token) once the server the learner started writes it: ``robot-rl train``
    shows it in the terminal, where the learner's own log is not."""
    path = dashboard_dir(run_dir) / URL_FILE
    since = time.time() - 1.0  # a file left by an earlier server that crashed is not this run's

    def wait() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_mtime >= since and path.read_text().strip():
                log.info("dashboard: %s  (from a robot cell: ssh -L PORT:127.0.0.1:PORT, then open it)",
                         path.read_text().strip())
                return
            time.sleep(0.5)
        log.warning("the dashboard did not start within %.0fs: see %s", timeout_s,
                    Path(run_dir) / "logs" / "dashboard.log")

    thread = threading.Thread(target=wait, name="dashboard-url", daemon=True)
    thread.start()
    return thread


class DashboardFeed:
    def __init__(self, cfg: Any, learner: Any) -> None:
        self.cfg, self.dcfg, self.learner = cfg, cfg.dashboard, learner
        if self.dcfg.enabled:
            import importlib.util

            missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
            if missing:
                raise RuntimeError(f"dashboard.enabled=true needs {', '.join(missing)}: pip install "
                                   "'robot-rl[dashboard]' (or run without dashboard.enabled)")
        self.dir = dashboard_dir(cfg.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._images: dict[tuple[str, str], tuple[np.ndarray, int]] = {}  # (actor, camera) -> (H, W, 3), steps
        self._eval: list[list[float]] = []
        self._stop = threading.Event()
        self.stopping = False
        self._thread: threading.Thread | None = None
        self._server: subprocess.Popen | None = None
        # Sockets open in start() (the learner's run), not here: a Learner built and dropped without running (tests,
        # tools) must leave no zmq context behind for the garbage collector to terminate.
        self.ctx: zmq.Context | None = None
        self.endpoints: dict[str, str] = {}

    def _open(self) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.linger = 0
        self.pub.sndhwm = 8  # a stalled dashboard costs 8 queued messages, then drops: never a blocked send
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.linger = 0
        self.pull.rcvhwm = 100
        self.pull.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # commands are tiny; anything bigger is refused by zmq
        bind = f"tcp://{self.dcfg.feed_bind}"
        status_port = self.pub.bind_to_random_port(bind)
        control_port = self.pull.bind_to_random_port(bind)
        self.endpoints = {"status": f"{bind}:{status_port}", "control": f"{bind}:{control_port}"}
        info = {**self.endpoints, "learner_pid": os.getpid(), "started_at": time.time()}
        tmp = self.dir / (FEED_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.dir / FEED_FILE)
        log.info("dashboard feed on %s (status) / %s (control)", *self.endpoints.values())

    # --------------------------------------------------------------------- called from learner threads
    def observe(self, chunk: Chunk) -> None:
        """Transport thread, per ingested chunk: keep the newest frame of each camera (a small copy)."""
        obs = chunk.batch.obs
        for key, value in obs.items():
            if key.startswith("images/"):
                self._images[(chunk.actor_id, key[len("images/"):])] = (np.array(value[-1]),
                                                                        int(self.learner.online_transitions))

    def eval_point(self, env_steps: int, success_rate: float) -> None:
        self._eval.append([int(env_steps), float(success_rate)])

    def start(self) -> None:
        if self.ctx is None:
            self._open()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()
        if self.dcfg.enabled:
            self._launch_server()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()
            try:
                self._server.wait(10)
            except subprocess.TimeoutExpired:
                self._server.kill()
        if self.ctx is None:  # never started: nothing was opened
            return
        (self.dir / FEED_FILE).unlink(missing_ok=True)
        self.pub.close(0)
        self.pull.close(0)
        self.ctx.term()
        self.ctx = None

    # ------------------------------------------------------------------------------------ server child
    def _launch_server(self) -> None:
        (self.dir / URL_FILE).unlink(missing_ok=True)  # an earlier server's URL must not be announced
        token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)
        logs = Path(self.cfg.run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "robot_rl.cli", "dashboard", str(self.cfg.run_dir), "--host", self.dcfg.host,
                "--port", str(self.dcfg.port)]
        if not self.dcfg.require_token:
            args.append("--no-token")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{TOKEN_ENV: token})
        with open(logs / "dashboard.log", "ab") as out:  # its own session: a signal to the run is not its signal
            self._server = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        log.info("dashboard server pid %d (log %s); its URL with the access token is printed there and in %s",
                 self._server.pid, logs / "dashboard.log", self.dir / "url.txt")

    # ------------------------------------------------------------------------------------ feed thread
    def _run(self) -> None:
        period = 1.0 / max(self.dcfg.status_hz, 1e-3)
        frame_period = 1.0 / max(self.dcfg.frame_hz, 1e-3)
        next_status = next_frames = time.monotonic()
        last = (time.monotonic(), int(self.learner.updates))
        server_reported = False
        while not self._stop.is_set():
            try:
                if self.pull.poll(int(min(period, frame_period) * 1000 / 2)):
                    self._drain_controls()
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + period
                    updates = int(self.learner.updates)
                    rate = (updates - last[1]) / max(now - last[0], 1e-6)
                    last = (now, updates)
                    self._send([self._snapshot(rate).encode()])
                if now >= next_frames:
                    next_frames = now + frame_period
                    for (actor_id, camera), (image, steps) in list(self._images.items()):
                        self._send(encode_frame(actor_id, camera, image, steps))  # resent: late dashboards see it
                if self._server is not None and self._server.poll() is not None and not server_reported:
                    server_reported = True
                    log.warning("dashboard server exited with %s (see logs/dashboard.log); the run goes on",
                                self._server.returncode)
            except Exception:  # the feed must never take the learner down
                log.exception("dashboard feed error (continuing)")
                time.sleep(period)

    def _send(self, frames: list[bytes]) -> None:
        try:
            self.pub.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB drops at the high-water mark by itself; this is belt and braces

    def _snapshot(self, updates_per_s: float) -> FeedStatus:
        learner = self.learner
        labeller = getattr(learner, "reward_labeller", None)
        alarms = getattr(labeller, "alarms", None)
        value_check = getattr(learner, "value_check", None)
        return FeedStatus(time=time.time(), updates=int(learner.updates), env_steps=int(learner.online_transitions),
                          updates_per_s=float(updates_per_s), eval=list(self._eval), fleet=learner.transport.fleet(),
                          weights_version=int(learner.weights_version), stopping=self.stopping,
                          reward_alarms=list(alarms()) if callable(alarms) else None,
                          critic_alarms=value_check.alarms() if value_check is not None else None)

    def _drain_controls(self) -> None:
        while True:
            try:
                frame = self.pull.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                control = FeedControl.decode(frame)
            except FeedError as exc:
                log.warning("dashboard: refused a control message: %s", exc)
                continue
            self.apply(control)

    def apply(self, control: FeedControl) -> bool:
        """Carry out one operator command; every one is logged with its time. False: no such actor connected."""
        issued = time.strftime("%H:%M:%S", time.localtime(control.issued_at))
        if control.action == "stop":
            log.warning("dashboard: STOP the run (issued %s): checkpointing and exiting", issued)
            self.stopping = True
            self.learner.stop()
            return True
        ok = self.learner.transport.send_control(control.actor_id, Control(control.action, control.issued_at))
        (log.info if ok else log.warning)("dashboard: %s %s (issued %s)%s", control.action, control.actor_id, issued,
                                          "" if ok else ": no such actor connected")
        return ok
