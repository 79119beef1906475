"""The dashboard without a browser: a real learner (ZeroMQ transport + feed), a real actor client, the real app.

An operator's command goes page -> app -> learner feed -> learner transport -> actor (wire ``Control``); the
actor's figures come back actor -> learner (wire ``ActorStatus``) -> feed -> app. Bad requests are refused with a
reason, the token is checked, and the feed never blocks when nobody (or a stuck dashboard) listens.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

pytest.importorskip("starlette", reason="the dashboard extra is not installed (pip install robot-rl[dashboard])")
from starlette.testclient import TestClient  # noqa: E402

from robot_rl.config import config_hash, load_config  # noqa: E402
from robot_rl.dashboard.app import make_app, serve  # noqa: E402
from robot_rl.dashboard.protocol import (FEED_VERSION, FeedControl, FeedError, FeedStatus, decode_frame,  # noqa: E402
                                         encode_frame)
from robot_rl.dashboard.server import FeedClient, jpeg  # noqa: E402
from robot_rl.learner import Learner  # noqa: E402
from robot_rl.transport import wire  # noqa: E402
from robot_rl.transport.zmq_actor import ZmqActorClient  # noqa: E402
from robot_rl.sim.point_reach import PointReach, PointReachConfig  # noqa: E402
from robot_rl.types import Batch  # noqa: E402
from support import rollout  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
TOKEN = "s3cret-token"


def _status(**changes) -> wire.ActorStatus:
    base = dict(steps=10, steps_per_s=5.0, episodes=1, success_rate=1.0, intervention_rate=0.25, operator_s=3.0,
                pending_bytes=100, spilled=0, weights_version=1, paused=False, hil="none", safety_event="",
                safety_event_at=0.0)
    return wire.ActorStatus(**{**base, **changes})


def _wait(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """Learner (zmq transport + dashboard feed, no update loop) + two actor clients + the app over the feed."""
    from support import free_ports

    p1, p2 = free_ports(2)
    run_dir = tmp_path_factory.mktemp("dash") / "run"
    cfg = load_config(["env=point_reach", "env.obs=pixels", "env.image_size=16", "policy.encoder=drq", "algo=sac",
                       f"run_dir={run_dir}",
                       "logger.wandb=disabled", f"transport.transitions_port={p1}", f"transport.weights_port={p2}",
                       "dashboard.status_hz=10", "dashboard.frame_hz=10"])
    learner = Learner(cfg)
    learner.transport.start()
    learner.dashboard_feed.start()
    actors = {name: ZmqActorClient(cfg.transport, name, learner.obs_spec, learner.action_spec, learner.spec_hash,
                                   config_hash(cfg)) for name in ("actor-0", "actor-1")}
    actors["actor-0"].report_status(_status(hil="virtual"))
    actors["actor-1"].report_status(_status(hil="none", safety_event="hold: gamepad disconnected",
                                            safety_event_at=time.time()))
    from robot_rl.sim.point_reach import PointReach, PointReachConfig

    env = PointReach(PointReachConfig(obs="pixels", image_size=16))
    for tr in rollout(env, 40, actor_id="actor-0"):  # frames come from the transitions the learner ingests
        actors["actor-0"].send(tr)
    assert actors["actor-0"].wait_acked(15)
    feed = FeedClient(run_dir, frame_size=240)
    client = TestClient(make_app(run_dir, TOKEN, status_hz=10, feed=feed))
    with client:
        _wait(lambda: feed.live and len(feed.status["fleet"]) == 2
              and all(a["status"] for a in feed.status["fleet"]), what="both actors in the feed")
        yield {"learner": learner, "actors": actors, "client": client, "feed": feed, "run_dir": run_dir}
    for actor in actors.values():
        actor.close()
    learner.close()


def _post(client, body, token=TOKEN):
    return client.post("/api/control", content=body if isinstance(body, (bytes, str)) else None,
                       json=None if isinstance(body, (bytes, str)) else body,
                       headers={"Authorization": f"Bearer {token}"} if token is not None else {})


def test_token_is_required_and_checked(rig):
    client = rig["client"]
    assert client.get("/").status_code == 401
    wrong = client.get("/?token=nope")
    assert wrong.status_code == 403 and "wrong access token" in wrong.text
    assert client.get("/api/state", headers={"Authorization": "Bearer nope"}).status_code == 403
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "e-stop stays in hardware and ROS" in page.text
    assert _post(client, {"action": "pause", "actor_id": "actor-0"}, token="nope").status_code == 403
    with pytest.raises(SystemExit, match="without an access token"):
        serve(rig["run_dir"], host="0.0.0.0", port=0, require_token=False)


def test_status_frames_and_fleet_reach_the_page(rig):
    state = rig["client"].get(f"/api/state?token={TOKEN}").json()
    fleet = {a["actor_id"]: a for a in state["status"]["fleet"]}
    assert fleet["actor-0"]["status"]["intervention_rate"] == 0.25 and fleet["actor-0"]["connected"]
    assert fleet["actor-1"]["status"]["safety_event"] == "hold: gamepad disconnected"
    assert state["status"]["env_steps"] == 40 and state["status"]["reward_alarms"] is None  # no learned reward
    assert state["status"]["critic_alarms"] == []  # SAC has the critic check; nothing raised
    assert "actor-0/top" in state["frames"] and not any(k.startswith("actor-1/") for k in state["frames"])
    img = rig["client"].get(f"/frame/actor-0/top.jpg?token={TOKEN}")
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"  # a JPEG
    assert rig["client"].get(f"/frame/actor-1/top.jpg?token={TOKEN}").status_code == 404


def test_a_critic_alarm_reaches_the_page(rig):
    """The learner's critic check (robot_rl.value_check) raises an over-estimation alarm: the dashboard lists it
    (before the tests that stop the rig's feed; the learner keeps the alarm for the rest of the module)."""
    learner = rig["learner"]
    rows = rollout(PointReach(PointReachConfig(obs="pixels", image_size=16)), 60, actor_id="actor-9")
    learner.value_check.observe(Batch.from_transitions(rows))  # finished episodes of a pixel twin (replay form)
    assert learner.value_check.finished, "the rollout finished no episode"
    learner.value_check.check(lambda b: np.full(len(b), 50.0), lambda b: b.reward)  # Q 50 vs returns <= 1
    state = _wait(lambda: (s := rig["client"].get(f"/api/state?token={TOKEN}").json())["status"]["critic_alarms"]
                  and s, what="the critic alarm on the page")
    assert "critic over-estimation" in state["status"]["critic_alarms"][-1]


@pytest.mark.parametrize("body, code, reason", [
    (b"{not json", 400, "not JSON"),
    ([1, 2], 400, "JSON object"),
    ({"action": "jump", "actor_id": "actor-0"}, 400, "action must be one of"),
    ({"action": "pause"}, 400, "needs an actor_id"),
    ({"action": "pause", "actor_id": 7}, 400, "must be a string"),
    ({"action": "pause", "actor_id": "actor-0", "force": True}, 400, "unknown field"),
    ({"action": "stop", "actor_id": "actor-0"}, 400, "whole run"),
    ({"action": "pause", "actor_id": "robot-9"}, 404, "no actor 'robot-9'"),
    ({"action": "label_success", "actor_id": "actor-1"}, 409, "without an operator"),
])
def test_malformed_controls_are_refused_with_a_reason(rig, body, code, reason):
    reply = _post(rig["client"], body)
    assert reply.status_code == code and reason in reply.json()["error"]
    logged = (rig["run_dir"] / "dashboard" / "controls.jsonl").read_text().splitlines()[-1]
    assert f'"status": {code}' in logged and '"time": ' in logged  # every command is on record with its time


def test_controls_travel_to_the_actor_over_the_wire(rig):
    actor = rig["actors"]["actor-0"]
    actor.poll_controls()
    for action in ("pause", "resume", "label_failure"):
        reply = _post(rig["client"], {"action": action, "actor_id": "actor-0"})
        assert reply.status_code == 202, reply.text
    got = []
    _wait(lambda: got.extend(actor.poll_controls()) or len(got) >= 3, what="three controls at the actor")
    assert [c.action for c in got] == ["pause", "resume", "label_failure"]
    assert all(abs(c.issued_at - time.time()) < 30 for c in got)
    assert rig["actors"]["actor-1"].poll_controls() == []  # addressed to actor-0 only


def test_stop_reaches_the_learner(rig):
    assert not rig["learner"]._stop.is_set()
    assert _post(rig["client"], {"action": "stop"}).status_code == 202
    _wait(lambda: rig["learner"]._stop.is_set(), what="the learner's stop flag")
    _wait(lambda: rig["feed"].status["stopping"], what="the page to show the run stopping")


def test_messages_are_versioned_and_validated():
    control = wire.Control("pause", 12.5)
    kind, header = wire.unpack_header(control.encode()[0])
    assert kind is wire.Msg.CONTROL and wire.Control.decode(header) == control
    with pytest.raises(wire.WireError, match="unknown action"):
        wire.Control.decode({**header, "action": "self_destruct"})
    status = _status(steps_per_s=3.5)
    assert wire.ActorStatus.decode(wire.unpack_header(status.encode()[0])[1]) == status
    bad = wire.unpack_header(status.encode()[0])[1]
    with pytest.raises(wire.WireError, match="nan"):
        wire.ActorStatus.decode({**bad, "operator_s": float("nan")})
    with pytest.raises(wire.WireError, match="paused"):
        wire.ActorStatus.decode({**bad, "paused": "yes"})
    with pytest.raises(FeedError, match="feed version"):
        FeedControl.decode(FeedControl("stop", "", 1.0).encode().replace(b"\xa1v" + bytes([FEED_VERSION]),
                                                                         b"\xa1v\x09"))
    with pytest.raises(FeedError, match="unknown action"):
        FeedControl.decode(FeedControl("stop", "", 1.0).encode().replace(b"stop", b"nuke"))
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    actor, camera, decoded, steps = decode_frame(encode_frame("a", "front", image, 7))
    assert (actor, camera, steps) == ("a", "front", 7) and np.array_equal(decoded, image)
    with pytest.raises(FeedError, match="does not match"):
        decode_frame([encode_frame("a", "front", image, 7)[0], b"short"])
    small = jpeg(np.zeros((480, 640, 3), np.uint8), size=120)
    import cv2

    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape == (90, 120, 3)  # downsampled
    with pytest.raises(FeedError):
        FeedStatus.decode(FeedControl("stop", "", 1.0).encode())


def test_feed_never_blocks_without_a_reader(rig):
    """PUB with a small high-water mark: 2000 x 1 MB sends return at once whether nobody listens or a subscriber
    is connected and never reads; the stuck subscriber gets a bounded handful, the rest is dropped."""
    feed = rig["learner"].dashboard_feed
    feed._stop.set()  # this test is the socket's only user now (zmq sockets are single-threaded)
    feed._thread.join(5)
    payload = np.zeros((600, 600, 3), np.uint8)  # ~1 MB frames

    def flood(done):
        for i in range(2000):
            feed._send(encode_frame("flood", "cam", payload, i))
        done.set()

    nobody = threading.Event()  # no dashboard at all
    threading.Thread(target=flood, args=(nobody,), daemon=True).start()
    assert nobody.wait(60), "a feed send blocked with no dashboard"
    ctx = zmq.Context.instance()
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.rcvhwm = 4
    stuck.connect(feed.endpoints["status"])
    time.sleep(0.3)  # let it join, so the sends below really face a reader that does not read
    done = threading.Event()
    threading.Thread(target=flood, args=(done,), daemon=True).start()
    assert done.wait(60), "a feed send blocked with a dashboard that does not read"
    received = 0
    while stuck.poll(200):
        frames = stuck.recv_multipart()
        received += frames[0].find(b"flood") >= 0
    stuck.close(0)
    assert received < 200  # dropped at the high-water marks, not queued for the stuck reader

