"""Demos by hand (``robot-rl demos teleop=...``) through the real device readers: labels by key (reset throws the
episode away, failure is not saved, success is), the env's own success, the gripper by name, and a gamepad.

The keyboard is fed through a pipe and the gamepad through ``struct input_event`` records in a pipe, both read by
the device threads that read a terminal and ``/dev/input/event*``. The env is the README's third-party-style
LabReach (``tests/lab_reach_env.py``: nested Dict obs, ``info["succeed"]``)."""
from __future__ import annotations

import io
import os
import threading
import time

import numpy as np

import lab_reach_env  # noqa: F401  (registers LabReach-v0)
from robot_rl.config import load_config
from robot_rl.episode_store import EpisodeStore
from robot_rl.hardware.teleop.device import OperatorNotifier
from robot_rl.hardware.teleop.gamepad import ABS_CODES, EV_ABS, EV_KEY, EV_SYN, KEY_CODES, SYN_REPORT, Gamepad, \
    encode_events
from robot_rl.hardware.teleop.keyboard import Keyboard
from robot_rl.hardware.teleop.record import record_teleop_demos

ENV = ["env=gym", "env.module=lab_reach_env", "env.env_id=LabReach-v0", "env.success_key=succeed",
       "env.action_names=[dx,dy,dz,grip]", "env.control_hz=50", "+env.kwargs.horizon=400",
       "+env.kwargs.start_spread=0.05"]


def _wait_for(notifier: OperatorNotifier, text: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(text in m for m in notifier.history) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} (x{count}) in {notifier.history}")
        time.sleep(0.01)


def _record_in_thread(cfg, device, n, out, notifier):
    stats = {}
    thread = threading.Thread(target=lambda: stats.update(record_teleop_demos(cfg, n, out, device=device,
                                                                              notifier=notifier)), daemon=True)
    thread.start()
    return thread, stats


def test_keyboard_demos_labelled_by_key_and_by_the_env(tmp_path):
    cfg = load_config(["hil=keyboard", *ENV])
    read_fd, write_fd = os.pipe()
    d = cfg.hil.device
    keyboard = Keyboard("", fd=read_fd, keys=dict(d.keys), buttons=dict(d.buttons), key_timeout_s=d.key_timeout_s)
    notifier = OperatorNotifier(io.StringIO())
    thread, stats = _record_in_thread(cfg, keyboard, 2, tmp_path / "demos", notifier)
    try:
        _wait_for(notifier, "episode 1/2: drive")
        os.write(write_fd, b"r")  # reset: thrown away
        _wait_for(notifier, "thrown away (reset)")
        _wait_for(notifier, "episode 1/2: drive", 2)
        os.write(write_fd, b"\x1b[A")
        time.sleep(0.1)
        os.write(write_fd, b"f")  # failure: not saved
        _wait_for(notifier, "not saved: failure by operator")
        _wait_for(notifier, "episode 1/2: drive", 3)
        os.write(write_fd, b"s")  # the operator says success, wherever the gripper is
        _wait_for(notifier, "saved 1/2 (success by operator")
        _wait_for(notifier, "episode 2/2: drive")
        for _ in range(8):  # +x to the wall at the target's x (50 Hz: 0.1 per step), then close the gripper
            os.write(write_fd, b"\x1b[A")
            time.sleep(0.1)
        os.write(write_fd, b"g")
        _wait_for(notifier, "saved 2/2 (success by env")
        thread.join(10)
    finally:
        os.close(write_fd)
    assert not thread.is_alive()
    assert stats == {"episodes": 2, "successes": 2, "attempts": 4, "thrown_away": 1}
    by_operator, by_env = EpisodeStore(tmp_path / "demos").episodes()
    assert by_operator.success and by_operator.meta == {"source": "teleop", "device": "keyboard", "label": "success",
                                                        "label_source": "operator"}
    assert by_operator.reward[-1] == cfg.hil.success_reward and by_operator.terminated[-1]
    assert by_env.success and by_env.meta["label_source"] == "env" and by_env.terminated[-1]
    assert by_env.action[:, 0].max() == 1.0 and by_env.action[-1, 3] == 1.0 and by_env.action[0, 3] == -1.0
    assert by_env.frames["state"][-1, 1] > 0.85  # robot/pos x reached the target's x
    assert by_env.intervened.all() and by_env.meta["source"] == "teleop"


def test_gamepad_demo_drives_the_stick_and_labels_with_a_button(tmp_path):
    cfg = load_config(["hil=gamepad", *ENV])
    d = cfg.hil.device
    read_fd, write_fd = os.pipe()
    pad = Gamepad(fd=read_fd, axes=tuple(dict.fromkeys(d.axis_map)), buttons=dict(d.buttons),
                  abs_ranges={k: tuple(v) for k, v in d.abs_ranges.items()}, stale_timeout_s=10.0)
    notifier = OperatorNotifier(io.StringIO())
    thread, stats = _record_in_thread(cfg, pad, 1, tmp_path / "demos", notifier)
    try:
        _wait_for(notifier, "episode 1/1: drive")
        # Left stick pushed forward (ABS_Y at its minimum; axis_sign -1 makes it +x), RB closes the gripper.
        os.write(write_fd, encode_events([(EV_ABS, ABS_CODES["ABS_Y"], -32768), (EV_KEY, KEY_CODES["BTN_TR"], 1),
                                          (EV_SYN, SYN_REPORT, 0)]))
        time.sleep(0.3)
        os.write(write_fd, encode_events([(EV_KEY, KEY_CODES["BTN_SOUTH"], 1), (EV_SYN, SYN_REPORT, 0),
                                          (EV_KEY, KEY_CODES["BTN_SOUTH"], 0), (EV_SYN, SYN_REPORT, 0)]))
        _wait_for(notifier, "saved 1/1 (success by ")
        thread.join(10)
    finally:
        os.close(write_fd)
    assert stats["episodes"] == 1
    (episode,) = EpisodeStore(tmp_path / "demos").episodes()
    assert episode.meta["device"] == "gamepad" and episode.success
    np.testing.assert_allclose(episode.action[-1], [1.0, 0.0, 0.0, 1.0], atol=1e-5)
