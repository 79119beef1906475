"""The Starlette app of the dashboard and ``robot-rl dashboard RUN_DIR`` (see :mod:`robot_rl.dashboard.server`)."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

from robot_rl.dashboard.feed import TOKEN_ENV, URL_FILE, dashboard_dir
from robot_rl.dashboard.server import STATIC, FeedClient, is_loopback, validate_control

log = logging.getLogger("robot_rl.dashboard")


class ControlLog:
    """Every operator command, accepted or refused, with its time: ``<run_dir>/dashboard/controls.jsonl``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = dashboard_dir(run_dir) / "controls.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, client: str, body: Any, status: int, reason: str) -> None:
        record = {"time": time.time(), "iso_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": client,
                  "request": body if isinstance(body, (dict, list, str, int, float, bool)) else repr(body),
                  "status": status, "reason": reason}
        (log.info if status < 400 else log.warning)("control from %s: %s -> %d %s", client, body, status, reason)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def make_app(run_dir: str | Path, token: str | None, status_hz: float = 2.0, frame_size: int = 240,
             feed: FeedClient | None = None):
    """The ASGI app. ``token=None`` serves without a token (loopback only: checked by :func:`serve`)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    feed = feed or FeedClient(run_dir, frame_size)
    controls = ControlLog(run_dir)
    page = (STATIC / "index.html").read_text()

    def refused(request: Request) -> Response | None:
        """None when the request carries the token; else 401 (none given) or 403 (wrong)."""
        if token is None:
            return None
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            return PlainTextResponse("401: this dashboard needs its access token (printed when it started, and in "
                                     "run_dir/dashboard/url.txt): open /?token=...", status_code=401)
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("wrong dashboard token from %s", request.client.host if request.client else "?")
            return PlainTextResponse("403: wrong access token", status_code=403)
        return None

    async def index(request: Request) -> Response:
        return refused(request) or Response(page, media_type="text/html", headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
            # this origin only: nothing is fetched from elsewhere (no CDN), and no other site may frame the page
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                       "style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"})

    def snapshot() -> dict[str, Any]:
        frames = {f"{a}/{c}": steps for (a, c), (_, steps) in list(feed.frames.items())}
        return {"live": feed.live, "status": feed.status, "frames": frames, "run_dir": str(run_dir),
                "server_time": time.time()}

    async def state(request: Request) -> Response:
        return refused(request) or JSONResponse(snapshot())

    async def events(request: Request) -> Response:
        denied = refused(request)
        if denied:
            return denied

        async def stream():
            while True:
                if await request.is_disconnected():
                    return
                yield f"data: {json.dumps(snapshot())}\n\n"
                await asyncio.sleep(1.0 / max(status_hz, 0.1))

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def frame(request: Request) -> Response:
        denied = refused(request)
        if denied:
            return denied
        key = (request.path_params["actor_id"], request.path_params["camera"])
        item = feed.frames.get(key)
        if item is None:
            return PlainTextResponse(f"404: no frame from {key[0]}/{key[1]} (yet)", status_code=404)
        return Response(item[0], media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def control(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        denied = refused(request)
        if denied:
            controls.write(client, "(refused before reading)", denied.status_code, "token")
            return denied
        raw = await request.body()
        try:
            body = json.loads(raw) if len(raw) <= 4096 else None
        except ValueError:
            body = None
        if body is None:
            reason = "the body is not JSON" if len(raw) <= 4096 else "the body is over 4096 bytes"
            controls.write(client, raw[:200].decode(errors="replace"), 400, reason)
            return JSONResponse({"ok": False, "error": reason}, status_code=400)
        command, code, reason = validate_control(body, feed.status if feed.live else None)
        if command is not None and not feed.send(command):
            command, code, reason = None, 503, "the learner's control socket is not reachable"
        controls.write(client, body, code, reason)
        if command is None:
            return JSONResponse({"ok": False, "error": reason}, status_code=code)
        return JSONResponse({"ok": True, "action": command.action, "actor_id": command.actor_id,
                             "issued_at": command.issued_at}, status_code=code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ARG001
        yield
        feed.close()

    app = Starlette(routes=[Route("/", index), Route("/api/state", state), Route("/events", events),
                            Route("/frame/{actor_id}/{camera}.jpg", frame),
                            Route("/api/control", control, methods=["POST"])], lifespan=lifespan)
    app.state.feed = feed
    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, require_token: bool = True,
          status_hz: float = 2.0, frame_size: int = 240) -> int:
    """Run the server until Ctrl-C / SIGTERM. Prints the URL with the token; writes it to ``url.txt`` (0600)."""
    import uvicorn

    if not require_token and not is_loopback(host):
        raise SystemExit(f"refusing to serve on {host} without an access token: only a loopback server may run "
                         "with --no-token (use ssh -L to reach it from elsewhere)")
    token = (os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)) if require_token else None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise SystemExit(f"cannot serve the dashboard on {host}:{port} ({exc}): set --port "
                         "(dashboard.port) to a free one, or 0 for any") from None
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    app = make_app(run_dir, token, status_hz, frame_size)
    out = dashboard_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    url_file = out / URL_FILE
    fd = os.open(url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    server_file = out / "server.json"  # who serves this run (no token): tools and tests find the process here
    server_file.write_text(json.dumps({"pid": os.getpid(), "host": host, "port": port, "started_at": time.time()}))
    print(f"robot-rl dashboard for {run_dir}: {url}", flush=True)
    print("  on a robot cell: ssh -L {0}:127.0.0.1:{0} USER@CELL, then open the URL above here".format(port),
          flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, access_log=False)

    def exit_on_sigterm(signum, frame):  # noqa: ARG001  (uvicorn re-raises the signal after its own shutdown)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        url_file.unlink(missing_ok=True)
        server_file.unlink(missing_ok=True)
    return 0
