"""Typed parameters of the ROS 2 robot node and the twin node, read from a ROS 2 parameter yaml file.

The launch files pass ``launch/config/*.yaml`` to the nodes (``--ros-args --params-file``); rclpy declares
every parameter found there, and :func:`from_params` turns the flat dotted names (``topics.joint_states``)
into this dataclass tree. An unknown name or a wrong type is an error, never a silent default. The same
file can be read without ROS (:func:`load_params_file`), e.g. by tests and the benchmark.
Light: importing this never imports rclpy.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from robot_rl.config import ConfigNode, _freeze
from robot_rl.hardware.ros2.realtime import RealtimeConfig

PANDA_ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
PANDA_FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
PANDA_HOME_Q = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


@dataclass
class QosConfig(ConfigNode):
    """Quality of service of sensor and command topics (ROS 2 conventions for ros2_control)."""

    sensor_reliability: str = "best_effort"
    """``best_effort`` (sensor-data convention: never block on a lost frame) or ``reliable``."""
    sensor_depth: int = 1
    """Keep-last depth of sensor subscriptions (1: only the newest sample matters)."""
    command_reliability: str = "reliable"
    """Commands must arrive: ``reliable`` (or ``best_effort`` for controllers that ask for it)."""
    command_depth: int = 10
    """Keep-last depth of command publishers."""


@dataclass
class TopicsConfig(ConfigNode):
    """Topic names. Cameras are listed in the order of ``cameras``/``camera_topics``."""

    joint_states: str = "/joint_states"
    """``sensor_msgs/JointState`` of the arm and gripper joints."""
    ee_pose: str = "/robot_rl/ee_pose"
    """``geometry_msgs/PoseStamped`` of the TCP in the base frame (used when ``ee_pose_source=topic``)."""
    ee_pose_source: str = "topic"
    """``topic`` (``ee_pose``) or ``tf`` (``/tf`` + ``/tf_static``, chain ``base_frame`` -> ``ee_frame``)."""
    base_frame: str = "panda_link0"
    """Base frame of the robot (world frame of the state observation)."""
    ee_frame: str = "panda_hand_tcp"
    """TCP frame looked up in tf when ``ee_pose_source=tf``."""
    cameras: tuple[str, ...] = ("front", "wrist")
    """Camera names: observation keys ``images/<name>``."""
    camera_topics: tuple[str, ...] = ("/cameras/front/image_raw", "/cameras/wrist/image_raw")
    """``sensor_msgs/Image`` topics (rgb8 or bgr8), one per camera."""
    compressed_images: bool = False
    """Subscribe ``<topic>/compressed`` (``sensor_msgs/CompressedImage``, jpeg/png) instead of raw images."""
    command: str = "/cartesian_target"
    """Arm command topic; its type follows ``command.mode``."""
    gripper_command: str = "/gripper_controller/commands"
    """``std_msgs/Float64MultiArray`` with the finger opening (m, sum of both fingers); empty = no gripper."""
    target: str = "/robot_rl/target"
    """Actor -> ``robot_rl_safety_node`` position targets (``std_msgs/Float64MultiArray``, layout
    ``robot_rl_target_v2``: see ``safety_node.target_msg``) when ``command.via_safety_node`` is on."""
    success: str = "/robot_rl/success"
    """``std_msgs/Bool``: True ends the episode as a success (operator key, classifier, or the twin)."""
    episode_reset: str = ""
    """``std_msgs/Bool`` the actor publishes once its reset has brought the arm home, before it reads the first
    observation of an episode: a scene reset request (the twin node re-places the cube; on a robot, a reset
    routine or the operator's cue may listen). Empty = none (the scene is reset by hand)."""
    estop: str = "/robot_rl/estop"
    """``std_msgs/Bool`` e-stop input: True latches a hold (the robot stays where it is). Only the
    ``~/reset_estop`` service (``std_srvs/Trigger``) of the node that owns the command stream releases it
    (``robot_rl_safety_node``, or the actor without ``command.via_safety_node``), and only while the input
    reads False."""
    estop_latched: str = "/robot_rl/estop_latched"
    """``std_msgs/Bool`` that ``robot_rl_safety_node`` publishes (reliable, transient local) on every change of
    its e-stop latch and every 0.1 s: True while latched. With ``command.via_safety_node`` the actor reflects it
    (pauses the policy, episode interrupted) and keeps no latch of its own; no message within
    ``safety.sensor_timeout_s`` (no safety node) holds the actor too."""


@dataclass
class CommandConfig(ConfigNode):
    """How actions become controller commands."""

    mode: str = "cartesian_pose"
    """``cartesian_pose`` (PoseStamped TCP target; action = dx, dy, dz, grip), ``joint_trajectory``
    (JointTrajectoryController) or ``forward_position`` (forward_command_controller Float64MultiArray);
    the joint modes take action = one delta per arm joint + grip."""
    action_scale: float = 0.025
    """Cartesian modes: TCP displacement (m) per step at action +-1 (the twin's ``action_scale``)."""
    joint_action_scale: float = 0.05
    """Joint modes: joint displacement (rad) per step at action +-1."""
    gripper_open: float = 0.08
    """Finger opening (m) commanded for grip <= 0."""
    gripper_closed: float = 0.0
    """Finger opening (m) commanded for grip > 0."""
    trajectory_time_s: float = 0.0
    """``time_from_start`` of JointTrajectory points (0 = one control period)."""
    via_safety_node: bool = False
    """The actor publishes its (limited) targets on ``topics.target`` and ``robot_rl_safety_node``, a separate
    process, interpolates them and commands the controller at ``command_hz`` (both launch files). False: the
    actor commands the controller itself at ``control_hz`` (single-process route)."""
    interpolation_s: float = 0.0
    """``robot_rl_safety_node``: a new target is reached by linear interpolation over this time (s, at most one
    policy period), every command still through the limiter. 0 = the new target at once, shaped only by the
    limiter's speed and acceleration limits and the controller, as the twin's env applies an action (its OSC
    target jumps): interpolating over a whole policy period delayed every action by about one period, so the
    robot executed a different action sequence than the one the learner's twin trains and evaluates on."""


@dataclass
class SafetyConfig(ConfigNode):
    """Limits enforced below the policy, on every command (and on teleop commands too)."""

    workspace_low: tuple[float, float, float] = (0.25, -0.3, 0.015)
    """Workspace box lower corner (m, base frame); Cartesian targets are clipped into it."""
    workspace_high: tuple[float, float, float] = (0.75, 0.3, 0.4)
    """Workspace box upper corner (m, base frame)."""
    max_ee_speed: float = 0.3
    """Largest TCP target speed per axis (m/s)."""
    max_ee_accel: float = 3.0
    """Largest change of TCP target speed per axis (m/s^2)."""
    max_target_lead: float = 0.05
    """The TCP target may lead the measured TCP by at most this distance (m), so a blocked hand cannot wind up."""
    joint_lower: tuple[float, ...] = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
    """Joint position lower limits (rad), joint modes."""
    joint_upper: tuple[float, ...] = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
    """Joint position upper limits (rad), joint modes."""
    max_joint_speed: float = 1.0
    """Largest joint target speed (rad/s), joint modes."""
    max_joint_accel: float = 10.0
    """Largest change of joint target speed (rad/s^2), joint modes."""
    max_joint_lead: float = 0.15
    """Each joint target may lead the measured joint by at most this much (rad), so a blocked joint cannot wind
    up (joint modes; ``max_target_lead`` is the Cartesian counterpart)."""
    watchdog_timeout_s: float = 0.3
    """No fresh action for this long: the node commands a hold at the measured position."""
    sensor_timeout_s: float = 0.25
    """A sensor whose newest message is older than this is stale: the robot holds and it is reported."""


@dataclass
class RobotNodeConfig(ConfigNode):
    """Parameters of ``robot_rl_actor_node`` (the robot env + actor on the robot controller)."""

    train_config: str = ""
    """Resolved training config from the learner (``run_dir/config_learner.yaml``); empty = the defaults."""
    overrides: tuple[str, ...] = ("env.obs=pixels",)
    """Hydra overrides applied on top of ``train_config`` (e.g. ``transport.host=10.0.0.5``)."""
    learner_host: str = ""
    """Learner address (``transport.host``); empty = as in ``train_config``."""
    keys_dir: str = ""
    """CurveZMQ keys directory (``transport.keys_dir``); empty = as in ``train_config``."""
    actor_id: str = ""
    """Name of this robot's actor (``actor.actor_id``); empty = as in ``train_config``."""
    key_name: str = ""
    """CurveZMQ key name (``keys/actors/<name>.key_secret``) when ``transport.keys_dir`` is set."""
    inference: str = "auto"
    """``actor.inference`` of this node: ``auto`` runs the policy in ONNX Runtime where it exports and
    onnxruntime is installed (about 4x faster per tick than PyTorch on the benchmark's 2-camera policy), else in
    torch; ``torch`` or ``onnxruntime`` to choose."""
    control_hz: float = 10.0
    """Policy rate (Hz): one action per period, as on the twin."""
    command_hz: float = 100.0
    """Rate (Hz, up to 1000) at which ``robot_rl_safety_node`` sends interpolated, limited commands to the
    controller, whatever the actor does (``command.via_safety_node``)."""
    camera_sync: bool = True
    """Phase-lock the policy tick to the frames of the first camera in ``topics.cameras``: each tick moves the
    control schedule by at most 1 ms so that the observation is taken ``camera_sync_margin_s`` after that
    camera's frame arrived, a fresh frame instead of one up to a camera period old. Applies while the measured
    camera rate is a whole multiple of ``control_hz`` (30 Hz at 10 Hz); otherwise the schedule is left alone."""
    camera_sync_margin_s: float = 0.002
    """How long after the synced frame's arrival (decoded, in the cache) the observation is taken: room for the
    jitter of the frames' arrival."""
    camera_sync_wait_s: float = 0.004
    """With ``camera_sync``: the longest wait at a tick for a synced frame that is late (the newest one is more
    than half a camera period old): a few ms of policy-period jitter instead of acting on a frame one camera
    period old."""
    align_commands: bool = True
    """``robot_rl_safety_node`` phase-locks its command schedule onto the actor's targets
    (:class:`robot_rl.hardware.ros2.command_phase.TargetSlotLock`): the command slot that serves them sits
    ``command_slot_guard_s`` after the 99th percentile of their recent arrival times or 3x their p90 - p50 spread
    after the median, whichever is later (learned from their jitter), so a target rarely waits a whole command
    period; the schedule moves by at most 0.3 ms per target (the rate stays steady).
    Applies while ``command_hz`` is a whole multiple of ``control_hz``."""
    command_slot_guard_s: float = 0.0015
    """With ``align_commands``: how far after the late edge of the targets' learned arrivals their command slot
    sits (at most 0.15 command periods). Each target waits this much longer at the median; a target later than
    the slot waits a whole command period. At 100 Hz, 1.5 ms instead of 0.5 took camera frame -> command p99 from
    10.3-19.8 ms to 12.1-13.7 ms in ``benchmarks/ros2_loop.py`` (p50 about 1 ms later)."""
    command_prepare_s: float = 0.0015
    """``robot_rl_safety_node`` computes each command (interpolation at the deadline's time, the safety layer,
    the message) this long before its deadline and only publishes it at the deadline, so the command's timing
    does not carry the computation's jitter (Python under the GIL, shared with the executor thread: up to
    1-2 ms). A target, e-stop or e-stop reset arriving inside this window makes the command be computed again
    at the deadline: every target is still served by the first command after it. Capped at a quarter of the
    command period; 0 = compute at the deadline."""
    command_gil_switch_s: float = 0.002
    """``sys.setswitchinterval`` of ``robot_rl_safety_node`` from a prepared command until it is published (then
    back to ``safety_realtime.gil_switch_s``): the executor thread cannot take the GIL from the spinning loop in
    that window, so the loop never waits to get it back at the deadline (each hand-over can cost a wake-up of the
    other CPU). A target arriving then is taken by the executor at most this much later; one the slot missed is
    served by the next command. 0 = keep ``gil_switch_s`` throughout."""
    max_episode_steps: int = 100
    """Time limit of an episode in control steps."""
    image_size: int = 64
    """Square size (px) of image observations: each camera's frame is cropped (``camera_crops``) and resized to
    it by the pixel route's per-camera function (``robot_rl.images.prepare_camera``)."""
    camera_crops: tuple[int, ...] = ()
    """Region of interest per camera in native pixels, ``x, y, width, height`` for each camera of
    ``topics.cameras`` in order, flattened (a ROS parameter holds no nested list): 8 integers for two cameras.
    Empty = every camera's centre square. A crop that does not fit a frame drops it (the camera goes stale)."""
    task: str = "pick up the red cube and lift it"
    """Natural-language task description stored with each episode."""
    arm_joints: tuple[str, ...] = PANDA_ARM_JOINTS
    """Arm joint names, in state/command order."""
    gripper_joints: tuple[str, ...] = PANDA_FINGER_JOINTS
    """Finger joint names; the state holds the sum of their positions (opening, m)."""
    home_joints: tuple[float, ...] = PANDA_HOME_Q
    """Joint-mode reset target (rad)."""
    home_position: tuple[float, float, float] = (0.45, 0.0, 0.25)
    """Cartesian-mode reset target of the TCP (m, base frame)."""
    reset_time_s: float = 3.0
    """Longest time a reset moves towards the home target (at the safety speed limits)."""
    max_steps: int = 0
    """Stop after this many control steps (0 = run until SIGINT/SIGTERM); for tests and benchmarks."""
    bag_dir: str = ""
    """Write every episode's messages to ``<bag_dir>/episode_<n>`` as a rosbag2 MCAP bag; empty = off."""
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    qos: QosConfig = field(default_factory=QosConfig)
    command: CommandConfig = field(default_factory=CommandConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    safety_realtime: RealtimeConfig = field(default_factory=lambda: RealtimeConfig(priority=50, executor_priority=49,
                                                                                   gil_switch_s=0.0001,
                                                                                   cpu_dma_latency_us=0))
    """Real-time setup of ``robot_rl_safety_node``: command loop SCHED_FIFO 50 (memory locked, gc paced), its
    executor 49; a GIL switch interval of 0.1 ms, so that the loop gets the GIL back quickly after sleeping
    (``command_gil_switch_s`` applies from a prepared command to its publish); and ``/dev/cpu_dma_latency`` held
    at 0 us while the node runs (CPUs out of idle states: on this VM the command jitter p99 of an otherwise idle
    machine came down from 0.3-2.1 ms to about 0.2 ms, ``benchmarks/ros2_loop.py``)."""
    policy_realtime: RealtimeConfig = field(default_factory=lambda: RealtimeConfig(priority=40, executor_priority=39,
                                                                                   lock_memory=False))
    """Real-time setup of the actor: policy loop SCHED_FIFO 40, below the command loop, its executor (camera
    decoding) 39; memory not locked (torch maps far more than it touches)."""


@dataclass
class TwinNodeConfig(ConfigNode):
    """Parameters of ``robot_rl_twin_node``: the MuJoCo Panda twin published on the real robot's topics."""

    physics_hz: float = 100.0
    """Rate of the simulation timer; each tick integrates ``1 / physics_hz`` seconds of physics."""
    state_hz: float = 100.0
    """Rate of ``/joint_states`` and the TCP pose."""
    camera_hz: float = 15.0
    """Rate of camera images."""
    image_size: int = 64
    """Rendered square image size (px)."""
    seed: int = 0
    """Cube placement seed."""
    object_xy_range: float = 0.0
    """Cube start randomisation half-width (m), as the twin's ``randomization.object_xy_range``."""
    command_mode: str = "cartesian_pose"
    """Which command the twin's controller accepts on ``topics.command``: ``cartesian_pose`` (operational-space
    control to the TCP target), ``joint_trajectory`` or ``forward_position`` (joint-space PD to the target)."""
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    qos: QosConfig = field(default_factory=QosConfig)
    arm_joints: tuple[str, ...] = PANDA_ARM_JOINTS
    """Joint names published (and accepted in joint commands), in MuJoCo order."""
    gripper_joints: tuple[str, ...] = PANDA_FINGER_JOINTS
    """Finger joint names published in ``/joint_states``."""
    realtime: RealtimeConfig = field(default_factory=lambda: RealtimeConfig(priority=46, executor_priority=45,
                                                                            lock_memory=False, freeze_gc=False))
    """The twin's executor (physics, sensor and camera timers) and DDS threads at ``SCHED_FIFO``
    ``executor_priority``, as the robot's driver (ros2_control's controller manager) and camera drivers run on a
    robot PC (only ``enabled`` and ``executor_priority`` are used). At normal priority the learner's and other
    load starved it: its sensors went stale (more than half of a 40-minute run's episodes were cut by stale
    holds) and its physics fell behind the wall clock, a slower robot than the one the policy learns on."""
    max_catch_up_s: float = 0.1
    """Physics keeps wall-clock time: a late tick integrates the time it missed, up to this much (s) per tick;
    a longer stall is dropped (counted in ``physics_dropped_s``) rather than replayed in one burst."""
    stats_file: str = ""
    """Write the twin's physics-clock figures (:meth:`TwinNode.stats`) there as JSON on exit (benchmarks);
    empty = off."""
    recover_margin_m: float = 0.05
    """At each episode reset the twin puts the arm back home when its TCP is more than this far (m) outside the
    workspace box, or its state is non-finite (counted in ``arm_recoveries``): a simulated arm driven under
    the table stays there, where a real Panda would have stopped on a reflex and an operator recovered it."""


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"parameter {name}: expected a list, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_coerce(item, v, name) for v in value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise TypeError(f"parameter {name}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: type, flat: Mapping[str, Any], prefix: str, default: Any = None) -> Any:
    """``cls`` from the flat names under ``prefix``, on top of ``default`` (a nested field's own default, e.g.
    ``policy_realtime``'s lower priority) or of the class defaults."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            own = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            kwargs[f.name] = _build(tp, flat, name + ".", own)
        elif name in flat:
            kwargs[f.name] = _coerce(tp, flat[name], name)
    return dataclasses.replace(default, **kwargs) if default is not None else cls(**kwargs)


def from_params(cls: type, flat: Mapping[str, Any]) -> Any:
    """Build ``cls`` (sealed) from flat dotted parameter names; unknown names and wrong types are errors."""
    def known(c: type, prefix: str) -> set[str]:
        out: set[str] = set()
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            tp = hints[f.name]
            out |= known(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else {prefix + f.name}
        return out
    ignored = {"use_sim_time", "start_type_description_service"}  # declared by rclpy itself
    unknown = sorted(set(flat) - known(cls, "") - ignored)
    if unknown:
        raise KeyError(f"unknown {cls.__name__} parameters: {unknown}")
    cfg = _freeze(_build(cls, flat, ""))
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    """Cross-field checks that a yaml typo would otherwise turn into a wrong robot motion."""
    topics = cfg.topics
    if len(topics.cameras) != len(topics.camera_topics):
        raise ValueError(f"{len(topics.cameras)} cameras but {len(topics.camera_topics)} camera_topics")
    if topics.ee_pose_source not in ("topic", "tf"):
        raise ValueError(f"topics.ee_pose_source must be 'topic' or 'tf', got {topics.ee_pose_source!r}")
    for what in ("sensor_reliability", "command_reliability"):
        if getattr(cfg.qos, what) not in ("best_effort", "reliable"):
            raise ValueError(f"qos.{what} must be 'best_effort' or 'reliable'")
    if isinstance(cfg, RobotNodeConfig):
        if cfg.command.mode not in ("cartesian_pose", "joint_trajectory", "forward_position"):
            raise ValueError(f"command.mode {cfg.command.mode!r} is not cartesian_pose, joint_trajectory or "
                             "forward_position")
        n_cameras = len(topics.cameras)
        if cfg.camera_crops and len(cfg.camera_crops) != 4 * n_cameras:
            raise ValueError(f"camera_crops has {len(cfg.camera_crops)} values; expected 4 (x, y, width, height) "
                             f"for each of the {n_cameras} cameras {list(topics.cameras)}, or none")
        if any(v < 0 for v in cfg.camera_crops) or any(cfg.camera_crops[i] <= 0 for i in range(len(
                cfg.camera_crops)) if i % 4 >= 2):
            raise ValueError(f"camera_crops {list(cfg.camera_crops)}: x, y must be >= 0 and width, height > 0")
        n = len(cfg.arm_joints)
        for what in ("joint_lower", "joint_upper"):
            if len(getattr(cfg.safety, what)) != n:
                raise ValueError(f"safety.{what} has {len(getattr(cfg.safety, what))} entries for {n} joints")
        if len(cfg.home_joints) != n:
            raise ValueError(f"home_joints has {len(cfg.home_joints)} entries for {n} joints")
        for what in ("safety_realtime", "policy_realtime"):
            rt = getattr(cfg, what)
            if rt.enabled and not 1 <= rt.priority <= 99:
                raise ValueError(f"{what}.priority must be 1-99 (SCHED_FIFO), got {rt.priority}")
            if rt.enabled and not 0 <= rt.executor_priority < rt.priority:
                raise ValueError(f"{what}.executor_priority must be 0 (normal) or below {what}.priority "
                                 f"({rt.priority}), got {rt.executor_priority}")
            if rt.spin_s < 0 or rt.gc_every_s <= 0:
                raise ValueError(f"{what}.spin_s must be >= 0 and {what}.gc_every_s > 0")
        if not 0 < cfg.command_hz <= 1000:
            raise ValueError(f"command_hz must be in (0, 1000], got {cfg.command_hz}")
        if not 0 <= cfg.command_slot_guard_s < float("inf"):
            raise ValueError(f"command_slot_guard_s must be finite and >= 0, got {cfg.command_slot_guard_s}")
        if not 0 <= cfg.command_gil_switch_s < float("inf"):
            raise ValueError(f"command_gil_switch_s must be finite and >= 0, got {cfg.command_gil_switch_s}")
        if not 0 <= cfg.command_prepare_s < float("inf"):
            raise ValueError(f"command_prepare_s must be finite and >= 0, got {cfg.command_prepare_s}")
        if cfg.control_hz <= 0 or cfg.safety.sensor_timeout_s <= 0 or cfg.safety.watchdog_timeout_s <= 0:
            raise ValueError("control_hz, safety.sensor_timeout_s and safety.watchdog_timeout_s must be > 0")
        for what in ("max_ee_speed", "max_ee_accel", "max_target_lead", "max_joint_speed", "max_joint_accel",
                     "max_joint_lead"):
            value = getattr(cfg.safety, what)
            if not 0 < value < float("inf"):
                raise ValueError(f"safety.{what} must be finite and > 0, got {value}")


# Launch arguments real.launch.py / sim.launch.py forward to the actor node as parameters (name -> help text).
LAUNCH_FORWARDED = {
    "train_config": "the learner's run_dir/config_learner.yaml",
    "learner_host": "learner address (transport.host)",
    "keys_dir": "CurveZMQ keys directory (transport.keys_dir)",
    "key_name": "this robot's key name (keys/actors/<name>.key_secret)",
    "actor_id": "this robot's actor id",
}


def launch_overrides(arguments: Mapping[str, str]) -> dict[str, str]:
    """The launch arguments to pass as node parameters on top of the params files: only the ones given.

    A parameter dict entry always wins over the params file, so forwarding an unset argument's "" default
    would silently blank ``learner_host`` etc. set in real.yaml."""
    unknown = set(arguments) - set(LAUNCH_FORWARDED)
    if unknown:
        raise KeyError(f"not a forwarded launch argument: {sorted(unknown)}")
    return {name: value for name, value in arguments.items() if value != ""}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _file_params(path: str | Path, node_name: str) -> dict[str, Any] | None:
    import yaml

    doc = yaml.safe_load(Path(path).read_text()) or {}
    for key in (node_name, f"/{node_name}", "/**"):
        if key in doc and "ros__parameters" in doc[key]:
            return flatten(doc[key]["ros__parameters"])
    return None


def load_params_file(path: str | Path, node_name: str, cls: type) -> Any:
    """Read ``<node_name>: ros__parameters:`` from a ROS 2 parameter file without ROS (PyYAML)."""
    flat = _file_params(path, node_name)
    if flat is None:
        raise KeyError(f"{path}: no '{node_name}: ros__parameters:' section")
    return from_params(cls, flat)


def load_params_files(paths: Sequence[str | Path], node_name: str, cls: type,
                      overrides: Mapping[str, Any] | None = None) -> Any:
    """``node_name``'s parameters from several files, later files winning per parameter (as rcl applies
    ``--params-file`` in order), then ``overrides``. Files without that node's section contribute nothing; at
    least one must have it."""
    flat: dict[str, Any] = {}
    found = False
    for path in paths:
        section = _file_params(path, node_name)
        if section is not None:
            flat.update(section)
            found = True
    if not found:
        raise KeyError(f"none of {list(map(str, paths))} has a '{node_name}: ros__parameters:' section")
    return from_params(cls, {**flat, **(overrides or {})})
