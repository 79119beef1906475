"""The dashboard web server: one static page, server-sent events, JPEG frames, a control endpoint.

A :class:`FeedClient` thread subscribes to the learner's feed (endpoints from ``<run_dir>/dashboard/feed.json``,
re-read when the learner restarts), keeps the newest status and the newest frame of each camera (JPEG-encoded
here with OpenCV, downsampled to ``frame_size``: the learner never encodes), and pushes operator commands back.
The Starlette app serves:

- ``GET /`` the page (``static/index.html``, no build step, no CDN: a robot cell has no internet);
- ``GET /events`` a server-sent event stream of the status (``status_hz``);
- ``GET /frame/{actor_id}/{camera}.jpg`` the newest frame;
- ``POST /api/control`` ``{"action": ..., "actor_id": ...}``: validated, logged with its time to the log and to
  ``<run_dir>/dashboard/controls.jsonl``, relayed to the learner. Refusals are 4xx with the reason.

Every request needs the access token (``?token=`` or an ``Authorization: Bearer`` header) unless a loopback
server was started with ``--no-token``; a non-loopback bind without a token is refused at start.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from robot_rl.dashboard.feed import FEED_FILE, dashboard_dir
from robot_rl.dashboard.protocol import (ALL_CONTROL_ACTIONS, RUN_CONTROL_ACTIONS, FeedControl, FeedError, FeedStatus,
                                         decode_frame)

log = logging.getLogger("robot_rl.dashboard")
STATIC = Path(__file__).parent / "static"
STALE_FEED_S = 5.0  # no status for this long: the page says the learner is not reachable


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def jpeg(image: np.ndarray, size: int, quality: int = 80) -> bytes:
    """(H, W, 3) RGB uint8 -> JPEG bytes, longest side at most ``size`` (downsampled with INTER_AREA)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding of a {image.shape} frame failed")
    return buf.tobytes()


class FeedClient:
    """Newest learner status and camera frames, on a thread of its own; :meth:`send` pushes a command."""

    def __init__(self, run_dir: str | Path, frame_size: int) -> None:
        self.feed_file = dashboard_dir(run_dir) / FEED_FILE
        self.frame_size = frame_size
        self.status: dict[str, Any] | None = None
        self.status_at = 0.0  # monotonic time of the last status
        self.frames: dict[tuple[str, str], tuple[bytes, int]] = {}  # (actor, camera) -> (JPEG, learner steps)
        self._ctx = zmq.Context()
        self._sub: zmq.Socket | None = None
        self._push: zmq.Socket | None = None
        self._push_lock = threading.Lock()
        self._feed_key: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed-client", daemon=True)
        self._thread.start()

    @property
    def live(self) -> bool:
        return self.status is not None and time.monotonic() - self.status_at < STALE_FEED_S

    def _connect(self) -> None:
        """(Re)connect when feed.json appears or changes (a restarted learner binds new ports)."""
        try:
            stat = self.feed_file.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            return
        if key == self._feed_key:
            return
        try:
            info = json.loads(self.feed_file.read_text())
            status_ep, control_ep = str(info["status"]), str(info["control"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read %s: %s", self.feed_file, exc)
            return
        self._feed_key = key
        with self._push_lock:
            for sock in (self._sub, self._push):
                if sock is not None:
                    sock.close(0)
            self._sub = self._ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            self._sub.setsockopt(zmq.MAXMSGSIZE, 64 * 2**20)
            self._sub.rcvhwm = 64
            self._sub.connect(status_ep)
            self._push = self._ctx.socket(zmq.PUSH)
            self._push.linger = 0
            self._push.sndhwm = 16
            self._push.setsockopt(zmq.IMMEDIATE, 1)  # no learner: the send fails at once instead of queueing
            self._push.connect(control_ep)
        log.info("following the learner feed at %s (commands to %s)", status_ep, control_ep)

    def _run(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1.0
                    self._connect()
                if self._sub is None or not self._sub.poll(200):
                    if self._sub is None:
                        time.sleep(0.2)
                    continue
                while True:
                    try:
                        frames = self._sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
            except Exception:
                log.exception("dashboard feed client error (continuing)")
                time.sleep(0.5)

    def _handle(self, frames: list[bytes]) -> None:
        try:
            if len(frames) == 1:
                self.status = FeedStatus.decode(frames[0]).__dict__
                self.status_at = time.monotonic()
            else:
                actor_id, camera, image, steps = decode_frame(frames)
                self.frames[(actor_id, camera)] = (jpeg(image, self.frame_size), steps)
        except FeedError as exc:
            log.warning("refused a feed message: %s", exc)

    def send(self, control: FeedControl) -> bool:
        with self._push_lock:
            if self._push is None:
                return False
            try:
                self._push.send(control.encode(), zmq.NOBLOCK)
                return True
            except zmq.Again:
                return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self._push_lock:
            for sock in (self._sub, self._push):
                if sock is not None:
                    sock.close(0)
        self._ctx.term()


def validate_control(body: Any, status: dict[str, Any] | None) -> tuple[FeedControl | None, int, str]:
    """An operator's request -> (command, 202, "") or (None, 4xx/503, reason)."""
    if not isinstance(body, dict):
        return None, 400, "the body must be a JSON object like {\"action\": \"pause\", \"actor_id\": \"actor-0\"}"
    unknown = set(body) - {"action", "actor_id"}
    if unknown:
        return None, 400, f"unknown field(s) {sorted(unknown)}: only action and actor_id"
    action, actor_id = body.get("action"), body.get("actor_id", "")
    if action not in ALL_CONTROL_ACTIONS:
        return None, 400, f"action must be one of {list(ALL_CONTROL_ACTIONS)}, got {action!r}"
    if not isinstance(actor_id, str):
        return None, 400, f"actor_id must be a string, got {type(actor_id).__name__}"
    if status is None:
        return None, 503, "the learner's feed is not reachable: no run to control"
    if action in RUN_CONTROL_ACTIONS:
        if actor_id:
            return None, 400, f"{action} acts on the whole run: leave actor_id out"
        return FeedControl(action, "", time.time()), 202, ""
    if not actor_id:
        return None, 400, f"{action} needs an actor_id"
    fleet = {a["actor_id"]: a for a in status.get("fleet", [])}
    if actor_id not in fleet:
        return None, 404, f"no actor {actor_id!r} in this run (known: {sorted(fleet)})"
    actor = fleet[actor_id]
    if not actor["connected"]:
        return None, 409, f"actor {actor_id} is not connected (silent for {actor['seen_s_ago']:.0f} s)"
    if action.startswith("label_") and (actor.get("status") or {}).get("hil", "none") == "none":
        return None, 409, (f"actor {actor_id} runs without an operator (hil=none): its episodes end by the env's "
                           "own success/time limit, there is no operator label to set")
    return FeedControl(action, actor_id, time.time()), 202, ""
