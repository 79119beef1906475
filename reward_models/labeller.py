"""Learner integration: label every sampled batch with the reward model, off the learner's thread.

Replay keeps the reward each transition arrived with (the env's or robot's); the reward the algorithm trains
on is computed when a batch is sampled, in one batched forward pass over its ``obs`` and ``next_obs``
(2N frames), on the replay prefetch thread (:class:`LabelledSampler`), so the update loop never runs the
reward model itself. Because stored rewards are never overwritten, swapping in a new reward model
(:meth:`RewardLabeller.load`) "relabels" the whole buffer at once: every batch sampled afterwards carries the
new version. The version of the model that labelled the batches is reported in the learner's metrics
(``reward/version``) and saved in its checkpoints.

Reward (``reward`` config): ``base + scale * F`` with ``base`` the recorded reward (``env``), the done
head's success call ``1[P(done | s') >= done_threshold]`` (``done``) or 0 (``zero``), and ``F`` the
potential-based term ``gamma * Phi(s') * (1 - terminated) - Phi(s)`` (gamma = ``algo.gamma``), the naive
delta (``naive_delta``) or nothing (``none``). Remedies (config switches): a success-gated terminal
potential, Phi capped below done, an annealed shaping weight.

Trust (``reward.monitor``): the learner hands every ingested online chunk to :meth:`RewardLabeller.observe_online`
(a cheap append on the transport thread); finished episodes are scored on the prefetch thread by a
:class:`~robot_rl.reward_models.trust.HackingMonitor` (learned progress vs the success label) and a fixed probe
set of demo frames checks drift of the model. :meth:`RewardLabeller.alarms` serves the alarms (dashboard) and
:meth:`RewardLabeller.stats` logs base vs shaped reward, hacking rate, final progress of successful and failed
episodes and probe drift.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from robot_rl.registry import REWARD_MODELS
from robot_rl.reward_models.labelled_sampler import LabelledSampler
from robot_rl.reward_models.shaping import SHAPINGS, shape
from robot_rl.reward_models.train import TrainingCancelled
from robot_rl.reward_models.trust import HackingMonitor, ProbeDrift
from robot_rl.specs import ObsSpec
from robot_rl.types import Batch

log = logging.getLogger("robot_rl.reward_models")
BASES = ("env", "done", "zero")


class RewardLabeller:
    def __init__(self, model: torch.nn.Module, reward_cfg: Any, gamma: float, obs_spec: ObsSpec | None = None,
                 device: str | torch.device = "cpu") -> None:
        if reward_cfg.shaping not in SHAPINGS:
            raise ValueError(f"reward.shaping must be one of {SHAPINGS}, got {reward_cfg.shaping!r}")
        if reward_cfg.base not in BASES:
            raise ValueError(f"reward.base must be one of {BASES}, got {reward_cfg.base!r}")
        if not 0.0 < reward_cfg.done_threshold < 1.0:
            raise ValueError(f"reward.done_threshold must be in (0, 1), got {reward_cfg.done_threshold}")
        self.cfg, self.gamma, self.obs_spec = reward_cfg, float(gamma), obs_spec
        self.device = torch.device(device)
        self._lock = threading.Lock()
        self.labelled = 0
        self._seconds = 0.0
        self.online_steps = 0  # online env steps seen by observe_online (drives the scale schedule)
        # running sums of what the learner trains on (reset at every stats() call): base, shaping term F
        self._sums = np.zeros(4)  # [n, sum base, sum F, sum |F|]
        self.monitor = HackingMonitor(reward_cfg.hack_progress, reward_cfg.hack_window, reward_cfg.max_hack_rate) \
            if getattr(reward_cfg, "monitor", False) else None
        self.drift = ProbeDrift(getattr(reward_cfg, "max_probe_drift", 0.1))
        self._probe: dict[str, np.ndarray] | None = None
        # (actor, episode) -> its transitions so far: (obs views, action, policy_action, reward, intervened)
        self._open: dict[tuple[str, int], list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, float, bool]]] = {}
        self._finished: list[tuple[dict[str, np.ndarray], bool]] = []  # (obs of T+1 frames, success)
        self.base_episodes: list[Any] = []  # demos the model was trained on (refresh keeps training on them)
        self.online_episodes: list[Any] = []  # finished online episodes for refreshing (newest last)
        self._since_refresh = 0
        self.refreshes = 0
        self._refresh_thread: threading.Thread | None = None  # the refresh in progress, if any
        self._closing = threading.Event()  # set by close(): a refresh in progress stops, none starts
        self._ingest_lock = threading.Lock()
        # (episode, frame index, hash of the frame's bytes in the model's views) -> (Phi, P(done)) under the
        # current model: Phi is a function of the frame alone, so a frame is encoded once per model version,
        # not once per draw (an images-only model on a CPU learner would otherwise run its CNN on 2 x batch
        # frames at every update). Cleared whenever the model changes.
        self._cache: dict[tuple[int, int, int], tuple[float, float]] = {}
        self.cache_hits = 0  # frames of labelled batches served from the cache
        self.looked_up = 0  # frames of labelled batches (2 per one-step transition, length + 1 per window)
        self.encoded_frames = 0  # frames that went through the model for labelling
        self._set_model(model)
        self.initial_version = self.version  # the model this run started from (before any refresh or load)

    # ----------------------------------------------------------------------------------------- model
    def _set_model(self, model: torch.nn.Module) -> None:
        if self.obs_spec is not None:
            for key, shape_ in model.encoder.view_shapes.items():
                spec = self.obs_spec.fields.get(key)
                if spec is None or tuple(spec.shape) != tuple(shape_):
                    raise ValueError(f"reward model reads {key!r} {shape_}, the task's observation spec has "
                                     f"{None if spec is None else tuple(spec.shape)}")
        task = self.cfg.task or (model.tasks[0] if getattr(model, "tasks", None) else "")
        if not task:
            raise ValueError("reward.task is empty and the reward model records no training task")
        from robot_rl.reward_models.evaluate import text_embedding

        text = torch.from_numpy(text_embedding(model, task))[None].to(self.device)  # (1, 384)
        with self._lock:
            self.model = model.to(self.device).eval()
            self.text = text
            self.task = task
            self.version = str(getattr(model, "version", "unversioned"))
            self._cache = {}

    def load(self, checkpoint: str | Path) -> str:
        """Swap in another checkpoint (e.g. a retrained model); batches sampled from now on use it."""
        from robot_rl.reward_models.train import load_checkpoint

        self._set_model(load_checkpoint(checkpoint, self.device))
        log.info("reward model %s (version %s) labels batches from now on", checkpoint, self.version)
        self._check_drift()
        return self.version

    # ------------------------------------------------------------------------------------------ trust
    def observe_online(self, batch: Batch) -> None:
        """Transport thread, per ingested online chunk: collect the model's views of each actor's episode
        until it ends (terminated or truncated). No model call here: scoring runs on the prefetch thread."""
        refresh = getattr(self.cfg, "refresh_every_episodes", 0) > 0
        with self._ingest_lock:
            self.online_steps += len(batch)  # the shaping schedule runs with or without the monitor
        if self.monitor is None and not refresh:
            return
        views = self.model.encoder.views
        with self._ingest_lock:
            ends = np.asarray(batch.terminated, bool) | np.asarray(batch.truncated, bool)
            for i in range(len(batch)):
                actor = batch.actor_id[i] if len(batch.actor_id) == len(batch) else ""
                key = (actor, int(batch.episode_id[i]))
                rows = self._open.setdefault(key, [])
                rows.append(({k: np.array(batch.obs[k][i]) for k in views},  # copies: chunk arrays are wire views
                             np.array(batch.action[i]), np.array(batch.policy_action[i]), float(batch.reward[i]),
                             bool(batch.intervened[i])))
                if ends[i]:
                    obs = {k: np.stack([r[0][k] for r in rows] + [batch.next_obs[k][i]]) for k in views}  # (T+1, .)
                    success = bool(batch.terminated[i] and batch.reward[i] > 0)
                    self._finished.append((obs, success))
                    del self._open[key]
                    if refresh:
                        self._keep_for_refresh(obs, rows, success, key)
            if len(self._open) > 64:  # actors that died mid-episode: drop their oldest partial episodes
                for key in list(self._open)[: len(self._open) - 64]:
                    del self._open[key]

    def _keep_for_refresh(self, obs: dict[str, np.ndarray], rows: list, success: bool, key: tuple[str, int]) -> None:
        """An online episode (frames of the model's views, T+1) with its success label, for refreshing."""
        from robot_rl.types import Episode

        flags = np.zeros(len(rows), bool)
        self.online_episodes.append(Episode(
            frames=obs, action=np.stack([r[1] for r in rows]), policy_action=np.stack([r[2] for r in rows]),
            reward=np.array([r[3] for r in rows], np.float32), terminated=np.r_[flags[:-1], success],
            truncated=np.r_[flags[:-1], not success], intervened=np.array([r[4] for r in rows]),
            actor_id=key[0], episode_id=key[1], spec_hash="online", success=success, task=self.task,
            meta={"source": "online", "failure": "" if success else "online"}))
        del self.online_episodes[: -self.cfg.refresh_keep]
        self._since_refresh += 1

    @property
    def views(self) -> tuple[str, ...]:
        """The observation keys the reward model reads (e.g. ``images/front``)."""
        return tuple(self.model.encoder.views)

    @property
    def refreshing(self) -> bool:
        """A refresh is training right now (on its own thread)."""
        thread = self._refresh_thread
        return thread is not None and thread.is_alive()

    def wait_refresh(self, timeout_s: float | None = None) -> bool:
        """Block until the refresh in progress (if any) has swapped its model in; True when none is running."""
        thread = self._refresh_thread
        if thread is not None:
            thread.join(timeout_s)
        return not self.refreshing

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop a refresh in progress (discarded; the current model stays) and join its thread: a process
        exiting with it in torch ops aborts (exit -6). True when no refresh thread is left running."""
        self._closing.set()
        stopped = self.wait_refresh(timeout_s)
        if not stopped:
            log.warning("the reward-model refresh did not stop within %.0fs", timeout_s)
        return stopped

    def _maybe_refresh(self) -> None:
        """On the labelling thread, when enough online episodes arrived: start training a copy of the model on
        demos + online episodes on its own thread. Run inline it stalled labelling, so the learner's updates, for
        the whole refresh (7-42 s per refresh in the reward benchmark's runs); meanwhile the current model keeps
        labelling, and the new one is swapped in when it is done (one refresh at a time)."""
        with self._ingest_lock:
            due = self._since_refresh >= self.cfg.refresh_every_episodes and not self.refreshing
            episodes = list(self.online_episodes) if due else []
            if due:
                self._since_refresh = 0
        if not due or self._closing.is_set() or not any(e.success for e in [*self.base_episodes, *episodes]):
            return
        self._refresh_thread = threading.Thread(target=self._refresh, args=(episodes,), name="reward-refresh",
                                                daemon=True)
        self._refresh_thread.start()

    def _refresh(self, episodes: list[Any]) -> None:
        """The refresh thread: train a copy on the demos + ``episodes``, then swap it in."""
        try:
            self._train_refresh(episodes)
        except TrainingCancelled:
            log.info("reward-model refresh cancelled: the learner is closing (the current model stays)")
        except Exception:  # a failed refresh keeps the current model labelling; never the learner's problem
            log.exception("reward model refresh failed; the current model keeps labelling")

    def _train_refresh(self, episodes: list[Any]) -> None:
        import copy

        from robot_rl.reward_models.config import RewardTrainConfig
        from robot_rl.reward_models.train import train_model, weights_version

        t0 = time.perf_counter()
        model = copy.deepcopy(self.model).cpu()
        cfg = RewardTrainConfig(steps=self.cfg.refresh_steps, lr=3e-4, seed=self.refreshes,
                                failure_prob=0.5 if any(not e.success for e in episodes) else 0.0)
        model = train_model([*self.base_episodes, *episodes], cfg, model=model,
                            task_embedding=dict(getattr(self.model, "task_embedding", {})),
                            should_stop=self._closing.is_set)
        for name in ("tasks", "task_embedding"):
            if hasattr(self.model, name):
                setattr(model, name, getattr(self.model, name))
        model.version = weights_version(model)
        self.refreshes += 1
        self._set_model(model)
        self._check_drift()
        log.info("reward model refreshed on %d demos + %d online episodes (%d successful) in %.1fs: version %s",
                 len(self.base_episodes), len(episodes), sum(e.success for e in episodes),
                 time.perf_counter() - t0, self.version)

    def _score_finished(self) -> None:
        with self._ingest_lock:
            finished, self._finished = self._finished, []
        if self.monitor is not None:
            for obs, success in finished:
                phi, _ = self.potentials(obs)
                self.monitor.observe(phi, success)  # logs a warning for each new alarm
        if getattr(self.cfg, "refresh_every_episodes", 0) > 0:
            self._maybe_refresh()

    def _check_drift(self) -> None:
        if self._probe is None:
            return
        self.drift.update(self.potentials(self._probe)[0])
        if self.drift.drifted:
            log.warning("reward model drift: mean |Phi - Phi at start| = %.3f on the %d-frame probe set (> %.3f)",
                        self.drift.last, len(next(iter(self._probe.values()))), self.drift.max_drift)

    def alarms(self) -> list[str]:
        """Current learned-reward alarms (newest last), plain strings; the dashboard lists them."""
        out = self.monitor.alarms() if self.monitor is not None else []
        if self.drift.drifted:
            out.append(f"reward model drifted: mean |Phi change| {self.drift.last:.3f} on the probe set")
        return out

    def current_scale(self) -> float:
        """lambda now: ``scale``, or annealed linearly to ``scale_final`` over ``scale_anneal_steps``."""
        final = getattr(self.cfg, "scale_final", -1.0)
        if final < 0:
            return float(self.cfg.scale)
        frac = min(1.0, self.online_steps / max(1, self.cfg.scale_anneal_steps))
        return float(self.cfg.scale + frac * (final - self.cfg.scale))

    # -------------------------------------------------------------------------------------- labelling
    @torch.no_grad()
    def potentials(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(Phi (N,), P(done) (N,)) float64 for a numpy observation batch."""
        with self._lock:
            model, text = self.model, self.text
        views = {k: torch.from_numpy(np.ascontiguousarray(obs[k])).to(self.device) for k in model.encoder.views}
        phi, done = model.phi_done(views, text)
        phi, done = phi.double().cpu().numpy(), done.double().cpu().numpy()
        if not (np.isfinite(phi).all() and np.isfinite(done).all()):
            raise FloatingPointError("reward model produced NaN/inf")
        return phi, done

    CACHE_MAX = 2_000_000  # frames; beyond this the cache starts again (a few hundred MB of keys)

    @staticmethod
    def _frame_keys(batch: Batch, views: list[str]) -> list[tuple[int, int, int]]:
        """Cache keys of the 2N frames [obs rows, next_obs rows]: episode id, frame index in the episode and a
        hash of every byte the model reads of the frame (the label is a function of those bytes alone)."""
        keys = []
        for part, offset in ((batch.obs, 0), (batch.next_obs, 1)):
            keys += frame_keys(part, views, np.asarray(batch.episode_id), np.asarray(batch.step) + offset)
        return keys

    def _lookup(self, keys: list[tuple[int, int, int]], gather) -> tuple[np.ndarray, np.ndarray]:
        """(Phi, P(done)) of the frames with these cache keys; ``gather(rows)`` returns the model's views of
        the given rows (only the uncached ones, each distinct frame once, go through the model)."""
        with self._lock:
            cache = self._cache
        phi, done = np.empty(len(keys)), np.empty(len(keys))
        todo: dict[tuple[int, int, int], list[int]] = {}  # uncached frame -> its rows (obs of t = next_obs of t-1)
        for j, key in enumerate(keys):
            hit = cache.get(key)
            if hit is None:
                todo.setdefault(key, []).append(j)
            else:
                phi[j], done[j] = hit
        self.cache_hits += len(keys) - sum(map(len, todo.values()))
        self.looked_up += len(keys)
        if todo:
            p, d = self.potentials(gather(np.asarray([rows[0] for rows in todo.values()])))
            self.encoded_frames += len(todo)
            if len(cache) + len(todo) > self.CACHE_MAX:
                cache.clear()
            for (key, rows), pj, dj in zip(todo.items(), p, d):
                phi[rows], done[rows] = pj, dj
                cache[key] = (float(pj), float(dj))
        return phi, done

    def cached_potentials(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(Phi (2N,), P(done) (2N,)) of [obs rows, next_obs rows]; only frames not seen by this model version
        go through the model."""
        with self._lock:
            views = list(self.model.encoder.views)
        n = len(batch)

        def gather(first: np.ndarray) -> dict[str, np.ndarray]:
            # row j < N is obs[j], else next_obs[j - N]: with a warm cache a handful per batch, so no (2N, ...)
            # concatenation of every frame
            from_obs, frames = first < n, {}
            for k in views:
                frames[k] = np.empty((len(first), *batch.obs[k].shape[1:]), batch.obs[k].dtype)
                frames[k][from_obs] = batch.obs[k][first[from_obs]]
                frames[k][~from_obs] = batch.next_obs[k][first[~from_obs] - n]
            return frames

        return self._lookup(self._frame_keys(batch, views), gather)

    def frame_potentials(self, frames: dict[str, np.ndarray], episode_id: np.ndarray,
                         step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Phi (M,), P(done) (M,)) of M frames (the model's views, ``(M, ...)``) that are frame ``step`` of
        episode ``episode_id``, through the same per-frame cache as :meth:`cached_potentials`."""
        with self._lock:
            views = list(self.model.encoder.views)
        keys = frame_keys(frames, views, episode_id, step)
        return self._lookup(keys, lambda rows: {k: frames[k][rows] for k in views})

    def shaped(self, recorded: np.ndarray, phi: np.ndarray, done: np.ndarray, phi_next: np.ndarray,
               done_next: np.ndarray, terminated: np.ndarray, record: bool = True) -> np.ndarray:
        """float32 (M,) learned rewards of M transitions from the recorded rewards, Phi and P(done) of ``s`` and
        of ``s'`` and termination (all (M,)): the base reward, the remedies and the shaping term. ``record``:
        count them in the base/shaping means of :meth:`stats` (what the algorithm trains on)."""
        cap = getattr(self.cfg, "phi_cap", 1.0)
        if cap < 1.0:  # no state the done head does not call finished may look finished
            phi = np.where(done >= self.cfg.done_threshold, phi, np.minimum(phi, cap))
            phi_next = np.where(done_next >= self.cfg.done_threshold, phi_next, np.minimum(phi_next, cap))
        if self.cfg.base == "env":
            base = np.asarray(recorded, np.float64)
        elif self.cfg.base == "done":
            base = (done_next >= self.cfg.done_threshold).astype(np.float64)
        else:
            base = np.zeros(len(phi))
        terminated = np.asarray(terminated, bool)
        # success-gated terminal: successes end at potential 1 (the goal), every other terminal at 0
        terminal_phi = (base > 0).astype(np.float64) if getattr(self.cfg, "success_terminal_potential", False) \
            else 0.0
        reward = shape(self.cfg.shaping, base, phi, phi_next, terminated, self.gamma, self.current_scale(),
                       terminal_phi)
        if record:
            f = reward.astype(np.float64) - base
            self._sums += (len(base), base.sum(), f.sum(), np.abs(f).sum())
        return reward

    def rewards(self, batch: Batch, record: bool = True) -> np.ndarray:
        """float32 (N,) learned rewards of a numpy batch (``record``: see :meth:`shaped`)."""
        n = len(batch)
        phi, done = self.cached_potentials(batch)  # (2N,): [obs rows, next_obs rows]
        return self.shaped(batch.reward, phi[:n], done[:n], phi[n:], done[n:], batch.terminated, record)

    def before_labelling(self, obs: dict[str, np.ndarray]) -> None:
        """Once per sampled batch, on the labelling thread: fix the drift probe set (the first batch's first
        rows, demo rows first), score finished online episodes and refresh the model when due."""
        if self._probe is None:
            m = min(len(next(iter(obs.values()))), getattr(self.cfg, "probe_size", 256))
            self._probe = {k: np.array(obs[k][:m]) for k in self.model.encoder.views}
            self._check_drift()
        self._score_finished()

    def label(self, batch: Batch) -> Batch:
        """A copy of ``batch`` whose ``reward`` is the learned reward (the buffer's arrays are not touched)."""
        t0 = time.perf_counter()
        self.before_labelling(batch.obs)
        reward = self.rewards(batch)
        self.count_labelled(len(batch), time.perf_counter() - t0)
        return replace(batch, reward=reward)

    def count_labelled(self, transitions: int, seconds: float) -> None:
        """Account ``transitions`` labelled in ``seconds`` (``reward/labelled``, ``reward/label_us_per_transition``)."""
        self._seconds += seconds
        self.labelled += transitions

    def stats(self) -> dict[str, Any]:
        """Logged by the learner every second; base/shaping means are over the batches since the last call."""
        n, base, f, f_abs = self._sums
        self._sums = np.zeros(4)
        out = {"reward/version": self.version, "reward/labelled": self.labelled,
               "reward/label_us_per_transition": 1e6 * self._seconds / max(self.labelled, 1),
               "reward/scale": self.current_scale(), "reward/probe_drift": self.drift.last,
               "reward/refreshes": self.refreshes,
               "reward/cache_hit_rate": self.cache_hits / max(self.looked_up, 1)}
        if n:
            out.update({"reward/base_mean": base / n, "reward/shaping_mean": f / n,
                        "reward/shaping_abs_mean": f_abs / n,
                        "reward/shaped_mean": (base + f) / n})
        if self.monitor is not None:
            out.update(self.monitor.stats())
        return out

    def wrap(self, sampler: Any, keep_keys: Sequence[str] = ()) -> Any:
        """The sampler whose batches this labeller labels: a :class:`LabelledSampler` around a
        :class:`MixedSampler`, a :class:`~robot_rl.reward_models.sequence_labels.LabelledSequenceSampler` around
        a :class:`~robot_rl.sequence_replay.SequenceSampler` (n-step TD / sequence critics)."""
        from robot_rl.sequence_replay import SequenceSampler

        if isinstance(sampler, SequenceSampler):
            from robot_rl.reward_models.sequence_labels import LabelledSequenceSampler

            return LabelledSequenceSampler(sampler, self, keep_keys)
        return LabelledSampler(sampler, self, keep_keys)


def frame_keys(frames: dict[str, np.ndarray], views: list[str], episode_id: np.ndarray,
               step: np.ndarray) -> list[tuple[int, int, int]]:
    """Cache keys of M frames (``frames[k]``: ``(M, ...)``): episode id, frame index in the episode and a hash
    of every byte the model reads of the frame (the label is a function of those bytes alone)."""
    m = len(episode_id)
    rows = [np.ascontiguousarray(frames[k]).reshape(m, -1) for k in views]  # (M, bytes of view k)
    return [(int(episode_id[i]), int(step[i]), hash(b"".join(r[i].tobytes() for r in rows))) for i in range(m)]


# ------------------------------------------------------------------------------------- construction
def _resolve_device(name: str, learner_device: torch.device) -> torch.device:
    return learner_device if name == "auto" else torch.device(name)


def _train_from_demos(cfg: Any, kind: str, out: Path) -> Path:
    """No checkpoint given: train one on the learner's demos (successes only; reversed, static and
    mismatched-text negatives) and cache it in ``run_dir``."""
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.reward_models.config import ProgressModelConfig, RewardTrainConfig
    from robot_rl.reward_models.train import save_checkpoint, train_model

    if not cfg.learner.demos:
        raise ValueError("reward.checkpoint is empty and there are no demos to train a reward model on "
                         "(set reward.checkpoint=PATH from `robot-rl reward train`, or learner.demos)")
    episodes = list(EpisodeStore(cfg.learner.demos).episodes())
    if not any(e.success for e in episodes):
        raise ValueError(f"no successful episodes in {cfg.learner.demos} to train a reward model on")
    views = tuple(cfg.reward.views)
    images = [v for v in (views or tuple(episodes[0].frames)) if v.startswith("images/")]
    model_cfg = ProgressModelConfig(views=views, **({"image_size": int(episodes[0].frames[images[0]].shape[1])}
                                                    if images else {}))
    train_cfg = RewardTrainConfig(kind=kind, steps=cfg.reward.train_steps, seed=cfg.seed, model=model_cfg)
    log.info("training a %s reward model on %d demo episodes for %d steps (cached in %s)", kind, len(episodes),
             train_cfg.steps, out)
    model = train_model(episodes, train_cfg)
    save_checkpoint(out, model, sorted({e.task for e in episodes}), train_cfg)
    return out


def make_labeller(cfg: Any, obs_spec: ObsSpec, learner_device: torch.device | str = "cpu") -> RewardLabeller:
    """The learner's labeller for ``cfg.reward`` (a registered reward model name)."""
    return REWARD_MODELS.make(cfg.reward.name, cfg, obs_spec, torch.device(learner_device))


def labeller_from_checkpoint(kind: str, cfg: Any, obs_spec: ObsSpec, learner_device: torch.device) -> RewardLabeller:
    """Load ``cfg.reward.checkpoint`` (or train one on the demos when it is empty) and wrap it."""
    from robot_rl.reward_models.train import load_checkpoint

    path = Path(cfg.reward.checkpoint) if cfg.reward.checkpoint else Path(cfg.run_dir) / f"reward_{kind}.pt"
    if not cfg.reward.checkpoint and not path.exists():
        _train_from_demos(cfg, kind, path)
    device = _resolve_device(cfg.reward.device, torch.device(learner_device))
    model = load_checkpoint(path, device)
    if model.kind != kind:
        raise ValueError(f"reward={cfg.reward.name} expects a {kind!r} checkpoint, {path} holds {model.kind!r}")
    labeller = RewardLabeller(model, cfg.reward, cfg.algo.gamma, obs_spec, device)
    if cfg.reward.refresh_every_episodes > 0 and cfg.learner.demos:
        from robot_rl.episode_store import EpisodeStore

        labeller.base_episodes = list(EpisodeStore(cfg.learner.demos).episodes())
    log.info("learned reward: %s (version %s) for task %r, base=%s shaping=%s scale=%g gamma=%g", path,
             labeller.version, labeller.task, cfg.reward.base, cfg.reward.shaping, cfg.reward.scale,
             cfg.algo.gamma)
    return labeller
