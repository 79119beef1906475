"""The real robot as a :class:`robot_rl.env.RobotEnv`, over ROS 2 (rclpy), with the safety layer below the policy.

One control step (``step``): refuse to move if the e-stop is latched, a sensor is stale or the action is not a
finite vector (hold and report), otherwise turn the action into a position target, pass it through
:class:`TargetLimiter` (workspace box or joint limits, speed, acceleration, lead) and publish it; then sleep to
the next tick of the control clock and assemble the observation from the newest sensor messages. A watchdog timer
on the node's executor holds the robot while no action arrived for ``safety.watchdog_timeout_s``. Sensor messages
with a non-finite or missing value are dropped (counted, logged at most once a second): the sensor goes stale
and the robot holds, nothing raises. The e-stop latch lives in the node that owns the command stream: with
``command.via_safety_node`` that is ``robot_rl_safety_node``, and this env only reflects its state
(``topics.estop_latched``: the policy pauses while it is latched, and while the safety node is silent); otherwise
it is this node's own, released only by its ``~/reset_estop`` service (``std_srvs/Trigger``). Sensor QoS is
best-effort keep-last-1, command QoS reliable (both from the parameter file).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from robot_rl.env import StepResult
from robot_rl.hardware.ros2 import ros_io
from robot_rl.hardware.ros2.bag import EpisodeBag
from robot_rl.hardware.ros2.camera_sync import CameraSync
from robot_rl.hardware.ros2.config import RobotNodeConfig
from robot_rl.hardware.ros2.realtime import (DeadlineSchedule, GcPacer, RealtimeStatus, enter_realtime, spin_window,
                                             wait_until)
from robot_rl.hardware.ros2.safety import Guard, RateLimitedLog, check_action_reach, limiter_for
from robot_rl.hardware.ros2.sensors import (SensorCache, assemble_state, checked_joint_state, checked_pose,
                                            camera_configs, camera_image, compose_chain, decode_image_msg,
                                            measured_position, node_specs)

log = logging.getLogger("robot_rl.ros2.env")
_TYPES = {"joint_states": "sensor_msgs/msg/JointState", "ee_pose": "geometry_msgs/msg/PoseStamped",
          "tf": "tf2_msgs/msg/TFMessage", "image": "sensor_msgs/msg/Image",
          "compressed_image": "sensor_msgs/msg/CompressedImage", "cartesian_pose": "geometry_msgs/msg/PoseStamped",
          "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
          "forward_position": "std_msgs/msg/Float64MultiArray", "gripper": "std_msgs/msg/Float64MultiArray",
          "float32_array": "std_msgs/msg/Float32MultiArray"}


class StoppedDuringReset(RuntimeError):
    """``stop`` was set (SIGINT/SIGTERM) while ``reset`` waited for sensors or moved home: a clean shutdown,
    not a failure (the node exits 0)."""


class RosRobotEnv:
    """``RobotEnv`` of a ros2_control robot. Construct inside a running rclpy context; spin ``node`` elsewhere."""

    def __init__(self, cfg: RobotNodeConfig, node: Any, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from rclpy.serialization import deserialize_message, serialize_message

        self._deserialize, self._serialize = deserialize_message, serialize_message
        self.cfg, self.node, self.clock = cfg, node, clock
        self.stop = stop if stop is not None else threading.Event()
        self.control_hz = float(cfg.control_hz)
        self.period = 1.0 / self.control_hz
        self.max_episode_steps = int(cfg.max_episode_steps)
        self.task = cfg.task
        self.cartesian = cfg.command.mode == "cartesian_pose"
        topics = cfg.topics
        self.obs_spec, self.action_spec = node_specs(cfg)
        self.n_move = 3 if self.cartesian else len(cfg.arm_joints)
        s = cfg.safety
        self.limiter = limiter_for(cfg)
        if self.cartesian:
            self.scale, self.home = cfg.command.action_scale, np.array(cfg.home_position)
        else:
            self.scale, self.home = cfg.command.joint_action_scale, np.array(cfg.home_joints)
        self.guard = Guard(s.watchdog_timeout_s, clock)
        self.action_reach = check_action_reach(cfg, log.warning)  # < 0.9: warned, actions execute late
        self.cameras = dict(zip(topics.cameras, topics.camera_topics))
        self._camera_sync = CameraSync(cfg.camera_sync, list(self.cameras), self.period, cfg.camera_sync_margin_s,
                                       cfg.camera_sync_wait_s, clock)
        # Header stamps are on the node's ROS clock (system time, or /clock with use_sim_time).
        # via the safety node, its e-stop latch state is a required input too: no word from it = hold
        self.via_safety_node = cfg.command.via_safety_node
        self.cache = SensorCache(["joint_states", "ee_pose", *(f"images/{c}" for c in self.cameras),
                                  *(["safety_node"] if self.via_safety_node else [])], clock,
                                 lambda: node.get_clock().now().nanoseconds * 1e-9)
        self._sensor_joints = (*cfg.arm_joints, *cfg.gripper_joints)
        self._tf_edges: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        self._cmd_lock = threading.RLock()
        self._success = False
        self._bag: EpisodeBag | None = None
        self._bag_topics: dict[str, tuple[str, str]] = {}
        self._episode = 0
        self._steps = 0
        self._schedule = DeadlineSchedule(self.period, clock())
        self._camera_sync.restart(self._schedule)
        self.realtime: RealtimeStatus | None = None  # the policy loop's real-time setup, from the first reset
        self._spin_s = 0.0
        self._gc = GcPacer(False, 1.0)
        # Called after each command is published, before the wait for the next tick: work that must not sit
        # between an observation and its inference (the actor swaps in new weights here).
        self.slack_tasks: list[Callable[[], None]] = []
        self._obs_time = 0.0
        self._last_obs: dict[str, np.ndarray] | None = None
        self._warn = RateLimitedLog(log.warning, 1.0, clock)  # per topic of complaint: one a second at most
        self._watchdog_holding = False  # the watchdog fired and no action came since: keep commanding the hold
        self.latency_ms: list[float] = []   # obs handed to the policy -> command published
        self.frame_to_command_ms: list[float] = []  # oldest camera frame's stamp -> command (or target) published
        self.frame_age_ms: list[float] = []  # its part before the observation: that frame's age at observation time
        self._frame_age_s = self._obs_frame_age_s = 0.0
        self._frame_stamp: float | None = None
        self._obs_frame_stamp: float | None = None  # oldest frame stamp of the observation the policy acts on
        self.tick_times: list[float] = []   # command publish times (period jitter)
        self.holds: dict[str, int] = {}
        self._make_io()
        self._watchdog = node.create_timer(min(self.period, s.watchdog_timeout_s / 3),
                                           self._never_raise("watchdog", self._watchdog_tick))
        # One e-stop latch per robot, in the node that owns the command stream: ours only without the safety node
        self._reset_estop_srv = None if self.via_safety_node else node.create_service(
            ros_io.message_type("trigger"), "~/reset_estop", self._on_reset_estop)

    # ------------------------------------------------------------------ ROS wiring
    def _make_io(self) -> None:
        cfg, node, topics = self.cfg, self.node, self.cfg.topics
        sensor_qos = ros_io.qos_profile(cfg.qos.sensor_reliability, cfg.qos.sensor_depth)
        command_qos = ros_io.qos_profile(cfg.qos.command_reliability, cfg.qos.command_depth)
        sensor_rel, command_rel = cfg.qos.sensor_reliability, cfg.qos.command_reliability

        def subscribe(kind: str, topic: str, handler: Callable[[Any], None], qos: Any, reliability: str) -> None:
            msg_type = ros_io.message_type(kind)
            if kind in _TYPES:
                self._bag_topics[topic] = (_TYPES[kind], reliability)

            def callback(raw: bytes) -> None:
                if self._bag is not None and kind in _TYPES:
                    self._bag.add(topic, ros_io.wall_ns(), raw)
                try:
                    handler(self._deserialize(raw, msg_type))
                except Exception as e:  # a malformed or non-finite message must not kill the executor: drop
                    self.guard.count("bad_sensor")
                    self._warn(f"bad:{topic}", f"dropped a {kind} message on {topic}: {e}")
            node.create_subscription(msg_type, topic, callback, qos, raw=True)

        subscribe("joint_states", topics.joint_states, lambda m: self.cache.put(
            "joint_states", checked_joint_state(*ros_io.decode_joint_state(m), self._sensor_joints),
            ros_io.stamp_to_s(m.header.stamp)), sensor_qos, sensor_rel)
        if topics.ee_pose_source == "topic":
            subscribe("ee_pose", topics.ee_pose, lambda m: self.cache.put(
                "ee_pose", checked_pose(*ros_io.decode_pose(m)), ros_io.stamp_to_s(m.header.stamp)), sensor_qos,
                sensor_rel)
        else:
            from rclpy.qos import DurabilityPolicy, QoSProfile
            static_qos = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            subscribe("tf", "/tf", self._on_tf, ros_io.qos_profile("reliable", 100), "reliable")
            subscribe("tf", "/tf_static", self._on_tf, static_qos, "reliable")
        for camera, topic in self.cameras.items():
            if topics.compressed_images:
                subscribe("compressed_image", topic + "/compressed", self._image_handler(camera), sensor_qos,
                          sensor_rel)
            else:
                subscribe("image", topic, self._image_handler(camera), sensor_qos, sensor_rel)
        reliable = ros_io.qos_profile("reliable", 10)
        node.create_subscription(ros_io.message_type("bool"), topics.success, self._on_success, reliable)
        if cfg.command.via_safety_node:  # the safety node owns the latch; we reflect it
            from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
            latched_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(ros_io.message_type("bool"), topics.estop_latched,
                                     self._never_raise("estop_latched", self._on_estop_latched), latched_qos)
        else:
            node.create_subscription(ros_io.message_type("bool"), topics.estop,
                                     self._never_raise("estop", self._on_estop), reliable)
        self._episode_reset_pub = (node.create_publisher(ros_io.message_type("bool"), topics.episode_reset, reliable)
                                   if topics.episode_reset else None)
        mode = cfg.command.mode
        # via_safety_node: our targets go to robot_rl_safety_node, which owns the controller's topics
        self._target_pub = (node.create_publisher(ros_io.message_type("gripper"), topics.target, reliable)
                            if cfg.command.via_safety_node else None)
        self._command_pub = None if self._target_pub is not None else node.create_publisher(
            ros_io.message_type(mode), topics.command, command_qos)
        self._bag_topics[topics.command] = (_TYPES[mode], command_rel)
        self._gripper_pub = None
        self._has_gripper = bool(topics.gripper_command)
        if topics.gripper_command:
            if self._target_pub is None:
                self._gripper_pub = node.create_publisher(ros_io.message_type("gripper"), topics.gripper_command,
                                                          command_qos)
            self._bag_topics[topics.gripper_command] = (_TYPES["gripper"], command_rel)
        if cfg.bag_dir:  # record our own commands as they go out on the wire (the bytes a controller receives)
            for topic, kind in ((topics.command, mode), (topics.gripper_command, "gripper")):
                if topic:
                    node.create_subscription(ros_io.message_type(kind), topic, self._wire_recorder(topic),
                                             command_qos, raw=True)
        for topic in ("/robot_rl/action", "/robot_rl/reward"):
            self._bag_topics[topic] = (_TYPES["float32_array"], "reliable")
        self._grip_open = cfg.command.gripper_open

    def _wire_recorder(self, topic: str) -> Callable[[bytes], None]:
        def record(raw: bytes) -> None:
            if self._bag is not None:
                self._bag.add(topic, ros_io.wall_ns(), raw)
        return record

    def _image_handler(self, camera: str) -> Callable[[Any], None]:
        config = camera_configs(self.cfg)[camera]

        def handle(msg: Any) -> None:
            image = decode_image_msg(msg)  # Image or CompressedImage -> (H, W, 3) RGB, native size
            self.cache.put(f"images/{camera}", camera_image(image, config, camera),
                           ros_io.stamp_to_s(msg.header.stamp))
            self._camera_sync.frame_arrived(camera)
        return handle

    def _on_tf(self, msg: Any) -> None:
        for tf in msg.transforms:
            child, parent, t, q = ros_io.decode_transform(tf)
            self._tf_edges[child] = (parent, t, q)
        try:
            pose = compose_chain(self._tf_edges, self.cfg.topics.base_frame, self.cfg.topics.ee_frame)
        except KeyError:
            return  # chain not complete yet: ee_pose stays missing (reported as such)
        self.cache.put("ee_pose", checked_pose(*pose), ros_io.stamp_to_s(msg.transforms[-1].header.stamp))

    def _never_raise(self, what: str, callback: Callable[[Any], None] | Callable[[], None]) -> Callable[..., None]:
        """``callback`` for the executor: an exception is logged (once a second) instead of ending the executor
        thread, which would silence the watchdog and every sensor."""
        def run(*args: Any) -> None:
            try:
                callback(*args)
            except Exception:  # noqa: BLE001 (logged; the executor must keep running)
                self.guard.count("callback_error")
                if self._warn(f"error:{what}", f"{what} callback failed (the node keeps running)"):
                    log.exception("%s callback", what)
        return run

    def _on_success(self, msg: Any) -> None:
        if msg.data:
            self._success = True

    def _on_estop(self, msg: Any) -> None:
        assert self._reset_estop_srv is not None  # subscribed only when this node owns the latch
        if self.guard.set_estop(bool(msg.data)):
            log.warning("e-stop: holding until reset (ros2 service call %s std_srvs/srv/Trigger)",
                        self._reset_estop_srv.service_name)
        if self.guard.estopped:
            self._hold("estop")
            if not msg.data:
                self._warn("estop-input", "e-stop input released; the hold stays latched until "
                           f"{self._reset_estop_srv.service_name} is called")

    def _on_estop_latched(self, msg: Any) -> None:
        """robot_rl_safety_node's latch: the policy pauses while it is set (the safety node holds the robot)."""
        self.cache.put("safety_node", bool(msg.data))
        if self.guard.reflect_estop(bool(msg.data)):
            if msg.data:
                log.warning("e-stop latched in robot_rl_safety_node: policy paused until its reset "
                            "(ros2 service call /robot_rl_safety/reset_estop std_srvs/srv/Trigger)")
                self._hold("estop")
            else:
                log.warning("e-stop released by robot_rl_safety_node: the policy resumes with the next episode")

    def _on_reset_estop(self, request: Any, response: Any) -> Any:  # noqa: ARG002 (Trigger has no request data)
        response.success, response.message = self.guard.reset_estop()
        log.warning("e-stop reset requested: %s (%s)", "released" if response.success else "refused",
                    response.message)
        return response

    def _watchdog_tick(self) -> None:
        if self.guard.watchdog_expired():
            self._watchdog_holding = True
            self._warn("watchdog", f"watchdog: no action for {self.cfg.safety.watchdog_timeout_s} s, holding")
        if self._watchdog_holding:  # every tick until an action comes: the hold converges at max speed
            self._hold("watchdog")

    # ------------------------------------------------------------------ commands
    def _measured(self) -> np.ndarray:
        return measured_position(self.cache, self.cartesian, self.cfg.arm_joints, self.limiter.low.shape[0])

    def _publish(self, target: np.ndarray, grip_opening: float | None, frame_stamp: float | None = None) -> None:
        if self._target_pub is not None:  # the safety node interpolates and commands at command_hz
            from robot_rl.hardware.ros2.safety_node import target_msg
            self._target_pub.publish(target_msg(target, grip_opening, frame_stamp))
            return
        msg = ros_io.command_msg(self.cfg.command, self.cfg.arm_joints, self.cfg.topics.base_frame, target,
                                 ros_io.now_stamp(self.node), self.period)
        assert self._command_pub is not None
        self._command_pub.publish(msg)  # recorded off the wire (see _make_io), as ros2 bag would
        if self._gripper_pub is not None and grip_opening is not None:
            self._gripper_pub.publish(ros_io.float64_array_msg([grip_opening]))

    def _record(self, topic: str, msg: Any) -> None:
        if self._bag is not None:
            self._bag.add(topic, ros_io.wall_ns(), self._serialize(msg))

    def _hold(self, reason: str) -> None:
        """Command the hold (:meth:`TargetLimiter.hold`); nothing when there is neither a previous command nor a
        measurement (the controller keeps its own). Never raises: it runs in executor callbacks."""
        with self._cmd_lock:
            key = reason.split(":")[0].split(" ")[0]
            self.holds[key] = self.holds.get(key, 0) + 1
            target = self.limiter.hold(self._measured())
            if target is not None:
                self._publish(target, None)

    # ------------------------------------------------------------------ observations
    def _observe(self) -> dict[str, np.ndarray] | None:
        """The observation, or None when a sensor is stale, missing or yields a non-finite state."""
        if self.cache.stale(self.cfg.safety.sensor_timeout_s):
            return None
        latest, previous = self.cache.snapshot()
        try:
            state = assemble_state(latest["joint_states"].value, latest["ee_pose"], previous, self.cfg.arm_joints,
                                   self.cfg.gripper_joints)
        except (KeyError, ValueError) as e:  # e.g. a velocity overflow from two poses stamped 1 ns apart
            self.guard.count("bad_sensor")
            self._warn("bad-state", f"holding the robot: {e}")
            return None
        obs = {"state": state}
        stamp_now = self.cache.stamp_clock()
        self._frame_age_s = 0.0  # the oldest camera frame in this observation (by its header stamp)
        self._frame_stamp: float | None = None
        for camera in self.cameras:
            sample = latest[f"images/{camera}"]
            obs[f"images/{camera}"] = sample.value
            self._frame_age_s = max(self._frame_age_s, stamp_now - sample.stamp)
            self._frame_stamp = sample.stamp if self._frame_stamp is None else min(self._frame_stamp, sample.stamp)
        return obs

    def _wait_until_safe(self) -> tuple[dict[str, np.ndarray] | None, bool]:
        """Observation once nothing forces a hold; meanwhile hold (once per period) and report."""
        interrupted = False
        while True:
            reason = self.guard.hold_reason(self.cache.stale(self.cfg.safety.sensor_timeout_s))
            obs = self._observe() if reason is None else None
            if obs is not None:
                return obs, interrupted
            interrupted = True
            reason = reason or "bad sensor"
            self._warn(f"hold:{reason.split(':')[0]}", f"holding the robot: {reason}")
            self._hold(reason)
            if self.stop.wait(self.period):
                return None, True

    def _enter_realtime(self) -> None:
        """The policy loop's real-time setup (``policy_realtime``), once, from the thread that runs the loop
        (at the first ``reset``); the executor and transport threads stay normal."""
        if self.realtime is None:
            rt = self.cfg.policy_realtime
            self.realtime = enter_realtime(rt, "robot_rl_actor_node policy loop")
            self._spin_s = spin_window(rt, self.period)
            self._gc = GcPacer(self.realtime.gc_frozen, rt.gc_every_s)

    def _sleep_to_tick(self) -> None:
        """Hybrid wait to the current deadline of the control schedule (absolute, no drift; an overrun skips
        to the next deadline ahead rather than bursting), then advance it."""
        wait_until(self._schedule.deadline, self._spin_s, self.clock)
        self._schedule.advance(self.clock())

    def _request_scene_reset(self) -> None:
        """``topics.episode_reset``, then wait (at most ``reset_time_s``) until every camera has a frame stamped
        after the request, so the episode's first observation shows the reset scene."""
        assert self._episode_reset_pub is not None
        requested = self.cache.stamp_clock()
        self._episode_reset_pub.publish(ros_io.message_type("bool")(data=True))
        deadline = self.clock() + self.cfg.reset_time_s
        while self.clock() < deadline and not self.stop.is_set():
            latest, _ = self.cache.snapshot()
            if all(f"images/{c}" in latest and latest[f"images/{c}"].stamp > requested for c in self.cameras):
                return
            self.stop.wait(0.005)
        self._warn("scene-reset", f"no camera frame after the scene reset request within {self.cfg.reset_time_s} s")

    # ------------------------------------------------------------------ RobotEnv
    def reset(self, *, seed: int | None = None) -> dict[str, np.ndarray]:  # noqa: ARG002 (a robot has no seed)
        self._enter_realtime()
        self._finish_bag()
        self.guard.arm()
        self._watchdog_holding = False
        obs, _ = self._wait_until_safe()
        if obs is None:
            raise StoppedDuringReset("stopped while waiting for the robot's sensors")
        deadline = self.clock() + self.cfg.reset_time_s
        with self._cmd_lock:
            self.limiter.reset(self._measured())
        self._schedule = DeadlineSchedule(self.period, self.clock() + self.period)
        while self.clock() < deadline and not self.stop.is_set():
            with self._cmd_lock:
                if self.guard.hold_reason(self.cache.stale(self.cfg.safety.sensor_timeout_s)) is None:
                    measured = self._measured()
                    if np.abs(measured - self.home).max() < 0.005:
                        break
                    self._publish(self.limiter(self.home, measured), self._grip_open)
            self._sleep_to_tick()
        if self._episode_reset_pub is not None:
            self._request_scene_reset()
        first_tick = None  # the frame-locked tick the episode starts on
        if self.cfg.camera_sync:  # the frame rate must be known to lock the first tick to the frames
            deadline = self.clock() + 1.0
            while (self._camera_sync.frame_interval.period is None and self.clock() < deadline
                   and not self.stop.is_set()):
                self.stop.wait(0.01)
            first_tick = self._camera_sync.wait_for_next_frame(self.cache)  # as fresh as a tick's, on the old grid
        obs, _ = self._wait_until_safe()
        if obs is None:
            raise StoppedDuringReset("stopped while resetting")
        with self._cmd_lock:
            self.limiter.reset(self._measured())
        self._success, self._steps = False, 0
        self._episode += 1
        if self.cfg.bag_dir:
            self._bag = EpisodeBag(self._bag_topics)
        self._last_obs, self._obs_time, self._obs_frame_age_s = obs, self.clock(), self._frame_age_s
        self._obs_frame_stamp = self._frame_stamp
        # The schedule starts on the tick the first observation was meant for (its frame + margin), not at
        # _obs_time: reading the observation takes a few ms past the margin, and aligning that later time to
        # the frames moved every episode's ticks onto the next camera frame (the actor's phase crept one camera
        # period per episode, and the safety node relocked its command slot at nearly every episode start).
        start = first_tick if first_tick is not None else self._obs_time
        self._schedule = DeadlineSchedule(self.period, start)
        self._camera_sync.restart(self._schedule)
        self._camera_sync.align(start, self.cache)  # lock to the frames now (a free jump: nothing timed)
        self._schedule.advance(self._obs_time)
        return obs

    def step(self, action: np.ndarray) -> StepResult:
        action = np.asarray(action, np.float32).reshape(-1)
        with self._cmd_lock:
            reason = self.guard.hold_reason(self.cache.stale(self.cfg.safety.sensor_timeout_s))
            if action.shape != self.action_spec.shape or not np.isfinite(action).all():
                self.guard.count("non_finite")
                reason = reason or f"bad action {action}"
            if reason is not None:
                self._warn(f"hold:{reason.split(':')[0].split(' ')[0]}", f"holding the robot: {reason}")
                self._hold(reason)
            else:
                move = np.clip(action[:self.n_move], -1.0, 1.0).astype(np.float64)
                target = self.limiter(self.limiter.target + self.scale * move, self._measured())
                grip = None
                if self._has_gripper and not self.limiter.holding:
                    grip = self.cfg.command.gripper_closed if action[-1] > 0 else self.cfg.command.gripper_open
                self._publish(target, grip, self._obs_frame_stamp)
            self._watchdog_holding = False
            self.guard.action_arrived()  # a bad action is still an action: the step holds, not the watchdog
        now = self.clock()
        self.latency_ms.append((now - self._obs_time) * 1e3)
        self.frame_to_command_ms.append((now - self._obs_time + self._obs_frame_age_s) * 1e3)
        self.frame_age_ms.append(self._obs_frame_age_s * 1e3)
        self.tick_times.append(now)
        for buf in (self.latency_ms, self.tick_times, self.frame_to_command_ms, self.frame_age_ms):
            if len(buf) > 20_000:
                del buf[:10_000]
        if self._bag is not None:
            from std_msgs.msg import Float32MultiArray
            self._record("/robot_rl/action", Float32MultiArray(data=[float(a) for a in action]))
        self._gc.after_tick()  # the command is out: the slack of this period is here
        for task in self.slack_tasks:
            task()
        self._sleep_to_tick()
        self._camera_sync.wait_for_late_frame(self.cache)
        obs, interrupted = self._wait_until_safe()
        self._camera_sync.align(self._schedule.deadline - self.period, self.cache)
        if obs is None:  # stopping: hand back the last observation, episode cut
            obs, interrupted = self._last_obs, True
        self._steps += 1
        success = self._success and not interrupted
        truncated = not success and (interrupted or self._steps >= self.max_episode_steps)
        if self._bag is not None:
            from std_msgs.msg import Float32MultiArray
            self._record("/robot_rl/reward", Float32MultiArray(data=[float(success)]))
        self._last_obs, self._obs_time, self._obs_frame_age_s = obs, self.clock(), self._frame_age_s
        self._obs_frame_stamp = self._frame_stamp
        return StepResult(obs, float(success), success, truncated, success)

    def _finish_bag(self) -> None:
        bag, self._bag = self._bag, None
        if bag is not None and len(bag):
            from pathlib import Path
            path = bag.write(Path(self.cfg.bag_dir) / f"episode_{self._episode:06d}")
            log.info("episode %d: %d messages -> %s", self._episode, len(bag), path)

    def stats(self) -> dict[str, float]:
        lat = np.asarray(self.latency_ms[-5000:] or [0.0])
        ticks = np.diff(np.asarray(self.tick_times[-5000:]))
        jitter = np.abs(ticks - self.period) * 1e3 if ticks.size else np.zeros(1)
        frame = np.asarray(self.frame_to_command_ms[-5000:] or [0.0])
        age = np.asarray(self.frame_age_ms[-5000:] or [0.0])
        return {"obs_to_command_p50_ms": float(np.percentile(lat, 50)),
                "frame_age_p99_ms": float(np.percentile(age, 99)),
                "frame_to_command_p99_ms": float(np.percentile(frame, 99)),
                "obs_to_command_p99_ms": float(np.percentile(lat, 99)),
                "period_jitter_p50_ms": float(np.percentile(jitter, 50)),
                "period_jitter_p99_ms": float(np.percentile(jitter, 99)),
                **{f"holds/{k}": float(v) for k, v in self.holds.items()},
                **{f"guard/{k}": float(v) for k, v in self.guard.counts.items()},
                "missed_ticks": float(self._schedule.missed),
                **(self.realtime.stats("realtime") if self.realtime is not None else {}),
                "limiter/refused": float(self.limiter.refused),
                "limiter/bad_measured": float(self.limiter.bad_measured)}

    def close(self) -> None:
        self.stop.set()
        self._finish_bag()
        with self._cmd_lock:
            target = self.limiter.hold(self._measured())  # leave the robot holding still
            if target is not None:
                self._publish(target, None)
