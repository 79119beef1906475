"""Teleop devices through their real input path: bytes in each device's own format, read by the same
thread/``os.read`` code that reads ``/dev/hidraw*``, ``/dev/input/event*`` and the terminal.

- SpaceMouse: HID input reports over an ``AF_UNIX/SOCK_SEQPACKET`` socket, which keeps report boundaries the
  way hidraw does (one report per ``read``); closing the peer ends the stream like an unplug.
- Gamepad: ``struct input_event`` records through a pipe (evdev is a byte stream of 24-byte records).
- Keyboard: key bytes and escape sequences typed into a pseudo-terminal (cbreak mode is set on it).
"""
from __future__ import annotations

import io
import os
import pty
import socket
import struct
import time
from types import SimpleNamespace

import numpy as np
import pytest

from robot_rl.hardware.teleop.device import OperatorNotifier
from robot_rl.hardware.teleop.discovery import find_gamepads, find_spacemice
from robot_rl.hardware.teleop.gamepad import (ABS_CODES, EV_ABS, EV_KEY, EV_SYN, KEY_CODES, SYN_DROPPED, SYN_REPORT,
                                              Gamepad, encode_events)
from robot_rl.hardware.teleop.keyboard import Keyboard
from robot_rl.hardware.teleop.operator import DeviceOperator
from robot_rl.hardware.teleop.spacemouse import SpaceMouse
from robot_rl.specs import ActionSpec

PANDA_ACTIONS = ActionSpec((4,), (-1.0,) * 4, (1.0,) * 4, ("dx", "dy", "dz", "grip"))


def device_cfg(**kw):
    base = dict(dead_zone=0.1, axis_map=("x", "y", "z"), axis_sign=(1.0, 1.0, 1.0), scale=(1.0, 1.0, 1.0),
                buttons={}, intervene_mode="hold", motion_hold_s=0.5, stale_timeout_s=0.3)
    base.update(kw)
    return SimpleNamespace(**base)


