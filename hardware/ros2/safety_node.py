"""``robot_rl_safety_node``: the command stream to ros2_control, in its own process, at the controller's rate.

    ros2 launch robot_rl real.launch.py        (starts it next to robot_rl_actor_node)

The actor (``command.via_safety_node``) publishes position targets at the policy rate (``control_hz``, 10 Hz) on
``topics.target``. This node moves from the previous target to the newest over ``command.interpolation_s`` (default 0: at once,
as the twin's env applies an action), passes every
command through the same safety layer as the actor (:class:`TargetLimiter` at ``1 / command_hz``:
box, speed, acceleration, lead; :class:`Guard`: e-stop latch, watchdog, stale sensors) and publishes it at
``command_hz`` (default 100, up to 1000) from a dedicated thread, so a crash, a GC pause or slow inference in the
actor can delay neither the commands nor a hold. It holds by itself when no target came for
``safety.watchdog_timeout_s`` (the actor died or stalled), on the e-stop (latched; released only by
``~/reset_estop``, ``std_srvs/Trigger``), when joint states or the TCP pose are stale or non-finite, and on a
non-finite target; during a hold commands keep flowing at ``command_hz`` towards the hold position.

Parameters: ``params_files`` (the actor's parameter files, read for node ``robot_rl_actor`` in order, so both
nodes share one set of limits and topics) and any ``RobotNodeConfig`` name as an override (``command_hz``...).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from robot_rl.hardware.ros2 import ros_io
from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params, load_params_files
from robot_rl.hardware.ros2.command_phase import TargetSlotLock
from robot_rl.hardware.ros2.realtime import (DeadlineSchedule, GcPacer, RealtimeStatus,
                                             enter_realtime, log_off_the_loop, spin_window, wait_until)
from robot_rl.hardware.ros2.safety import Guard, RateLimitedLog, TargetInterpolator, safety_limiter
from robot_rl.hardware.ros2.sensors import SensorCache, checked_joint_state, checked_pose, measured_position

log = logging.getLogger("robot_rl.ros2.safety_node")
TARGET_LAYOUT = "robot_rl_target_v2"
"""Label of ``layout.dim[0]`` of every target message: the wire version (a mismatch is refused and held).
v2 added the frame stamp (v1 had ``[*target, grip]``)."""
STALL_PERIODS = 3.0
"""A gap of more than this many command periods between two commands is a stall of the node: warned, counted."""


def target_msg(target: np.ndarray, grip_opening: float | None, frame_stamp: float | None = None) -> Any:
    """Actor -> safety node: ``data = [*target, grip opening (m) or NaN = unchanged, frame stamp]``, dim[0]
    labelled ``robot_rl_target_v2``, size = len(target) (TCP xyz in Cartesian mode, one value per arm joint
    otherwise). The frame stamp (s, ROS time; NaN for a hold) is the header stamp of the oldest camera frame the
    target was computed from: the safety node measures camera frame -> command with it."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=TARGET_LAYOUT, size=len(target), stride=len(target) + 2)]
    msg.data = [*(float(v) for v in target), float("nan") if grip_opening is None else float(grip_opening),
                float("nan") if frame_stamp is None else float(frame_stamp)]
    return msg


def decode_target(msg: Any, n: int) -> tuple[np.ndarray, float | None, float | None]:
    """``(target (n,), grip opening or None, frame stamp or None)``; ValueError on another layout version or
    size."""
    dims = list(msg.layout.dim)
    if not dims or dims[0].label != TARGET_LAYOUT or dims[0].size != n or len(msg.data) != n + 2:
        got = (dims[0].label, dims[0].size) if dims else None
        raise ValueError(f"target message layout {got} with {len(msg.data)} values, expected "
                         f"({TARGET_LAYOUT!r}, {n}) with {n + 2}")
    data = np.asarray(msg.data, np.float64)
    finite = lambda v: None if not np.isfinite(v) else float(v)  # noqa: E731
    return data[:n], finite(data[n]), finite(data[n + 1])


