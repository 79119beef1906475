"""An actor whose camera images have the wrong size or channel count is refused at the handshake, with a reason
that names the camera and both shapes."""
from __future__ import annotations

import time

from robot_rl.config import TransportConfig
from robot_rl.replay import ReplayBuffer
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.specs import spec_hash
from robot_rl.transport import wire
from robot_rl.transport.zmq_actor import ZmqActorClient
from robot_rl.transport.zmq_learner import ZmqLearnerServer
from support import rollout


def _wait(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_wrong_image_size_is_refused_at_the_handshake_with_the_reason(ports) -> None:
    learner_env = PointReach(PointReachConfig(obs="pixels", image_size=16))
    actor_env = PointReach(PointReachConfig(obs="pixels", image_size=24))  # a camera configured differently
    cfg = TransportConfig(transitions_port=ports[0], weights_port=ports[1], heartbeat_interval_s=0.1,
                          peer_timeout_s=1.0, resend_after_s=0.5)
    replay = ReplayBuffer(learner_env.obs_spec, learner_env.action_spec, 1000)
    server = ZmqLearnerServer(cfg, learner_env.obs_spec, learner_env.action_spec,
                              spec_hash(learner_env.obs_spec, learner_env.action_spec), "cfg",
                              lambda chunk: replay.add_batch(chunk.batch))
    server.start()
    client = ZmqActorClient(cfg, "cam24", actor_env.obs_spec, actor_env.action_spec,
                            spec_hash(actor_env.obs_spec, actor_env.action_spec), "cfg")
    try:
        for tr in rollout(actor_env, 40, actor_id="cam24"):
            client.send(tr)
        assert _wait(lambda: client.rejected_reason is not None)
        reason = client.rejected_reason
        assert "images/top: the actor sends (24, 24, 3) uint8, the learner expects (16, 16, 3) uint8" in reason
        assert "24x24 px instead of 16x16" in reason
        time.sleep(0.3)
        assert len(replay) == 0 and not client.connected  # nothing from a mismatched camera reached replay
    finally:
        client.close()
        server.close()


def test_wrong_channel_count_is_named_in_the_refusal() -> None:
    env = PointReach(PointReachConfig(obs="pixels", image_size=16))
    actor_obs = env.obs_spec.to_dict()
    actor_obs["images/top"] = {"shape": [16, 16, 1], "dtype": "uint8"}  # a mono camera driver
    hello = wire.Hello("mono", "inc", "another-hash", "cfg", actor_obs, env.action_spec.to_dict())
    reason = wire.handshake_mismatch(hello, spec_hash(env.obs_spec, env.action_spec), "cfg", env.obs_spec)
    assert reason is not None and "images/top: the actor sends (16, 16, 1) uint8" in reason
    assert "1 channels instead of 3" in reason
    missing = dict(env.obs_spec.to_dict())
    del missing["images/top"]
    hello = wire.Hello("blind", "inc", "another-hash", "cfg", missing, env.action_spec.to_dict())
    assert "images/top: the actor sends none" in wire.handshake_mismatch(hello, "h", "cfg", env.obs_spec)