def wait_until(pred, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


def report(report_id: int, *values: int) -> bytes:
    return bytes([report_id]) + struct.pack(f"<{len(values)}h", *values)


# ---------------------------------------------------------------------------------------------- SpaceMouse
@pytest.fixture
def hid_pair():
    device_end, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield device_end, host_end
    for s in (device_end, host_end):
        s.close()


def test_spacemouse_split_reports_map_to_an_end_effector_delta(hid_pair):
    device_end, host_end = hid_pair
    mouse = SpaceMouse(fd=host_end.fileno(), buttons={"grip": "0", "intervene": "1"}).start()
    cfg = device_cfg(axis_map=("y", "x", "z"), axis_sign=(-1.0, -1.0, -1.0), intervene_mode="motion",
                     buttons={"grip": "0", "intervene": "1"})
    op = DeviceOperator(mouse, cfg, PANDA_ACTIONS, OperatorNotifier(io.StringIO()))
    try:
        device_end.send(report(1, 175, -350, 20))  # right half-way, fully forward, a push inside the dead zone
        device_end.send(report(2, 10, -20, 30))
        wait_until(lambda: mouse.reports >= 2)
        assert mouse.combined_reports is False
        state = mouse.snapshot()
        assert state.axes["x"] == pytest.approx(0.5) and state.axes["y"] == pytest.approx(-1.0)
        assert state.axes["rz"] == pytest.approx(30 / 350)
        cmd = op.command(None, np.zeros(4, np.float32), np.array([0, 0, 0, 1.0], np.float32))
        assert cmd.active  # motion mode: deflection takes over
        # forward (-y) -> +x; right (+x) -> -y, rescaled past the dead zone; z inside the dead zone -> 0;
        # the gripper starts closed because the robot was closing it when the person took over
        np.testing.assert_allclose(cmd.action, [1.0, -(0.5 - 0.1) / 0.9, 0.0, 1.0], atol=1e-6)
        device_end.send(bytes([3, 0b01]))  # left button down: gripper toggles open
        device_end.send(bytes([3, 0b00]))
        device_end.send(report(1, 0, 0, 0))
        wait_until(lambda: mouse.reports >= 5)
        cmd = op.command(None, np.zeros(4, np.float32), cmd.action)
        assert cmd.active and cmd.action[3] == -1.0 and not cmd.action[:3].any()
    finally:
        mouse.close()


def test_spacemouse_combined_reports_and_unknown_report_ids(hid_pair):
    device_end, host_end = hid_pair
    mouse = SpaceMouse(fd=host_end.fileno()).start()
    try:
        device_end.send(report(1, -350, 0, 350, 35, -70, 350))  # newer device: 6 axes in one report
        device_end.send(bytes([0x17, 0x64]))  # battery level report of the wireless models
        wait_until(lambda: mouse.reports >= 2)
        axes = mouse.snapshot().axes
        assert mouse.combined_reports is True
        assert [axes[a] for a in ("x", "y", "z", "rx", "ry", "rz")] == pytest.approx([-1, 0, 1, 0.1, -0.2, 1])
    finally:
        mouse.close()


def test_spacemouse_that_goes_silent_or_is_unplugged_holds_the_robot_and_tells_the_operator(hid_pair):
    device_end, host_end = hid_pair
    mouse = SpaceMouse(fd=host_end.fileno()).start()
    told = io.StringIO()
    notifier = OperatorNotifier(told)
    op = DeviceOperator(mouse, device_cfg(intervene_mode="motion", stale_timeout_s=0.2), PANDA_ACTIONS, notifier)
    try:
        for _ in range(5):  # deflected and streaming, as the device does while pushed
            device_end.send(report(1, 300, 0, 0))
            time.sleep(0.02)
        wait_until(lambda: mouse.reports >= 5)
        assert op.command(None, np.zeros(4), None).active
        last = mouse.snapshot().last_report
        held = wait_until(lambda: op.command(None, np.zeros(4), None).hold, timeout=1.0)
        detected_after = time.monotonic() - last
        assert "silent" in held and detected_after < 0.2 + 0.1  # within the deadline (+ one poll period)
        assert "robot HELD" in told.getvalue() and "\a" in told.getvalue()
        device_end.send(report(1, 300, 0, 0))  # it reports again: control resumes, the operator is told
        wait_until(lambda: not op.command(None, np.zeros(4), None).hold)
        assert "OK again" in notifier.history[-1]
        device_end.close()  # unplug
        held = wait_until(lambda: op.command(None, np.zeros(4), None).hold)
        assert "disconnected" in held and "end of stream" in held
        assert not mouse.snapshot().connected and mouse.snapshot().axes["x"] == 0.0
    finally:
        mouse.close()


# ------------------------------------------------------------------------------------------------- gamepad
def gamepad_frames(*frames):
    return b"".join(encode_events([*f, (EV_SYN, SYN_REPORT, 0)], t=time.time()) for f in frames)


def make_gamepad(fd, stale=0.3):
    ranges = {"ABS_X": (-32768, 32767), "ABS_Y": (-32768, 32767), "ABS_RY": (-32768, 32767)}
    buttons = {"intervene": "BTN_TL", "grip": "BTN_TR", "success": "BTN_SOUTH", "failure": "BTN_EAST"}
    pad = Gamepad(fd=fd, axes=("ABS_Y", "ABS_X", "ABS_RY"), buttons=buttons, abs_ranges=ranges,
                  stale_timeout_s=stale)
    cfg = device_cfg(axis_map=("ABS_Y", "ABS_X", "ABS_RY"), axis_sign=(-1.0, -1.0, -1.0), buttons=buttons,
                     dead_zone=0.15, stale_timeout_s=stale)
    return pad, cfg


def test_gamepad_input_events_hold_to_intervene_and_label():
    r, w = os.pipe()
    pad, cfg = make_gamepad(r)
    pad.start()
    op = DeviceOperator(pad, cfg, PANDA_ACTIONS, OperatorNotifier(io.StringIO()))
    try:
        stream = gamepad_frames([(EV_KEY, KEY_CODES["BTN_TL"], 1), (EV_ABS, ABS_CODES["ABS_Y"], -32768)])
        os.write(w, stream[:30])  # a record split across reads must still be parsed whole
        time.sleep(0.05)
        os.write(w, stream[30:])
        # x written without its SYN_REPORT must not take effect yet (frames are atomic)
        os.write(w, encode_events([(EV_ABS, ABS_CODES["ABS_X"], 32767)]))
        wait_until(lambda: pad.reports >= 2)
        time.sleep(0.05)
        cmd = op.command(None, np.zeros(4), np.array([0, 0, 0, -1.0]))
        assert cmd.active
        np.testing.assert_allclose(cmd.action, [1.0, 0.0, 0.0, -1.0], atol=1e-4)
        os.write(w, encode_events([(EV_SYN, SYN_REPORT, 0)]))
        wait_until(lambda: pad.snapshot().axes["ABS_X"] > 0.99)
        # SYN_DROPPED: everything up to the next SYN_REPORT is discarded
        os.write(w, encode_events([(EV_SYN, SYN_DROPPED, 0), (EV_ABS, ABS_CODES["ABS_RY"], -32768),
                                   (EV_SYN, SYN_REPORT, 0)]))
        os.write(w, gamepad_frames([(EV_KEY, KEY_CODES["BTN_SOUTH"], 1)], [(EV_KEY, KEY_CODES["BTN_SOUTH"], 0)],
                                   [(EV_KEY, KEY_CODES["BTN_TL"], 0)]))
        wait_until(lambda: "intervene" not in pad._s.held)
        assert pad.dropped_frames == 1
        cmd = op.command(None, np.zeros(4), None)
        assert not cmd.active and cmd.events == ["success"]
        assert pad.snapshot().axes["ABS_RY"] == 0.0
    finally:
        pad.close()
        os.close(w)
        os.close(r)


def test_gamepad_silent_while_held_and_unplugged_holds_the_robot():
    r, w = os.pipe()
    pad, cfg = make_gamepad(r, stale=0.25)
    pad.start()
    notifier = OperatorNotifier(io.StringIO())
    op = DeviceOperator(pad, cfg, PANDA_ACTIONS, notifier)
    try:
        os.write(w, gamepad_frames([(EV_KEY, KEY_CODES["BTN_TL"], 1)]))
        wait_until(lambda: pad.reports >= 1)
        assert op.command(None, np.zeros(4), None).active
        t0 = time.monotonic()
        held = wait_until(lambda: op.command(None, np.zeros(4), None).hold, timeout=1.0)
        assert "silent" in held and time.monotonic() - t0 < 0.25 + 0.1
        os.close(w)  # the stream ends: unplugged
        w = None
        held = wait_until(lambda: "disconnected" in op.command(None, np.zeros(4), None).hold)
        assert any("disconnected" in m for m in notifier.history)
    finally:
        pad.close()
        if w is not None:
            os.close(w)
        os.close(r)


# ------------------------------------------------------------------------------------------------ keyboard
def test_keyboard_escape_sequences_split_across_reads_and_label_keys():
    master, slave = pty.openpty()
    keys = {"up": "+x", "down": "-x", "left": "+y", "right": "-y", "u": "+z", "j": "-z"}
    buttons = {"intervene": "i", "grip": "g", "success": "s", "failure": "f", "reset": "r", "pause": "p"}
    kb = Keyboard(os.ttyname(slave), keys=keys, buttons=buttons, key_timeout_s=0.3).start()
    cfg = device_cfg(dead_zone=0.0, intervene_mode="toggle", buttons=buttons, stale_timeout_s=0.3)
    op = DeviceOperator(kb, cfg, PANDA_ACTIONS, OperatorNotifier(io.StringIO()))
    try:
        os.write(master, b"i\x1b[")  # intervene, then an arrow whose sequence is split across two writes
        time.sleep(0.1)
        os.write(master, b"AU\x1bOD")  # ... up arrow; caps-lock U (= u: up in z); application-mode left
        wait_until(lambda: len(kb.keys_seen) >= 4)
        assert kb.keys_seen == ["i", "up", "u", "left"]
        cmd = op.command(None, np.zeros(4), np.array([0, 0, 0, -1.0]))
        assert cmd.active
        np.testing.assert_allclose(cmd.action, [1.0, 1.0, 1.0, -1.0])
        time.sleep(0.4)  # no autorepeat: the keys expire and motion stops
        assert not op.command(None, np.zeros(4), None).action[:3].any()
        os.write(master, b"\x1b[5~\x1b")  # page up (not mapped), then a lone Escape
        wait_until(lambda: "esc" in kb.keys_seen)
        assert kb.keys_seen[-2:] == ["pgup", "esc"]
        os.write(master, b"gsi")
        wait_until(lambda: kb.keys_seen[-1] == "i")
        cmd = op.command(None, np.zeros(4), None)
        assert cmd.events == ["success"] and not cmd.active  # toggled off again
        os.write(master, b"p")
        assert "paused" in wait_until(lambda: op.command(None, np.zeros(4), None).hold)
    finally:
        kb.close()
        os.close(master)
        os.close(slave)


def test_keyboard_refuses_hold_mode_and_clashing_keys():
    master, slave = pty.openpty()
    try:
        with pytest.raises(ValueError, match="both a motion and a button"):
            Keyboard(os.ttyname(slave), keys={"s": "-x"}, buttons={"success": "s"})
        kb = Keyboard(os.ttyname(slave), keys={"up": "+x"}, buttons={"intervene": "i"})
        with pytest.raises(ValueError, match="no key releases"):
            DeviceOperator(kb, device_cfg(intervene_mode="hold", buttons={"intervene": "i"}), PANDA_ACTIONS)
    finally:
        os.close(master)
        os.close(slave)


# ----------------------------------------------------------------------------------------------- discovery
def test_discovery_reads_sysfs_hidraw_and_proc_input_devices(tmp_path):
    for name, hid_id in (("hidraw0", "0003:0000046D:0000C52B"), ("hidraw1", "0003:0000046D:0000C626"),
                         ("hidraw2", "0003:0000256F:0000C635")):
        (tmp_path / "hidraw" / name / "device").mkdir(parents=True)
        (tmp_path / "hidraw" / name / "device" / "uevent").write_text(
            f"DRIVER=hid-generic\nHID_ID={hid_id}\nHID_NAME=dev {name}\n")
    assert [p for p, _ in find_spacemice(str(tmp_path / "hidraw"))] == ["/dev/hidraw1", "/dev/hidraw2"]
    devices = tmp_path / "devices"
    devices.write_text(
        'I: Bus=0011 Vendor=0001 Product=0001 Version=ab41\nN: Name="AT Translated Set 2 keyboard"\n'
        "H: Handlers=sysrq kbd event0 leds\nB: KEY=402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe\n\n"
        'I: Bus=0003 Vendor=045e Product=028e Version=0114\nN: Name="Microsoft X-Box 360 pad"\n'
        "H: Handlers=event17 js0\nB: KEY=7cdb000000000000 0 0 0 0\n")
    assert find_gamepads(str(devices)) == [("/dev/input/event17", "Microsoft X-Box 360 pad")]

