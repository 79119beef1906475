"""Typed configuration: hydra structured configs are the schema, every field documented, never mutated.

Groups (``robot_rl/conf/<group>/<name>.yaml`` or a dataclass stored under that group): ``env``, ``policy``,
``algo``, ``reward``, ``transport``, ``logger``. A component defines its own config dataclass (subclassing
:class:`EnvConfig`, :class:`PolicyConfig` or :class:`AlgoConfig`) and stores it with :func:`store`.
:func:`load_config` composes the defaults with command-line overrides (``learner.utd=4``) and returns a frozen
dataclass tree; an unknown key or a wrong type is an error, not a silent default.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import MISSING, OmegaConf

from robot_rl.specs import stable_hash

CONF_DIR = Path(__file__).parent / "conf"


class ConfigNode:
    """Base of every config dataclass: sealed after loading, so a run can never mutate its config."""

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise dataclasses.FrozenInstanceError(f"config is read-only: cannot set {type(self).__name__}.{name}")
        object.__setattr__(self, name, value)


@dataclass
class EnvConfig(ConfigNode):
    """Base of every env config. Subclasses add task-specific fields."""

    name: str = MISSING
    """Registered env name (``robot_rl.registry.ENVS``)."""
    seed: int = 0
    """Base seed; actor ``i`` env ``j`` uses ``seed + 1000 * i + j``."""
    obs: str = "state"
    """Observation mode: ``state`` (proprio + object state), ``pixels`` (cameras + proprio) or, where the env
    supports it, ``state+pixels`` (both: a state policy with a camera-only learned reward)."""
    image_size: int = 64
    """Square camera resolution in pixels when ``obs=pixels``."""
    max_episode_steps: int = 100
    """Time limit; reaching it truncates the episode."""


@dataclass
class PolicyConfig(ConfigNode):
    """Base of every policy config."""

    name: str = MISSING
    """Registered policy name (``robot_rl.registry.POLICIES``)."""
    obs_keys: tuple[str, ...] = ()
    """Observation keys the policy and critic read; empty = every key the env emits. ``[state]`` with
    ``env.obs=state+pixels``: the cameras are recorded (replay, episode files) only for the learned reward."""


@dataclass
class AlgoConfig(ConfigNode):
    """Base of every algorithm config."""

    name: str = MISSING
    """Registered algorithm name (``robot_rl.registry.ALGORITHMS``)."""
    batch_size: int = 256
    """Transitions per gradient update."""
    gamma: float = 0.99
    """Discount factor (also used by potential-based reward shaping)."""


@dataclass
class ReplayConfig(ConfigNode):
    capacity: int = 200_000
    """Online buffer size in transitions (memory is preallocated lazily, images stay uint8)."""
    demo_capacity: int = 50_000
    """Demo/intervention buffer size in transitions."""
    demo_ratio: float = 0.5
    """Fraction of every batch drawn from the demo buffer while it holds data (RLPD: 0.5)."""
    interventions_to_demo: bool = True
    """Also copy human-intervened transitions into the demo buffer."""
    prefetch: int = 2
    """Batches sampled ahead of time by a background thread (0 samples inline)."""


@dataclass
class TransportConfig(ConfigNode):
    kind: str = "zmq"
    """``zmq`` (processes, possibly on different machines) or ``inproc`` (one process, same interface)."""
    host: str = "127.0.0.1"
    """Learner address the actors connect to."""
    bind: str = "127.0.0.1"
    """Interface the learner binds to: loopback unless the user opts in (``0.0.0.0`` for all)."""
    transitions_port: int = 5555
    """ROUTER port for hello/heartbeat/transition chunks/acks."""
    weights_port: int = 5556
    """PUB port for policy weights."""
    chunk_size: int = 32
    """Transitions per chunk; a partial chunk is flushed at episode end or after ``flush_interval_s``."""
    flush_interval_s: float = 0.2
    """Longest a transition waits on the actor before its (partial) chunk is sent."""
    heartbeat_interval_s: float = 0.5
    """How often each side says it is alive."""
    peer_timeout_s: float = 5.0
    """A peer silent for this long is reported as lost (actors keep stepping and buffering)."""
    resend_after_s: float = 5.0
    """Unacked chunks are resent after this long (and immediately after a reconnect)."""
    max_message_bytes: int = 256 * 2**20
    """Size cap for one incoming message; larger frames are rejected by ZeroMQ and by the validator."""
    max_pending_bytes: int = 512 * 2**20
    """Memory bound for chunks the actor holds until the learner commits them; older ones spill to disk."""
    durability: str = "checkpoint"
    """``checkpoint``: the actor keeps every chunk until a learner checkpoint holds it (nothing is lost if the
    learner dies; real robots). ``ack``: forget a chunk once the learner acks it (a learner crash loses the
    data since its last checkpoint; for sims stepping thousands of image frames per second)."""
    spill_all_chunks: bool = True
    """With ``durability=checkpoint``: also write every chunk to the actor's spill directory when it is made
    (page cache, no fsync), so an actor process killed with SIGKILL loses nothing it chunked. The chunk is
    stacked straight into its spill file mapped in memory, so this costs no extra copy. Off: a killed actor loses its uncommitted chunks (its episode store still has the
    finished episodes; the soak measured 102 of 6,000 transitions lost to two actor kills). Ignored with
    ``durability=ack``, which trades durability for speed anyway."""
    shm_spill_fraction: float = 0.25
    """With ``spill_all_chunks``: those spill files go first to a RAM-backed directory (``/dev/shm``, paired
    with the spill directory), while they take at most this fraction of its size; beyond it, to the spill
    directory on disk. A tmpfs file survives ``kill -9`` of the actor like the page cache does, and is never
    written back to disk (on a disk file system the kernel wrote the short-lived chunk files out at up to
    1.4 GB/s, costing a third of the transport's throughput). A clean shutdown moves what is uncommitted to
    disk, so only a power cut or reboot with a killed actor loses RAM-held chunks. 0: disk only."""
    keys_dir: str = ""
    """Directory made by ``robot-rl keys``: enables CurveZMQ authentication + encryption when set."""


@dataclass
class LoggerConfig(ConfigNode):
    wandb: str = "offline"
    """wandb mode: ``offline`` (default, sync later with ``wandb sync``), ``online`` or ``disabled``."""
    project: str = "robot_rl"
    """wandb project name."""
    progress: bool = True
    """Show a rich progress display on the learner."""
    log_every_s: float = 5.0
    """Seconds between metric log lines."""


@dataclass
class LearnerConfig(ConfigNode):
    utd: float = 1.0
    """Update-to-data ratio: ``algo.update`` calls per ingested online transition (RLPD's critic UTD is this
    times ``algo.critic_updates_per_actor_update``)."""
    warmup_transitions: int = 500
    """Transitions (online + demo) required before the first update."""
    max_updates: int = 0
    """Stop after this many updates (0 = run until the actors finish or Ctrl-C)."""
    max_env_steps: int = 0
    """Stop when this many online transitions were ingested (0 = no limit)."""
    publish_every: int = 50
    """Publish policy weights every N updates."""
    pace_slack_steps: int = 0
    """Env steps sim actors may run ahead of ``updates / utd`` (0 = auto: 2 publish periods + 2 chunks)."""
    checkpoint_every_s: float = 60.0
    """Seconds between atomic checkpoints (policy, optimizers, algorithm, RNG, counters, replay)."""
    resume: bool = True
    """Resume from the latest ``run_dir/checkpoints/ckpt-*``; without one, rebuild online replay from the
    episodes in ``run_dir/episodes/`` (a run killed before its first checkpoint). false: always start fresh."""
    device: str = "auto"
    """torch device: ``auto`` picks CUDA when present."""
    idle_exit_s: float = 0.0
    """Exit when no actor has been connected for this long after data arrived (0 = never)."""
    eval_every_env_steps: int = 0
    """Sim only: run deterministic evaluation episodes every N online env steps (0 = off)."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation."""
    demos: str = ""
    """Episode-store directory whose episodes fill the demo buffer on a fresh start (``robot-rl demos``)."""
    drain_s: float = 30.0
    """After the budget is reached: longest wait for the actors' last chunks, each batch checkpointed and
    committed so the actors keep nothing pending (0 = exit right after the final checkpoint)."""
    value_check_episodes: int = 10
    """Critic over-estimation check (:mod:`robot_rl.value_check`): compare the critic's Q at the start of the
    last N finished online episodes with the returns they realised, on the rewards the algorithm trains on;
    logs ``value/*`` and warns when Q exceeds the best realised return by a wide margin (0 = off; algorithms
    with a ``q_values`` critic only)."""
    value_check_every_s: float = 30.0
    """Seconds between value checks (each labels and scores the kept episodes once)."""
    value_check_margin: float = 1.0
    """The over-estimation alarm's absolute margin over the best realised start-state return (reward units;
    the relative margin is half that return's magnitude, whichever is larger)."""
    normalize_state_online_until: int = 0
    """With ``policy.normalize_state``: keep refining the demos' state statistics with every online state the
    learner receives (running mean/variance over demos + online, :mod:`robot_rl.state_norm`) until this many
    states were counted, then keep them fixed; they reach the actors with the weights. 0: the demos' statistics
    only. Why: a few demos cover a sliver of the workspace, and states far outside it are clipped to the same
    value (``ObservationEncoder.STATE_CLIP`` standard deviations)."""


@dataclass
class ActorConfig(ConfigNode):
    actor_id: str = "actor-0"
    """Unique name of this actor (one per robot or sim process)."""
    num_envs: int = 1
    """Environments stepped by this actor process (sim only; batched policy inference)."""
    max_env_steps: int = 0
    """Stop after this many steps summed over envs (0 = forever)."""
    realtime: bool = False
    """Hold the env's control rate with a fixed-rate loop (always on for real robots)."""
    random_steps: int = 0
    """Uniformly random actions for this many initial steps (exploration before the first weights)."""
    store_dir: str = ""
    """Local episode store; default ``<run_dir>/episodes/<actor_id>``. Every episode is written here."""
    pace: bool = True
    """Sim only: wait while the learner is behind its update-to-data budget, so the UTD ratio holds however
    fast the twin steps. Ignored with ``realtime=true`` (a real robot never waits for the learner)."""
    wait_for_weights: bool = False
    """Block until the first weights arrive before stepping (otherwise act with the initial policy)."""
    batched_backend: str = ""
    """Sim only: step the ``num_envs`` twins as one batched env, one policy call and one env call per step
    (``cpu``: the vectorised twin of any registered env; ``warp``: the MuJoCo Warp pick-cube twin, on the GPU
    when there is one). Empty: the per-env loop of :class:`robot_rl.actor.Actor` (needed for ``hil``)."""
    inference: str = "torch"
    """How the actor runs its policy: ``torch`` (eager PyTorch), ``onnxruntime`` (the policy exported once to
    ONNX; each published set of weights becomes a new session; ``pip install 'robot_rl[onnx]'``), or ``auto``
    (ONNX Runtime where it can, else torch; the ROS actor node's default, ``inference`` there). On a robot PC the
    policy runs once per tick after its thread slept, and ONNX Runtime's one call costs about a quarter of PyTorch's
    eager dispatch then (README, ``benchmarks/ros2_loop.py``). ``onnxruntime`` takes single-step stateless policies
    only (``policy=gaussian``) and fails at start for others. Not for ``batched_backend`` actors."""


@dataclass
class HilConfig(ConfigNode):
    """Base of the ``hil`` group (human in the loop). ``hil=none`` is this base: no operator. The teleop
    presets (``hil=keyboard|spacemouse|gamepad|virtual``) extend it in ``robot_rl.hardware.teleop.config``."""

    name: str = "none"
    """Operator: ``none``, ``keyboard``, ``spacemouse``, ``gamepad`` or ``virtual`` (scripted expert)."""


@dataclass
class RewardConfig(ConfigNode):
    """Reward the learner trains on. ``none``: the recorded (env/robot) reward. Learned reward models
    (``reward=prm``, ``reward=classifier``) subclass this in ``reward_models/config.py``."""

    name: str = "none"
    """Registered reward model (``robot_rl.registry.REWARD_MODELS``) or ``none``."""


@dataclass
class DashboardConfig(ConfigNode):
    """The operator's live web page (``robot-rl dashboard RUN_DIR``; ``robot_rl/dashboard``)."""

    enabled: bool = False
    """Start the web server (its own process) with the learner (``robot-rl train|learner dashboard.enabled=true``)."""
    feed: bool = True
    """The learner publishes its status for dashboards (a PUB socket that never blocks the update loop), so
    ``robot-rl dashboard RUN_DIR`` can attach to a running learner. Off: no dashboard can show this run."""
    feed_bind: str = "127.0.0.1"
    """Interface of the feed's sockets (random ports, written to ``run_dir/dashboard/feed.json``)."""
    host: str = "127.0.0.1"
    """Web server interface: loopback by default (reach it over ``ssh -L``); any other needs the token."""
    port: int = 8765
    """Web server port (0: any free port; the URL is printed and written to ``run_dir/dashboard/url.txt``)."""
    require_token: bool = True
    """Every request must carry the random access token printed at start. Only a loopback server may drop it."""
    status_hz: float = 2.0
    """Status snapshots per second sent by the learner (fleet, counters, evaluations)."""
    frame_hz: float = 2.0
    """Camera frames per second per actor sent by the learner (when the env has images)."""
    frame_size: int = 240
    """Longest side (px) of the JPEG shown per camera; larger camera images are downsampled."""


@dataclass
class TrainConfig(ConfigNode):
    """Root config of ``robot-rl train | learner | actor``."""

    env: EnvConfig = MISSING
    """Task and its twin/robot."""
    policy: PolicyConfig = MISSING
    """The policy actors run and the learner trains."""
    algo: AlgoConfig = MISSING
    """Learning algorithm (owns the critics)."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    hil: HilConfig = field(default_factory=HilConfig)
    """Human in the loop on the actors: teleop device or virtual operator, interventions, graded protocol."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Learned reward labelling the learner's batches (``reward=prm reward.checkpoint=...``); ``none`` = env."""
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    """The operator's live web page fed by the learner (fleet, cameras, learning, controls)."""
    run_dir: str = "runs/${now:%Y-%m-%d_%H-%M-%S}"
    """Where the resolved config, checkpoints, logs, plots and episodes go (a new timestamped directory per
    run by default; give a learner the same ``run_dir`` again to resume it from its latest checkpoint)."""
    seed: int = 0
    """Global seed for torch/numpy on the learner."""
    num_actors: int = 1
    """``robot-rl train``: actor processes to start."""
    num_envs: int = 0
    """Envs per actor process, shorthand for ``actor.num_envs`` (0 = use ``actor.num_envs``)."""
    num_demos: int = 20
    """``robot-rl train``: scripted-expert demo episodes recorded before training (cached in run_dir/demos)
    when ``learner.demos`` is unset and the env has an expert; 0 = train without demos."""
    demo_spread: bool = False
    """Scripted demos (``robot-rl train``, ``robot-rl demos``): choose their start states to cover the
    randomization range (the k-median of a pool of candidate starts: the smallest mean distance from a start to
    its nearest demo, ``robot_rl.demos.spread_order``), as an operator placing the object across the workspace
    would, instead of taking them as the seeds come. Matters with a handful of demos:
    3 random ones can all start on one side. Spreads over the env's ``start_features()`` where it has one
    (the twins: the cube pose from the simulator, so ``env.obs=pixels`` spreads too), else over what varies
    in the low-dim start observation; with nothing varying there the seeds' order stands."""
    eval_episodes: int = 10
    """``robot-rl train``: deterministic evaluation episodes at the end (success rate, video)."""
    eval_video_episodes: int = 3
    """``robot-rl train``: how many of those final evaluation episodes (the first ones) ``eval.mp4`` shows
    (0 = no video)."""


def store(group: str, name: str, node: type) -> None:
    """Register a structured config under ``group/name`` (call at import of the component's module)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=node)


def _register_components() -> None:
    """Import the modules whose config dataclasses and factories register themselves."""
    import importlib

    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    for module in ("robot_rl.sim", "robot_rl.policies", "robot_rl.algorithms", "robot_rl.hardware.teleop.config",
                   "robot_rl.reward_models"):
        importlib.import_module(module)


def load_config(overrides: Sequence[str] = (), config_name: str = "train") -> "TrainConfig":
    """Compose ``conf/<config_name>.yaml`` + overrides into a frozen, validated :class:`TrainConfig`.

    A bad override raises :class:`robot_rl.config_errors.UsageError` with a one- or two-line explanation (the
    hydra/OmegaConf exception is its ``__cause__``). ``+key=value`` is treated as ``key=value``: the schema is
    closed, so adding a key is an error like any unknown key."""
    from robot_rl.config_errors import UsageError, explain

    overrides = [o.lstrip("+") for o in overrides]
    try:
        # Keys inside free-form dicts (env.kwargs.g=9.81, env.key_map.front=cam0) are unknown to the schema by
        # design: hydra's struct mode would refuse them, so they are merged after those dicts are opened.
        free = _free_form_paths(_compose(config_name, [o for o in overrides if o.split("=", 1)[0] in GROUPS]))
        into_free = [o for o in overrides if any(f"{o.split('=', 1)[0]}.".startswith(f + ".") for f in free)]
        composed = [o for o in overrides if o not in into_free]
        cfg = _compose(config_name, composed)
        _refuse_renamed_presets(config_name, composed)
        if into_free:
            _open_free_form_dicts(cfg)
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(into_free))
        return _freeze(OmegaConf.to_object(cfg))
    except Exception as exc:
        msg = explain(exc, overrides, lambda: _known_keys(config_name, overrides))
        if msg is None:
            raise
        raise UsageError(msg) from exc


def group_options(group: str) -> list[str]:
    """The presets of a config group: its structured configs in the ConfigStore and ``conf/<group>/*.yaml``
    (internal ``*_schema`` nodes left out)."""
    from hydra.core.config_store import ConfigStore

    from robot_rl.config_errors import public_options

    _register_components()
    stored = {name.removesuffix(".yaml") for name in ConfigStore.instance().repo.get(group, {})}
    return public_options(stored | {p.stem for p in (CONF_DIR / group).glob("*.yaml")})


def _refuse_renamed_presets(config_name: str, overrides: Sequence[str]) -> None:
    """``env.name=panda_pick_place_cube`` only renames the env: its settings and schema stay the default
    preset's (no ``place_tolerance``), and it fails deep inside the env, or, as ``algo.name=rlpd`` on SAC's
    config, runs with the wrong defaults without a word. When ``<group>.name`` names another preset of that group
    than the one selected, the user meant ``<group>=<preset>``: say so."""
    from robot_rl.config_errors import UsageError

    for override in overrides:
        key, _, value = override.partition("=")
        group = key.removesuffix(".name")
        if (group == key or group not in GROUPS or any(o.partition("=")[0] == group for o in overrides)
                or value not in group_options(group)):
            continue  # not a group's name, the preset is chosen too, or the name is no preset (the registry decides)
        selected = getattr(_compose(config_name, [o for o in overrides if o != override]), group).name
        if value != selected:
            raise UsageError(f"{override} renames the {group} but keeps the settings of the {selected!r} preset; "
                             f"to use the {value!r} preset write {group}={value}")


def _compose(config_name: str, overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir

    _register_components()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


GROUPS = ("env", "policy", "algo", "hil", "reward")
"""Config groups (``group=option`` picks a preset): the directories of ``robot_rl/conf`` and the ConfigStore."""


def _known_keys(config_name: str, overrides: Sequence[str]) -> list[str]:
    """Dotted keys of the config the user's group choices select (the defaults' if those are invalid too)."""
    from robot_rl.config_errors import flat_keys

    groups = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
    try:
        return flat_keys(_compose(config_name, groups))
    except Exception:
        return flat_keys(_compose(config_name, []))


def _freeze(obj: Any) -> Any:
    """Seal every config node (recursively) and turn lists into tuples: configs are never mutated."""
    if isinstance(obj, ConfigNode):
        for f in dataclasses.fields(obj):
            object.__setattr__(obj, f.name, _freeze(getattr(obj, f.name)))
        object.__setattr__(obj, "_sealed", True)
    elif isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    elif isinstance(obj, dict):
        return {k: _freeze(v) for k, v in obj.items()}
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config, e.g. for wandb or the resolved-config file."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def save_resolved(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as yaml atomically (every run saves what it actually ran with)."""
    from robot_rl.storage import atomic_write_bytes

    atomic_write_bytes(Path(path), OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg))).encode())


def _open_free_form_dicts(node: Any) -> None:
    """Let ``dict[str, ...]`` fields (``env.kwargs``, ``env.key_map``) take keys the schema cannot know.

    hydra's ``compose`` puts the whole tree in struct mode, so merging a saved ``kwargs: {g: 9.81}`` into the
    schema's empty ``kwargs`` would be refused ("Key 'g' is not in struct"), although ``+env.kwargs.g=9.81``
    was accepted on the command line. Dataclass nodes stay struct: an unknown field is still an error."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return
    if node._metadata.object_type is dict:
        OmegaConf.set_struct(node, False)
    for key in node.keys():
        _open_free_form_dicts(node._get_node(key))


def _free_form_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the ``dict[str, ...]`` fields (``env.kwargs``, ``env.key_map``) of a composed config."""
    from omegaconf import DictConfig

    if not isinstance(node, DictConfig):
        return []
    if node._metadata.object_type is dict:
        return [prefix.rstrip(".")]
    out: list[str] = []
    for key in node.keys():
        out += _free_form_paths(node._get_node(key), f"{prefix}{key}.")
    return out


def load_resolved(path: str | os.PathLike, overrides: Sequence[str] = ()) -> "TrainConfig":
    """Load a resolved config file (from :func:`save_resolved`) plus overrides, re-validated by the schema."""
    from robot_rl.config_errors import UsageError, explain

    if not Path(path).is_file():
        raise UsageError(f"--config {path}: no such file (give the config.yaml of an earlier run)")
    raw = OmegaConf.load(path)
    groups = [f"env={raw.env.name}", f"policy={raw.policy.name}", f"algo={raw.algo.name}"]
    if "hil" in raw:  # configs written before the hil group existed have none
        groups.append(f"hil={raw.hil.name}")
    if "reward" in raw:  # likewise for the reward group
        groups.append(f"reward={raw.reward.name}")
    overrides = [o.lstrip("+") for o in overrides]
    try:
        schema = _compose("train", groups)
        _open_free_form_dicts(schema)  # env.kwargs / env.key_map keep user keys
        merged = OmegaConf.merge(schema, raw, OmegaConf.from_dotlist(list(overrides)))
        return _freeze(OmegaConf.to_object(merged))
    except Exception as exc:
        msg = explain(exc, overrides, lambda: _known_keys("train", groups))
        if msg is None:
            raise
        raise UsageError(msg) from exc


def config_hash(cfg: TrainConfig) -> str:
    """Hash of what actor and learner must agree on (env without its seed, and the policy)."""
    env = {k: v for k, v in dataclasses.asdict(cfg.env).items() if k != "seed"}
    return stable_hash({"env": env, "policy": dataclasses.asdict(cfg.policy)})
