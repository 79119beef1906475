"""The safety layer below the policy and the ROS-free observation code (fast; no ROS needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_rl.hardware.ros2.config import RobotNodeConfig, TwinNodeConfig, from_params, load_params_file
from robot_rl.images import CameraConfig, ImageError, prepare_frame
from robot_rl.hardware.ros2.safety import Guard, RateLimitedLog, TargetLimiter, limiter_for
from robot_rl.hardware.ros2.sensors import (SensorCache, Sample, angular_velocity, assemble_state, camera_configs,
                                            camera_image,
                                            checked_joint_state, checked_pose, compose_chain, image_to_array,
                                            panda_obs_spec, quat_mul)

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


def limiter(**kw) -> TargetLimiter:
    args = dict(low=np.array([0.0, -1.0, 0.0]), high=np.array([1.0, 1.0, 1.0]), max_speed=0.5, max_accel=5.0,
                dt=0.1, max_lead=0.2)
    args.update(kw)
    return TargetLimiter(**args)


def test_snapshot_and_restore_apply_the_limits_once_to_the_command_that_goes_out() -> None:
    """The safety node prepares a command ahead of its deadline and, when a target comes in between, computes it
    again from the limiter's state before the prepared one: the command sent must equal one limiter step from
    that state, as if the prepared command had never been computed (speed and acceleration applied once)."""
    lim, reference = limiter(), limiter()
    for lm in (lim, reference):
        lm.reset(np.array([0.5, 0.0, 0.5]))
        for _ in range(3):  # moving at some speed in +x
            lm(np.array([0.9, 0.0, 0.5]), measured=lm.target)
    before = lim.snapshot()
    prepared = lim(np.array([0.9, 0.0, 0.5]), measured=lim.target)  # towards the old target...
    lim.restore(before)  # ...then a target in -x came before the deadline
    sent = lim(np.array([0.1, 0.0, 0.5]), measured=lim.target)
    expected = reference(np.array([0.1, 0.0, 0.5]), measured=reference.target)
    np.testing.assert_array_equal(sent, expected)
    np.testing.assert_array_equal(lim.step, reference.step)
    assert prepared[0] > sent[0]
    # a hold in the prepared command is undone too: its anchor, holding flag and counters
    before = lim.snapshot()
    lim.hold(np.array([np.nan, 0.0, 0.5]))
    assert lim.holding and lim.bad_measured == 1
    lim.restore(before)
    assert not lim.holding and lim.bad_measured == 0
    np.testing.assert_array_equal(lim(np.array([0.1, 0.0, 0.5]), measured=lim.target),
                                  reference(np.array([0.1, 0.0, 0.5]), measured=reference.target))
    # restoring hands back copies: changing the limiter later does not change the snapshot
    before = lim.snapshot()
    lim(np.array([0.1, 0.0, 0.5]), measured=lim.target)
    lim.restore(before)
    lim.restore(before)
    np.testing.assert_array_equal(lim.target, before[0])


def test_box_speed_and_acceleration_limits() -> None:
    lim = limiter()
    lim.reset(np.array([0.5, 0.0, 0.5]))
    steps, prev = [], np.array([0.5, 0.0, 0.5])
    for _ in range(20):  # ask for a jump far outside the box
        t = lim(np.array([5.0, 0.0, 0.5]), measured=prev)
        steps.append(t - prev)
        prev = t
        assert (t >= lim.low).all() and (t <= lim.high).all()
    steps = np.array(steps)
    assert np.abs(steps).max() <= 0.05 + 1e-12                     # 0.5 m/s * 0.1 s
    assert np.abs(np.diff(steps, axis=0)).max() <= 0.05 + 1e-12    # 5 m/s^2 * 0.1 s^2 per step
    assert steps[0, 0] == pytest.approx(0.05)                     # accelerates from rest at the limit
    assert prev[0] == pytest.approx(1.0)                           # ends clipped at the box wall


def test_lead_limit_stops_windup_against_an_obstacle() -> None:
    lim = limiter(max_speed=10.0, max_accel=1e3)
    lim.reset(np.array([0.5, 0.0, 0.5]))
    blocked = np.array([0.5, 0.0, 0.5])  # the hand does not move
    for _ in range(10):
        t = lim(np.array([0.5, 0.0, 0.0]), measured=blocked)
    assert t[2] == pytest.approx(0.3)  # never more than max_lead below the measured TCP


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0]), np.array([0, np.inf, 0]), np.zeros(2)])
def test_non_finite_or_malformed_targets_hold(bad: np.ndarray) -> None:
    lim = limiter()
    start = lim.reset(np.array([0.5, 0.0, 0.5]))
    moved = lim(np.array([0.6, 0.0, 0.5]), measured=start)
    held = lim(bad, measured=start)   # a hold: back towards the measured pose, at most one max_step
    assert np.isfinite(held).all() and lim.refused == 1 and lim.holding
    assert np.abs(held - moved).max() <= lim.max_step + 1e-12 and np.allclose(held, start)
    with pytest.raises(ValueError):
        lim.reset(np.array([np.nan, 0.0, 0.0]))


def test_hold_outside_the_box_moves_towards_the_hand_not_to_the_box_edge() -> None:
    """Regression: hold() used to clip the measured pose into the box, a jump of any size to the box edge."""
    lim = limiter()  # box x in [0, 1], max_step 0.05, max_lead 0.2
    first = lim.hold(np.array([1.5, 0.0, 0.5]))  # no command yet: command where the hand is, even outside
    assert np.allclose(first, [1.5, 0.0, 0.5])
    lim.reset(np.array([1.1, 0.0, 0.5]))  # the hand rests outside the box: the command starts there too
    hand = np.array([1.22, 0.0, 0.5])  # it drifted on (within max_lead + max_step of the command)
    previous, commands = np.array([1.1, 0.0, 0.5]), []
    for _ in range(5):
        commands.append(lim.hold(hand))
        assert np.abs(commands[-1] - previous).max() <= lim.max_step + 1e-12
        previous = commands[-1]
    assert commands[0][0] == pytest.approx(1.15) and np.allclose(commands[-1], hand)  # reached at max speed
    assert lim.hold(np.array([1.0, 0.0, 0.5]))[0] == pytest.approx(1.22)  # anchored: it does not chase the arm


def test_a_hold_does_not_follow_an_implausible_measurement() -> None:
    lim = limiter()
    start = lim.reset(np.array([0.5, 0.0, 0.5]))
    for glitch in (np.array([50.0, 0.0, 0.5]), np.array([0.5, 0.0, 0.5]) + 0.3):  # > max_lead + max_step away
        lim(np.array([0.5, 0.0, 0.5]), measured=start)  # end the previous hold
        for _ in range(5):
            assert np.allclose(lim.hold(glitch), start)  # stays put


def test_reset_outside_the_box_reenters_at_max_speed() -> None:
    """Regression: reset() clipped into the box, so the first command jumped from the hand to the box edge."""
    lim = limiter(max_lead=1.0)
    hand = np.array([-0.5, 0.0, 0.5])  # x below the box [0, 1]
    assert np.allclose(lim.reset(hand), hand)
    previous = hand
    for _ in range(30):
        t = lim(np.array([0.5, 0.0, 0.5]), measured=previous)
        assert np.abs(t - previous).max() <= lim.max_step + 1e-12 and t[0] >= previous[0]
        previous = t
    assert previous[0] == pytest.approx(0.5)


def test_box_clip_never_undoes_the_lead_limit() -> None:
    """Regression: lead clip then box clip moved the target from near a hand outside the box to the box edge in
    one step, i.e. away from the hand faster than max_speed."""
    lim = limiter()  # lead 0.2
    hand = np.array([-0.5, 0.0, 0.5])
    lim.reset(hand)
    t = lim(np.array([0.5, 0.0, 0.5]), measured=hand)  # towards the box, but the hand is blocked outside it
    assert t[0] == pytest.approx(-0.45)
    for _ in range(10):
        t = lim(np.array([0.5, 0.0, 0.5]), measured=hand)
    assert t[0] == pytest.approx(-0.3)  # stops max_lead from the hand: never at the box edge 0.0
    hand = np.array([-1.0, 0.0, 0.5])  # the hand is pushed further away: the target may follow, never jump
    t2 = lim(np.array([0.5, 0.0, 0.5]), measured=hand)
    assert t2[0] == pytest.approx(-0.3)  # it may not move away from the hand (nor jump to it)


def test_joint_modes_have_a_lead_limit() -> None:
    cfg = from_params(RobotNodeConfig, {"command.mode": "forward_position", "control_hz": 10.0,
                                        "safety.max_joint_lead": 0.15})
    lim = limiter_for(cfg)
    blocked = np.array(cfg.home_joints)  # every joint stuck at home
    lim.reset(blocked)
    for _ in range(20):
        t = lim(blocked + 1.0, measured=blocked)
    assert np.abs(t - blocked).max() == pytest.approx(0.15)
    with pytest.raises(ValueError, match="max_joint_lead"):
        from_params(RobotNodeConfig, {"safety.max_joint_lead": 0.0})


def test_guard_estop_latch_stale_and_watchdog() -> None:
    now = [0.0]
    guard = Guard(watchdog_timeout_s=0.3, clock=lambda: now[0])
    assert guard.hold_reason([]) is None
    assert guard.set_estop(True) and not guard.set_estop(True)  # latches once
    assert guard.hold_reason([]) == "estop"
    ok, why = guard.reset_estop()
    assert not ok and "still active" in why and guard.hold_reason([]) == "estop"  # pressed: no reset
    guard.set_estop(False)
    assert guard.hold_reason([]) == "estop"  # regression: a False on the topic released the latch
    now[0] = 2.0
    ok, why = guard.reset_estop()
    assert ok and "2.0 s" in why and guard.hold_reason([]) is None
    assert guard.reset_estop() == (True, "e-stop was not latched")
    assert guard.hold_reason(["images/front (missing)"]) == "stale: images/front (missing)"
    assert not guard.watchdog_expired()  # not armed before the first action
    guard.action_arrived()
    now[0] = 2.2
    assert not guard.watchdog_expired()
    now[0] = 2.6
    assert guard.watchdog_expired() and not guard.watchdog_expired()  # reported once per stall
    assert guard.counts == {"estop": 1, "estop_reset": 1, "stale": 1, "watchdog": 1, "non_finite": 0,
                            "bad_sensor": 0, "callback_error": 0}


def test_sensor_cache_reports_missing_and_stale() -> None:
    now = [10.0]
    cache = SensorCache(["joint_states", "images/front"], clock=lambda: now[0], stamp_clock=lambda: 1000.0)
    assert cache.stale(0.25) == ["joint_states (missing)", "images/front (missing)"]
    cache.put("joint_states", 1)
    cache.put("images/front", 2, 0.0)  # a zero header stamp: judged on arrival
    now[0] = 10.1
    assert cache.stale(0.25) == []
    now[0] = 10.4
    assert cache.stale(0.25) == ["joint_states (400 ms old)", "images/front (400 ms old)"]


def test_staleness_uses_the_header_stamp() -> None:
    """Regression: a driver re-sending old data (fresh arrival, old stamp) counted as fresh."""
    now, ros_now = [10.0], [1000.0]
    cache = SensorCache(["joint_states"], clock=lambda: now[0], stamp_clock=lambda: ros_now[0])
    cache.put("joint_states", 1, 999.5)  # arrives now, but measured 500 ms ago
    assert cache.stale(0.25) == ["joint_states (500 ms old by its header stamp)"]
    cache.put("joint_states", 1, 999.9)
    assert cache.stale(0.25) == []
    cache.put("joint_states", 1, 1005.0)  # stamped in the future (sender's clock ahead): arrival still counts
    now[0] = 10.5
    assert cache.stale(0.25) == ["joint_states (500 ms old)"]


def test_non_finite_sensor_values_are_rejected() -> None:
    names = ["j1", "j2", "other"]
    assert checked_joint_state(names, [0.1, 0.2, np.nan], ["j1", "j2"])[0] == names  # unused joint may be NaN
    with pytest.raises(ValueError, match="j2"):
        checked_joint_state(names, [0.1, np.inf, 0.0], ["j1", "j2"])
    with pytest.raises(KeyError, match="j3"):
        checked_joint_state(names, [0.1, 0.2, 0.0], ["j1", "j3"])
    with pytest.raises(ValueError, match="names"):
        checked_joint_state(names, [0.1, 0.2], ["j1"])
    pos, quat = checked_pose(np.array([0.5, 0, 0.3]), np.array([0.0, 1.0, 0, 0]))
    assert np.allclose(pos, [0.5, 0, 0.3])
    for bad_pos, bad_quat in ((np.array([np.nan, 0, 0]), np.array([1.0, 0, 0, 0])),
                              (np.zeros(3), np.array([1.0, np.inf, 0, 0])), (np.zeros(3), np.zeros(4))):
        with pytest.raises(ValueError):
            checked_pose(bad_pos, bad_quat)


def test_rate_limited_log_says_how_many_it_suppressed() -> None:
    now, lines = [0.0], []
    warn = RateLimitedLog(lines.append, 1.0, clock=lambda: now[0])
    assert warn("a", "first") and not warn("a", "again") and warn("b", "other topic")
    now[0] = 1.5
    warn("a", "later")
    assert lines == ["first", "other topic", "later (1 similar suppressed)"]


def test_images_decode_crop_and_resize() -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    padded = np.concatenate([rgb, np.zeros((4, 2, 3), np.uint8)], axis=1)  # row step with padding
    assert np.array_equal(image_to_array("rgb8", 4, 6, 8 * 3, padded.tobytes()), rgb)
    assert np.array_equal(image_to_array("bgr8", 4, 6, 18, rgb[..., ::-1].tobytes()), rgb)
    mono = rgb[..., 0]
    assert np.array_equal(image_to_array("mono8", 4, 6, 6, mono.tobytes()), np.repeat(mono[..., None], 3, 2))
    with pytest.raises(ValueError, match="mono16"):
        image_to_array("mono16", 4, 6, 12, bytes(48))
    small = camera_image(rgb, CameraConfig(size=(2, 2)), "front")
    assert small.shape == (2, 2, 3) and small.flags.c_contiguous
    # centre crop (columns 1..4), then each 2x2 cell averaged (OpenCV INTER_AREA, robot_rl.images.prepare_frame)
    crop = rgb[:, 1:5].astype(np.float64)
    assert np.array_equal(small[0, 0], np.floor(crop[0:2, 0:2].mean((0, 1)) + 0.5).astype(np.uint8))
    assert np.array_equal(small[1, 1], np.floor(crop[2:4, 2:4].mean((0, 1)) + 0.5).astype(np.uint8))


def test_node_images_use_the_per_camera_crop_of_the_pixel_route() -> None:
    """``camera_crops`` (4 per camera, flattened) crop each camera's native frame before the resize, through
    ``robot_rl.images.prepare_camera``; a camera without one keeps the centre square; a crop that does not fit
    the frame is an ImageError (the node drops the frame, the camera goes stale)."""
    cfg = from_params(RobotNodeConfig, {"image_size": 8, "camera_crops": [10, 4, 32, 24, 0, 0, 48, 48]})
    cams = camera_configs(cfg)
    assert cams["front"].crop == (10, 4, 32, 24) and cams["wrist"].size == (8, 8)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(camera_image(frame, cams["front"], "front"),
                                  prepare_frame(frame, (10, 4, 32, 24), (8, 8)))
    default = camera_configs(from_params(RobotNodeConfig, {"image_size": 8}))["front"]
    np.testing.assert_array_equal(camera_image(frame, default, "front"), prepare_frame(frame, (8, 0, 48, 48), (8, 8)))
    with pytest.raises(ImageError, match="does not fit"):
        camera_image(frame[:20], cams["front"], "front")
    with pytest.raises(ValueError, match="4 \\(x, y, width, height\\)"):
        from_params(RobotNodeConfig, {"camera_crops": [0, 0, 10, 10]})


def test_tf_chain_and_velocity_estimates() -> None:
    rot_z90 = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    edges = {"link1": ("base", np.array([1.0, 0, 0]), rot_z90), "tcp": ("link1", np.array([1.0, 0, 0]),
                                                                       np.array([1.0, 0, 0, 0]))}
    pos, quat = compose_chain(edges, "base", "tcp")
    assert np.allclose(pos, [1.0, 1.0, 0.0]) and np.allclose(quat, rot_z90)
    with pytest.raises(KeyError, match="stuck at 'nowhere'"):
        compose_chain({"tcp": ("nowhere", np.zeros(3), np.array([1.0, 0, 0, 0]))}, "base", "tcp")
    q0 = np.array([0.0, 1.0, 0.0, 0.0])
    small = np.array([np.cos(0.05), 0, 0, np.sin(0.05)])  # 0.1 rad about z
    assert np.allclose(angular_velocity(q0, quat_mul(small, q0), 0.1), [0, 0, 1.0])


def test_state_has_the_twins_layout() -> None:
    arm = [f"j{i}" for i in range(7)]
    joints = (["f1", *arm, "f2"], np.array([0.01, *range(7), 0.02], float))
    prev = Sample((np.array([0.5, 0.0, 0.2]), np.array([0.0, 1.0, 0.0, 0.0])), 1.0, 1.0)
    pose = Sample((np.array([0.5, 0.1, 0.2]), np.array([0.0, -1.0, 0.0, 0.0])), 1.1, 1.1)
    state = assemble_state(joints, pose, prev, arm, ["f1", "f2"])
    spec = panda_obs_spec(["front"], 8)
    spec.fields["state"].check("state", state)
    assert np.allclose(state[3:7], [0, 1, 0, 0])      # sign made continuous around the home orientation
    assert np.allclose(state[7:10], [0, 1.0, 0])      # finite-difference linear velocity (m/s)
    assert state[13] == pytest.approx(0.03) and np.allclose(state[14:], range(7))
    with pytest.raises(KeyError, match="j6"):
        assemble_state((arm[:6], np.zeros(6)), pose, None, arm, [])


def test_parameter_files_load_strictly() -> None:
    cfg = load_params_file(LAUNCH / "config" / "real.yaml", "robot_rl_actor", RobotNodeConfig)
    assert cfg.command.mode == "cartesian_pose" and cfg.topics.cameras == ("front", "wrist")
    assert cfg.qos.sensor_reliability == "best_effort" and cfg.qos.command_reliability == "reliable"
    twin = load_params_file(LAUNCH / "config" / "sim.yaml", "robot_rl_twin", TwinNodeConfig)
    assert twin.topics.camera_topics == cfg.topics.camera_topics and twin.topics.command == cfg.topics.command
    with pytest.raises(KeyError, match="contro_hz"):
        from_params(RobotNodeConfig, {"contro_hz": 10.0})
    with pytest.raises(TypeError, match="control_hz"):
        from_params(RobotNodeConfig, {"control_hz": "fast"})
    with pytest.raises(ValueError, match="command.mode"):
        from_params(RobotNodeConfig, {"command.mode": "torque"})
    with pytest.raises(ValueError, match="camera_topics"):
        from_params(RobotNodeConfig, {"topics.cameras": ["a", "b"], "topics.camera_topics": ["/a"]})