class PreparedCommand(NamedTuple):
    """A command computed ahead of its deadline (``command_prepare_s``)."""

    target: np.ndarray | None
    """The command (None = nothing to send yet)."""
    hold: str | None
    """The hold's reason key, None when not holding (counted once the command is the one sent)."""
    msg: Any
    """The message, stamped with the deadline (None with ``target``)."""
    inputs: int
    """The node's input count it saw: a different count at the deadline means it is computed again."""
    limiter_before: tuple[Any, ...]
    """``TargetLimiter.snapshot()`` before it, to compute it again from."""


class SafetyNode:
    """Subscriptions on the executor thread; :meth:`run` (the command loop) on a thread of its own."""

    def __init__(self, node: Any, cfg: RobotNodeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.node, self.cfg, self.clock = node, cfg, clock
        self.cartesian = cfg.command.mode == "cartesian_pose"
        self.n = 3 if self.cartesian else len(cfg.arm_joints)
        self.period = 1.0 / float(cfg.command_hz)
        self.policy_period = 1.0 / float(cfg.control_hz)
        self.limiter = safety_limiter(cfg)
        self.guard = Guard(cfg.safety.watchdog_timeout_s, clock)
        sensors = ["ee_pose", "joint_states"] if self.cartesian else ["joint_states"]
        self.cache = SensorCache(sensors, clock, lambda: node.get_clock().now().nanoseconds * 1e-9)
        self._lock = threading.Lock()
        # desired position between targets: from where the stream stood to the newest target over interpolation_s
        self.interpolator = TargetInterpolator(min(cfg.command.interpolation_s, self.policy_period))
        self._targets = 0
        self._inputs = 0  # targets, e-stops and resets so far: one inside a prepared command's window recomputes it
        self._watchdog_holding = False
        self._warn = RateLimitedLog(log.warning, 1.0, clock)
        self.sent = 0
        self.recomputed = 0  # prepared commands computed again at their deadline (an input came in between)
        self.stalls = 0  # gaps of more than STALL_PERIODS command periods between consecutive commands
        self.stall_max_s = 0.0
        self._last_send: float | None = None
        self.send_times: list[float] = []
        self.target_to_command_ms: list[float] = []  # target arrival -> first command that follows it
        self._fresh_target_t: float | None = None
        self._fresh_frame_stamp: float | None = None
        self.frame_to_command_ms: list[float] = []  # camera frame stamp -> first command that follows its target
        self.frame_to_target_ms: list[float] = []  # camera frame stamp -> its target's arrival here
        self.holds: dict[str, int] = {}
        self.realtime = RealtimeStatus()  # what run() obtained (logged there, and in stats())
        self.schedule: DeadlineSchedule | None = None
        self.phase_lock: TargetSlotLock | None = None
        t = cfg.topics
        sensor_qos = ros_io.qos_profile(cfg.qos.sensor_reliability, cfg.qos.sensor_depth)
        command_qos = ros_io.qos_profile(cfg.qos.command_reliability, cfg.qos.command_depth)
        reliable = ros_io.qos_profile("reliable", 10)
        joints = (*cfg.arm_joints, *cfg.gripper_joints)
        node.create_subscription(ros_io.message_type("joint_states"), t.joint_states, self._guarded(
            "joint_states", lambda m: self.cache.put("joint_states", checked_joint_state(
                *ros_io.decode_joint_state(m), joints), ros_io.stamp_to_s(m.header.stamp))), sensor_qos)
        if self.cartesian:
            if t.ee_pose_source != "topic":
                raise ValueError("robot_rl_safety_node reads the TCP from topics.ee_pose (ee_pose_source=topic)")
            node.create_subscription(ros_io.message_type("ee_pose"), t.ee_pose, self._guarded(
                "ee_pose", lambda m: self.cache.put("ee_pose", checked_pose(*ros_io.decode_pose(m)),
                                                    ros_io.stamp_to_s(m.header.stamp))), sensor_qos)
        node.create_subscription(ros_io.message_type("gripper"), t.target, self._guarded("target", self._on_target),
                                 reliable)
        node.create_subscription(ros_io.message_type("bool"), t.estop, self._guarded("estop", self._on_estop),
                                 reliable)
        self._reset_srv = node.create_service(ros_io.message_type("trigger"), "~/reset_estop", self._on_reset)
        # the one e-stop latch of the robot: the actor reflects it (it owns no latch when commands go through here)
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        latched_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._latched_pub = node.create_publisher(ros_io.message_type("bool"), t.estop_latched, latched_qos)
        self._latched_timer = node.create_timer(0.1, self._publish_latched)
        self._command_pub = node.create_publisher(ros_io.message_type(cfg.command.mode), t.command, command_qos)
        self._gripper_pub = (node.create_publisher(ros_io.message_type("gripper"), t.gripper_command, command_qos)
                             if t.gripper_command else None)
        self._last_grip: float | None = None

    # ------------------------------------------------------------------ inputs (executor thread)
    def _guarded(self, what: str, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(msg: Any) -> None:
            try:
                handler(msg)
            except Exception as e:  # noqa: BLE001 (bad input is dropped; the sensor goes stale and we hold)
                self.guard.count("bad_sensor" if what != "target" else "non_finite")
                self._warn(f"bad:{what}", f"dropped a {what} message: {e}")
        return run

    def _on_target(self, msg: Any) -> None:
        target, grip, frame_stamp = decode_target(msg, self.n)
        now = self.clock()
        with self._lock:
            self._inputs += 1
            if not np.isfinite(target).all():
                self.guard.count("non_finite")
                self.interpolator.clear()  # hold until a finite target comes
                return
            self.interpolator.new_target(target, now)
            self._targets += 1
            self._fresh_target_t, self._fresh_frame_stamp = now, frame_stamp
            self._watchdog_holding = False
            if frame_stamp is not None and len(self.frame_to_target_ms) < 200_000:  # statistics, bounded
                ros_now = self.node.get_clock().now().nanoseconds * 1e-9  # the camera stamps' clock
                self.frame_to_target_ms.append((ros_now - frame_stamp) * 1e3)
        self.guard.action_arrived()
        if grip is not None and self._gripper_pub is not None and grip != self._last_grip and not self.guard.estopped:
            self._last_grip = grip
            self._gripper_pub.publish(ros_io.float64_array_msg([grip]))

    def _publish_latched(self) -> None:
        self._latched_pub.publish(ros_io.message_type("bool")(data=bool(self.guard.estopped)))

    def _on_estop(self, msg: Any) -> None:
        latched = self.guard.set_estop(bool(msg.data))
        with self._lock:  # after the latch: a command prepared before this sees the count change and is redone
            self._inputs += 1
        if latched:
            log.warning("e-stop: holding until reset (ros2 service call %s std_srvs/srv/Trigger)",
                        self._reset_srv.service_name)
            self._publish_latched()

    def _on_reset(self, request: Any, response: Any) -> Any:  # noqa: ARG002 (Trigger has no request data)
        response.success, response.message = self.guard.reset_estop()
        with self._lock:
            self._inputs += 1
            self.interpolator.clear()  # after a reset, only a fresh target moves the robot
        log.warning("e-stop reset: %s (%s)", "released" if response.success else "refused", response.message)
        self._publish_latched()
        return response

    # ------------------------------------------------------------------ command loop (own thread)
    def _measured(self) -> np.ndarray:
        return measured_position(self.cache, self.cartesian, self.cfg.arm_joints, self.n)

    def tick(self, at: float | None = None) -> tuple[np.ndarray | None, str | None]:
        """One command for time ``at`` (the caller's clock; default now): the interpolated target through the
        limiter, or the hold; None = nothing to send yet. Also the hold's reason (None when not holding), for
        :meth:`count_hold` once the command is the one sent (a prepared command may be computed again)."""
        now = self.clock() if at is None else at
        if self.guard.watchdog_expired():
            with self._lock:
                self._watchdog_holding = True
                self.interpolator.clear()
            self._warn("watchdog", f"no target for {self.cfg.safety.watchdog_timeout_s} s: holding")
        stale = self.cache.stale(self.cfg.safety.sensor_timeout_s)
        reason = self.guard.hold_reason(stale)
        with self._lock:
            desired = self.interpolator.desired(now)
            if reason is None and self._watchdog_holding:
                reason = "watchdog"
        measured = self._measured()
        if reason is not None or desired is None or self.limiter.target is None:
            key = (reason or "no_target").split(":")[0]
            if key == "stale" and (self._targets == 0 or all(s.endswith("(missing)") for s in stale)):
                key = "startup"  # a sensor never heard from yet (discovery): not a stall of a running loop
            if reason and reason != "watchdog":
                self._warn(f"hold:{key}", f"holding: {reason}")
            return self.limiter.hold(measured), key
        return self.limiter(desired, measured), None

    def count_hold(self, key: str | None) -> None:
        if key is not None:
            self.holds[key] = self.holds.get(key, 0) + 1

    def _message(self, target: np.ndarray, at: float) -> Any:
        """The command message for ``target``, stamped with ``at`` (the loop's clock) on the ROS clock: the time it
        is meant for and published at, not the earlier time it was built."""
        from rclpy.time import Time

        ros_ns = self.node.get_clock().now().nanoseconds + int(round((at - time.monotonic()) * 1e9))
        return ros_io.command_msg(self.cfg.command, self.cfg.arm_joints, self.cfg.topics.base_frame, target,
                                  Time(nanoseconds=max(ros_ns, 0)).to_msg(), self.period)

    def _prepare(self, deadline: float) -> PreparedCommand:
        """The command for ``deadline``, computed and built now."""
        with self._lock:
            inputs = self._inputs
        before = self.limiter.snapshot()
        target, hold = self.tick(deadline)
        return PreparedCommand(target, hold, None if target is None else self._message(target, deadline), inputs,
                               before)

    def _at_deadline(self, prepared: PreparedCommand, deadline: float) -> PreparedCommand:
        """The command to send at ``deadline``: the ``prepared`` one, or, when an input (a target, an e-stop)
        came since it was prepared, the command computed again now from the limiter's state before it (the
        limits apply once, to the command that goes out, and that input is served by it)."""
        with self._lock:
            changed = self._inputs != prepared.inputs
        if not changed:
            return prepared
        self.limiter.restore(prepared.limiter_before)
        self.recomputed += 1
        return self._prepare(deadline)

    def run(self, stop: threading.Event) -> None:
        """Send one command per ``1 / command_hz`` on absolute deadlines (:class:`DeadlineSchedule`: no drift, a
        late tick skips ahead instead of bursting), under the real-time setup of ``safety_realtime``: SCHED_FIFO
        where permitted, a hybrid sleep-then-spin wait to each deadline, garbage collection right after a
        command, never before one. Each command is prepared ``command_prepare_s`` ahead of its deadline, so only
        the publish itself runs at the deadline; an input arriving in between (a target, an e-stop) has it
        computed again there, from the limiter's state before the prepared one. Paces on ``time.monotonic``,
        and :meth:`tick` reads its deadlines on the node's ``clock``: an injected clock (for tick-driven tests)
        would mix the two, so it is refused here."""
        if self.clock is not time.monotonic:
            raise ValueError("SafetyNode.run paces on time.monotonic; a node built with another clock is for "
                             "tick()-driven tests and cannot run the command loop")
        rt = self.cfg.safety_realtime
        self.realtime = enter_realtime(rt, "robot_rl_safety_node command loop")
        spin = spin_window(rt, self.period)
        prepare_s = min(max(self.cfg.command_prepare_s, 0.0), 0.25 * self.period)
        switch_s, hold_gil = sys.getswitchinterval(), self.cfg.command_gil_switch_s if prepare_s else 0.0
        # one untimed round first: lazy imports and first calls (message types, numpy paths) read from disk,
        # which on a cold start stalled the first timed tick by 0.3 s
        warm, _ = self.tick()
        self._message(np.zeros(self.n) if warm is None else warm, time.monotonic())
        self.stats()
        pacer = GcPacer(self.realtime.gc_frozen, rt.gc_every_s)
        self.schedule = DeadlineSchedule(self.period, time.monotonic())
        ratio = self.policy_period / self.period
        align = self.cfg.align_commands and round(ratio) >= 1 and abs(ratio - round(ratio)) < 1e-6
        # the slot that serves the targets just after nearly all of their arrivals (their jitter learned), moved
        # by at most 0.3 ms per target so the controller still sees a steady rate
        lock = TargetSlotLock(self.schedule, self.policy_period,
                              guard=min(self.cfg.command_slot_guard_s, 0.15 * self.period),
                              initial_margin=min(0.003, 0.3 * self.period), max_step=min(0.0003, self.period / 20))
        self.phase_lock = lock
        stamped_seen = False  # a target with a camera frame stamp came (the policy acts on camera frames)
        while not stop.is_set():
            deadline = self.schedule.deadline
            # when the command is prepared needs no precision (a sleep); when it goes out does: from the prepared
            # command to the deadline the loop spins, holding the GIL (a sleep would hand it to the executor
            # thread, and getting it back can take a switch interval; command_gil_switch_s keeps it held)
            wait_until(deadline - prepare_s, 0.0 if prepare_s else spin)
            prepared = self._prepare(deadline)
            if hold_gil:  # no hand-over of the GIL between here and the publish (command_gil_switch_s)
                sys.setswitchinterval(hold_gil)
            try:
                wait_until(deadline, prepare_s or spin)
                command = self._at_deadline(prepared, deadline)
                if command.target is not None:
                    self._command_pub.publish(command.msg)
                    now = time.monotonic()
            finally:
                if hold_gil:
                    sys.setswitchinterval(switch_s)
            self.count_hold(command.hold)
            if command.target is None:
                self._last_send = None  # nothing to send yet (startup): not a gap in a running stream
            else:
                self.sent += 1
                self.note_send(now)
                with self._lock:
                    fresh, self._fresh_target_t = self._fresh_target_t, None
                    frame_stamp, self._fresh_frame_stamp = self._fresh_frame_stamp, None
                if frame_stamp is not None and not stamped_seen:
                    # Once the actor's targets carry camera frame stamps, only those (the policy's) lead the
                    # lock: the unstamped ones of a reset (moving home) come on the reset's schedule, and the
                    # lock they set cost the first policy targets a command period each. The first stamped
                    # target locks afresh; later resets are pauses in the stamped targets, which the lock keeps
                    # or relocks after as it does for any pause.
                    stamped_seen = True
                    lock.forget_phase()
                # the next targets arrive with the same phase: meet them
                if fresh is not None and align and (frame_stamp is not None or not stamped_seen):
                    lock.arrived(fresh, self.schedule.deadline)
                if len(self.send_times) < 200_000:  # statistics (benchmarks): bounded memory
                    self.send_times.append(now)
                    if fresh is not None:
                        self.target_to_command_ms.append((now - fresh) * 1e3)
                    if frame_stamp is not None:  # on the ROS clock, as the camera's header stamp
                        ros_now = self.node.get_clock().now().nanoseconds * 1e-9
                        self.frame_to_command_ms.append((ros_now - frame_stamp) * 1e3)
            pacer.after_tick()
            self.schedule.advance(time.monotonic())

    def note_send(self, now: float) -> None:
        """A command went out at ``now``: a gap of more than ``STALL_PERIODS`` command periods since the one before
        is a stall of this node (the process itself, not its inputs: its holds cannot cover that), counted and
        warned about, so an operator sees it in the log before the controller's own command timeout reports it."""
        last, self._last_send = self._last_send, now
        if last is None or now - last <= STALL_PERIODS * self.period:
            return
        gap = now - last
        self.stalls += 1
        self.stall_max_s = max(self.stall_max_s, gap)
        self._warn("stall", f"command stream stalled: {gap * 1e3:.0f} ms without a command "
                            f"({gap / self.period - 1:.0f} command periods); the robot controller's own command "
                            f"timeout must cover such a gap")

    def stats(self) -> dict[str, float]:
        ticks = np.diff(np.asarray(self.send_times[-100_000:]))
        jitter = np.abs(ticks - self.period) * 1e3 if ticks.size else np.zeros(1)
        lag = np.asarray(self.target_to_command_ms[-100_000:] or [0.0])
        frame = np.asarray(self.frame_to_command_ms[-100_000:] or [0.0])
        frame_target = np.asarray(self.frame_to_target_ms[-100_000:] or [0.0])
        return {"commands": float(self.sent), "command_jitter_p50_ms": float(np.percentile(jitter, 50)),
                "command_jitter_p99_ms": float(np.percentile(jitter, 99)),
                "command_period_max_ms": float(ticks.max() * 1e3) if ticks.size else 0.0,
                "frame_to_command_p50_ms": float(np.percentile(frame, 50)),
                "frame_to_command_p99_ms": float(np.percentile(frame, 99)),
                "frame_to_target_p50_ms": float(np.percentile(frame_target, 50)),
                "frame_to_target_p90_ms": float(np.percentile(frame_target, 90)),
                "frame_to_target_p99_ms": float(np.percentile(frame_target, 99)),
                "target_to_command_p50_ms": float(np.percentile(lag, 50)),
                "target_to_command_p99_ms": float(np.percentile(lag, 99)),
                "missed_deadlines": float(self.schedule.missed if self.schedule is not None else 0),
                "commands_recomputed": float(self.recomputed),
                "command_stalls": float(self.stalls), "command_stall_max_ms": self.stall_max_s * 1e3,
                "command_phase_relocks": float(self.phase_lock.relocks if self.phase_lock is not None else 0),
                "command_slot_lead_ms": float(self.phase_lock.lead_s * 1e3 if self.phase_lock is not None else 0),
                **self.realtime.stats("realtime"),
                **{f"holds/{k}": float(v) for k, v in self.holds.items()},
                **{f"guard/{k}": float(v) for k, v in self.guard.counts.items()}}


def node_config(parameters: dict[str, Any]) -> tuple[RobotNodeConfig, str]:
    """``params_files`` (the actor's files, section ``robot_rl_actor``) plus the other parameters as overrides;
    and ``stats_file`` (this node's own parameter: write :meth:`SafetyNode.stats` there as JSON on exit, for
    benchmarks/ros2_loop.py; empty = off)."""
    params = dict(parameters)
    files = params.pop("params_files", None)
    stats_file = str(params.pop("stats_file", ""))
    for name in ("use_sim_time", "start_type_description_service"):
        params.pop(name, None)
    if files:
        return load_params_files(list(files), "robot_rl_actor", RobotNodeConfig, params), stats_file
    return from_params(RobotNodeConfig, params), stats_file


def main(argv: Sequence[str] | None = None) -> int:
    from robot_rl.run_log import setup_logging

    setup_logging()
    log_off_the_loop()
    ros_io.keep_fast_dds_off_shared_memory()  # before rclpy.init (node_session): the command stream's publish
    with ros_io.node_session("robot_rl_safety", argv) as (node, executor, stop):
        cfg, stats_file = node_config(ros_io.node_parameters(node))
        safety = SafetyNode(node, cfg)
        # the executor (this thread) and the DDS threads real-time, and the executor's first rounds (its
        # imports, the first callbacks) done before the command loop starts: none of that can stall it later
        from robot_rl.hardware.ros2.realtime import enter_executor_realtime
        enter_executor_realtime(cfg.safety_realtime, "robot_rl_safety_node executor")
        for _ in range(3):
            executor.spin_once(timeout_sec=0.01)
        loop = threading.Thread(target=safety.run, args=(stop,), name="command-loop")
        loop.start()
        log.info("commanding %s at %.0f Hz from targets on %s", safety.cfg.topics.command, safety.cfg.command_hz,
                 safety.cfg.topics.target)
        try:
            ros_io.spin_until(executor, stop)
        finally:
            stop.set()
            loop.join(timeout=2.0)
        stats = safety.stats()
        log.info("safety node stopped: %s", {k: round(v, 3) for k, v in stats.items()})
        if stats_file:
            Path(stats_file).write_text(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
