"""The learner loop: ingest -> replay, update at a fixed update-to-data ratio, publish weights, checkpoint.

Read top to bottom: :meth:`Learner.__init__` builds specs, policy, algorithm, replay (online + demo), the
transport (whose IO thread calls :meth:`_ingest` for every new validated chunk) and resumes from the latest
checkpoint; :meth:`run` loops: while ``updates < utd * online transitions`` sample a mixed batch and update,
publish weights every ``publish_every`` updates, checkpoint every ``checkpoint_every_s`` seconds and then
tell actors which chunks are durable (they drop them only then).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.checkpoint import Checkpointer, restore_rng, rng_state
from robot_rl.config import config_hash, save_resolved, to_dict
from robot_rl.episode_store import EpisodeStore, load_demos
from robot_rl.registry import ALGORITHMS, ENVS, env_specs, make_policy
from robot_rl.replay import MixedSampler, ReplayBuffer
from robot_rl.run_log import RunLogger
from robot_rl.specs import spec_hash
from robot_rl.state_norm import make_state_normalizer, state_encoders
from robot_rl.transport.base import DedupLedger, LearnerTransport
from robot_rl.transport.wire import Chunk
from robot_rl.types import Batch
from robot_rl.value_check import ValueCheck

log = logging.getLogger("robot_rl.learner")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Learner:
    _offline_dropped = False  # set once drop_offline_data ran in this process (interventions refill the buffer)

    def __init__(self, cfg: Any, transport: LearnerTransport | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, self.run_dir / "config_learner.yaml")
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.device = resolve_device(cfg.learner.device)
        self.obs_spec, self.action_spec = env_specs(cfg)
        self.spec_hash = spec_hash(self.obs_spec, self.action_spec)
        self.config_hash = config_hash(cfg)

        self.policy = make_policy(cfg, self.obs_spec, self.action_spec).to(self.device)
        # What the policy and critic read (policy.obs_keys); replay keeps every key the env emits.
        self.policy_spec = self.policy.obs_spec
        self.algo = ALGORITHMS.make(cfg.algo.name, cfg.algo, self.policy, self.policy_spec, self.action_spec,
                                    self.device)
        # Frozen camera encoders (policy.encoder=frozen|task): every frame is embedded once, on arrival, and replay
        # holds the embeddings (``embed/<cam>``) instead of the images; raw frames stay in the episode stores.
        self.frozen_cameras = dict(getattr(getattr(self.policy, "encoder", None), "frozen_cameras", {}) or {})
        self.reward_labeller = None  # learned reward: labels each sampled batch on the prefetch thread
        if getattr(cfg, "reward", None) is not None and cfg.reward.name != "none":
            from robot_rl.reward_models.labeller import make_labeller

            self.reward_labeller = make_labeller(cfg, self.obs_spec, self.device)
        # With frozen cameras, replay keeps the frames of the cameras the reward model reads beside their
        # embeddings: it labels every sampled batch from the frames (its own encoder), the policy reads embeddings.
        self.reward_frames = tuple(k for k in (self.reward_labeller.views if self.reward_labeller else ())
                                   if k in self.frozen_cameras)
        self.replay_spec = self.policy.encoder.replay_spec(self.obs_spec, self.reward_frames) \
            if self.frozen_cameras else self.obs_spec
        self.embed_seconds = 0.0  # time spent embedding frames at ingest (benchmarks report it)
        self.embedded_frames = 0
        self.online = ReplayBuffer(self.replay_spec, self.action_spec, cfg.replay.capacity)
        self.demo = ReplayBuffer(self.replay_spec, self.action_spec, cfg.replay.demo_capacity)
        if self.algo.sequence_horizon > 0:  # action-sequence critic: executed chunks instead of transitions
            from robot_rl.sequence_replay import SequenceSampler

            self.sampler = SequenceSampler(self.online, self.demo, self.algo.batch_size_per_update,
                                           cfg.replay.demo_ratio, self.algo.sequence_horizon, self.device, cfg.seed)
        else:
            self.sampler = MixedSampler(self.online, self.demo, self.algo.batch_size_per_update,
                                        cfg.replay.demo_ratio, self.device, cfg.replay.prefetch, seed=cfg.seed)
        self._mixed_sampler = self.sampler  # the reward labeller may wrap it; drop_offline_data needs this one
        # The obs keys the algorithm reads from a replay batch: the policy's, as embeddings where replay holds
        # them, without the frames kept only for the reward model.
        algo_keys = tuple(k for k in self.replay_spec.keys() if k not in self.reward_frames) \
            if self.frozen_cameras else tuple(self.policy_spec.keys())
        if self.reward_labeller is not None:
            # the reward model may read keys the policy does not (cameras, kept frames): dropped once the batch
            # is labelled. One-step batches are labelled on MixedSampler's prefetch thread, executed sequences
            # (n-step TD, sequence critics) step by step as they are sampled (reward_models.sequence_labels).
            self.sampler = self.reward_labeller.wrap(self.sampler, keep_keys=algo_keys)
        gamma = getattr(cfg.algo, "gamma", None)
        self.value_check = ValueCheck(gamma, cfg.learner.value_check_episodes, margin=cfg.learner.value_check_margin,
                                      critic_keys=algo_keys) \
            if cfg.learner.value_check_episodes > 0 and gamma is not None and hasattr(self.algo, "q_values") else None
        self._value_metrics: dict[str, float] = {}
        self.ledger = DedupLedger()
        self.updates = 0
        self.online_transitions = 0
        self.weights_version = 0
        self.checkpointer = Checkpointer(self.run_dir)
        self._stop = threading.Event()
        self._last_data_time: float | None = None
        self._eval_env: Any = None
        # Episodes put back into replay from the actors' episode stores (no checkpoint to resume from), per
        # actor: their chunks, resent from the actors' spill directories, must not be added a second time.
        self._rebuilt_episodes: dict[str, np.ndarray] = {}
        self.state_norm = make_state_normalizer(cfg, self.policy)  # None unless learner.normalize_state_online_until
        self._resume_or_load_demos()
        self._updates_at_start = self.updates  # updates/s counts this session's updates only
        self._draining = False  # budget reached: actors are told (progress["draining"]) to finish and stop
        self.transport = transport or self._make_transport()
        self.dashboard_feed = None  # status for `robot-rl dashboard` (robot_rl/dashboard/feed.py); never blocks
        if getattr(cfg, "dashboard", None) is not None and cfg.dashboard.feed:
            from robot_rl.dashboard.feed import DashboardFeed

            self.dashboard_feed = DashboardFeed(cfg, self)

    # ------------------------------------------------------------------------------------------ setup
    def _make_transport(self) -> LearnerTransport:
        if self.cfg.transport.kind == "inproc":  # actors in this process: learner.transport.connect(...)
            from robot_rl.transport.inproc import InprocLearnerServer

            return InprocLearnerServer(self.obs_spec, self.action_spec, self._ingest, self.ledger)
        if self.cfg.transport.kind != "zmq":
            raise ValueError(f"transport.kind must be 'zmq' or 'inproc', got {self.cfg.transport.kind!r}")
        from robot_rl.transport.zmq_learner import ZmqLearnerServer

        return ZmqLearnerServer(self.cfg.transport, self.obs_spec, self.action_spec, self.spec_hash,
                                self.config_hash, self._ingest, self.ledger)

    def _resume_or_load_demos(self) -> None:
        latest = self.checkpointer.latest() if self.cfg.learner.resume else None
        self._resumed = latest is not None
        if latest is not None:
            self.load_checkpoint(latest)
            return
        episodes = load_demos(self.cfg.learner.demos, self.spec_hash) if self.cfg.learner.demos else []
        if getattr(self.cfg.policy, "encoder", "") == "task" and self.frozen_cameras:
            from robot_rl.policies.task_pretrain import pretrain_task_encoder

            losses = pretrain_task_encoder(self.policy.encoder, episodes, self.action_spec,
                                           self.cfg.policy.task_encoder, self.device, self.cfg.seed)
            log.info("task encoder pretrained on %d demo frames in %.1fs: %s", int(losses["frames"]),
                     losses["seconds"], {k: round(v, 4) for k, v in losses.items()})
        for episode in episodes:  # frozen/task encoders: replay holds each frame's embedding (_to_replay)
            batch = episode.to_batch()
            self.demo.add_batch(self._to_replay(batch))
            if self.state_norm is not None:
                self.state_norm.observe(batch.obs["state"])  # running statistics start from every demo state
        if episodes:
            log.info("demo buffer: %d transitions", len(self.demo))
        # After the demos: a task encoder must be pretrained before the actors' episodes are embedded.
        if self.cfg.learner.resume:
            self._rebuild_from_episode_stores()
        else:
            log.info("learner.resume=false: starting fresh in %s", self.run_dir)
        fit = getattr(self.policy, "fit_state_normalization", None)
        if self.state_norm is not None:  # running statistics: the demos' now, the online states as they come
            if self._apply_state_norm():
                log.info("state normalisation fitted on %d states; refined online until %d",
                         self.state_norm.count, self.state_norm.until)
        elif fit is not None and len(self.demo) and "state" in self.obs_spec.fields:
            states = self.demo.sample(min(len(self.demo), 20_000), self.np_rng).obs["state"]  # (n, S)
            if fit(torch.as_tensor(states).to(self.device)):
                log.info("state normalisation fitted on %d demo transitions", len(states))
        sync = getattr(self.algo, "sync_target_encoder", None)
        if sync is not None:  # the target encoder must start from the fitted/pretrained online encoder
            sync()

    def _to_replay(self, batch: Batch) -> Batch:
        """A numpy batch as replay stores it: with frozen cameras, images replaced by their embeddings, each
        frame embedded once (:func:`robot_rl.policies.frozen_encoders.embed_batch`). Embedding here, at ingest,
        keeps the wire format and the actors unchanged and costs ~0.3 ms per 64 px frame per camera for the
        task encoder, a few percent of the learner's time (``embed_ms_per_frame`` in its metrics)."""
        if not self.frozen_cameras:
            return batch
        from robot_rl.policies.frozen_encoders import embed_batch

        t0 = time.perf_counter()
        batch, frames = embed_batch(self.frozen_cameras, batch, self.device, self.reward_frames)
        self.embed_seconds += time.perf_counter() - t0
        self.embedded_frames += frames
        return batch

    def _rebuild_from_episode_stores(self) -> None:
        """No checkpoint, but ``run_dir/episodes/<actor>/`` may hold this run's experience (a run killed before
        its first checkpoint): put those episodes back into online replay instead of silently starting over."""
        root = self.run_dir / "episodes"
        stores = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        seen: dict[str, list[int]] = {}
        for directory in stores:
            for episode in EpisodeStore(directory).episodes(spec_hash=self.spec_hash):
                self._add_online(episode.to_batch())
                seen.setdefault(episode.actor_id, []).append(episode.episode_id)
        self._rebuilt_episodes = {a: np.asarray(ids, np.int64) for a, ids in seen.items()}
        if seen:
            log.info("no checkpoint in %s: rebuilt replay from %d episodes (%d transitions) in %s",
                     self.checkpointer.root, sum(map(len, seen.values())), self.online_transitions, root)
        else:
            log.info("no checkpoint and no episodes in %s: starting a new run", self.run_dir)

    # ------------------------------------------------------------------------------- ingest (IO thread)
    def _ingest(self, chunk: Chunk) -> None:
        """Called by the transport thread for each new, validated chunk, under the ledger lock."""
        batch = chunk.batch
        rebuilt = self._rebuilt_episodes.get(chunk.actor_id)
        self._last_data_time = time.monotonic()
        if self.dashboard_feed is not None:
            self.dashboard_feed.observe(chunk)
        if rebuilt is not None:  # rows of episodes already rebuilt from the episode store: keep them once
            keep = ~np.isin(batch.episode_id, rebuilt)
            if not keep.any():
                return
            batch = batch if keep.all() else batch.select(keep)
        self._add_online(batch)

    def _add_online(self, batch: Any) -> None:
        batch = self._to_replay(batch)  # frozen/task encoders: each frame embedded once, here
        self.online.add_batch(batch)
        if self.cfg.replay.interventions_to_demo and batch.intervened.any():
            self.demo.add_batch(batch.select(batch.intervened))  # human corrections are demonstrations too
        self.online_transitions += len(batch)
        if self.reward_labeller is not None:
            self.reward_labeller.observe_online(batch)  # hacking monitor: learned progress vs success labels
        if self.value_check is not None:
            self.value_check.observe(batch)  # finished episodes: start-state Q vs realised return
        if self.state_norm is not None:
            self.state_norm.observe(batch.obs["state"])  # applied on the learner's thread, at the next publish

    # ---------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        with self.ledger.lock:  # replay and ledger must describe the same set of chunks
            state = {"algo": self.algo.state_dict(), "policy": self.algo.policy_weights(), "updates": self.updates,
                     "online_transitions": self.online_transitions, "weights_version": self.weights_version,
                     "ledger": self.ledger.state_dict(), "rng": rng_state(self.np_rng),
                     "spec_hash": self.spec_hash, "config_hash": self.config_hash,
                     "rebuilt_episodes": {a: ids.tolist() for a, ids in self._rebuilt_episodes.items()},
                     "reward_version": self.reward_labeller.version if self.reward_labeller else "env"}
            if self.state_norm is not None:
                state["state_norm"] = self.state_norm.state_dict()
            writers = {"replay_online": self.online.save, "replay_demo": self.demo.save}
            if self.reward_labeller is not None:  # a resumed run labels as this one did (refreshed model,
                from robot_rl.reward_models.labeller_state import labeller_checkpoint  # schedule, monitor)

                state["reward"], writers["reward_refresh"] = labeller_checkpoint(self.reward_labeller)
            marks = self.ledger.marks()
            path = self.checkpointer.save(f"ckpt-{self.updates:010d}", state, writers)
        self.transport.commit(marks)
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = Checkpointer.load_state(path)
        if state["spec_hash"] != self.spec_hash:
            raise ValueError(f"checkpoint {path} is for spec {state['spec_hash']}, this run has {self.spec_hash}")
        self.algo.load_state_dict(state["algo"])
        self.updates = int(state["updates"])
        self.online_transitions = int(state["online_transitions"])
        self.weights_version = int(state["weights_version"])
        self.ledger.load_state_dict(state["ledger"])
        rebuilt = state.get("rebuilt_episodes", {})  # absent in checkpoints written before it existed
        self._rebuilt_episodes = {a: np.asarray(ids, np.int64) for a, ids in rebuilt.items()}
        restore_rng(state["rng"], self.np_rng)
        if self.state_norm is not None and "state_norm" in state:
            self.state_norm.load_state_dict(state["state_norm"])
        self.online.load(path / "replay_online")
        self.demo.load(path / "replay_demo")
        if self.reward_labeller is not None:  # the model that labelled before the restart labels again
            from robot_rl.reward_models.labeller_state import restore_from_checkpoint

            restore_from_checkpoint(self.reward_labeller, state, path)
        log.info("resumed from %s: %d updates, %d online transitions", path, self.updates, self.online_transitions)

    # ------------------------------------------------------------------------------------------ loop
    def progress(self) -> dict[str, int]:
        """Counters sent with the weights; ``allowed_env_steps`` is the UTD budget sim actors pace to;
        ``draining`` = 1 once the learner reached its budget (actors then send what they hold and stop)."""
        lc = self.cfg.learner
        slack = lc.pace_slack_steps or int(2 * lc.publish_every / max(lc.utd, 1e-6)) + \
            2 * self.cfg.transport.chunk_size
        budget = max(lc.warmup_transitions - len(self.demo),
                     self.algo.warmup_env_steps + int(self.updates / max(lc.utd, 1e-6)))
        return {"updates": self.updates, "env_steps": self.online_transitions,
                "allowed_env_steps": budget + slack, "draining": int(self._draining)}

    def _apply_state_norm(self) -> bool:
        """The running state statistics into the encoders that read ``state`` (none without the switch)."""
        return self.state_norm is not None and self.state_norm.apply(state_encoders(self.policy, self.algo))

    def publish(self) -> None:
        self._apply_state_norm()  # actors get the statistics the next weights are trained with
        self.weights_version += 1
        weights = {k: v.detach().cpu().numpy() for k, v in self.algo.policy_weights().items()}
        self.transport.publish_weights(weights, self.weights_version, self.progress())

    def evaluate(self, on_episode: Any = None) -> dict[str, float]:
        """Deterministic episodes on a local copy of the env with the current policy (sim twins only);
        ``on_episode(n)`` after each one (progress)."""
        from robot_rl.evaluate import run_episodes

        if self._eval_env is None:
            self._eval_env = ENVS.make(self.cfg.env.name, self.cfg.env, seed=self.cfg.env.seed + 777)
        was_training = self.policy.training
        self.policy.eval()
        try:
            result = run_episodes(self._eval_env, self.policy, self.cfg.learner.eval_episodes,
                                  seed=100_000 + self.online_transitions, stop=self._stop, on_episode=on_episode)
        finally:
            self.policy.train(was_training)
        metrics = {"eval/success_rate": result["success_rate"], "eval/return": result["mean_return"],
                   "eval/episodes": float(result["episodes"])}
        for stage, n in result.get("outcomes", {}).items():  # where the episodes stopped (Panda twins)
            metrics[f"eval/outcome/{stage}"] = n / result["episodes"]
        return metrics

    def _log_evaluation(self, logger: RunLogger) -> None:
        step, total = self.online_transitions, self.cfg.learner.eval_episodes
        logger.phase("evaluation", step=step, done=0, total=total)
        metrics = self.evaluate(on_episode=lambda n: logger.phase("evaluation", step=step, done=n, total=total))
        if metrics["eval/episodes"] == 0:  # stopped before one episode finished: nothing to report
            return
        logger.log({**metrics, "updates": self.updates}, step=self.online_transitions, force_print=True)
        if self.dashboard_feed is not None:
            self.dashboard_feed.eval_point(self.online_transitions, metrics["eval/success_rate"])

    def stop(self) -> None:
        self._stop.set()

    def _done(self) -> bool:
        lc = self.cfg.learner
        if self._stop.is_set():
            return True
        if lc.max_updates and self.updates >= lc.max_updates:
            return True
        if lc.max_env_steps and self.online_transitions >= lc.max_env_steps \
                and self.updates >= self._update_budget(lc.max_env_steps):
            return True
        if lc.idle_exit_s and self._last_data_time is not None and not self.transport.connected_actors() \
                and time.monotonic() - self._last_data_time > lc.idle_exit_s:
            log.info("no actor connected for %.0fs: exiting", lc.idle_exit_s)
            return True
        return False

    def _update_budget(self, env_steps: int) -> int:
        """Updates owed after ``env_steps`` online steps: UTD x the steps after the algorithm's warm-up."""
        return int(self.cfg.learner.utd * max(0, env_steps - self.algo.warmup_env_steps))

    def _target_updates(self) -> int:
        if len(self.online) + len(self.demo) < self.cfg.learner.warmup_transitions or len(self.online) == 0:
            return self.updates
        return self._update_budget(self.online_transitions)

    def drop_offline_data(self) -> None:
        """Replace the demo buffer by an empty one (WSRL): later batches are online only. The prefetch thread
        may still draw one batch from the old buffer; interventions land in the new one."""
        self.demo = ReplayBuffer(self.obs_spec, self.action_spec, self.cfg.replay.demo_capacity)
        self._mixed_sampler.demo = self.demo
        if self.sampler is not self._mixed_sampler and hasattr(self.sampler, "demo"):
            self.sampler.demo = self.demo  # LabelledSampler samples from its own reference to the demo buffer
        self._offline_dropped = True
        log.info("warm-up done at %d env steps: offline data dropped, training on online data only",
                 self.online_transitions)

    def _pretrain_offline(self, logger: RunLogger) -> bool:
        """Offline-to-online warm start on the demo buffer (``algo.offline_pretrain_updates``), fresh runs only:
        a resumed learner already holds the pre-trained weights in its checkpoint. True when it ran."""
        n = int(getattr(self.cfg.algo, "offline_pretrain_updates", 0))
        if n <= 0 or self._resumed or len(self.demo) == 0:
            return False
        t0 = time.monotonic()
        metrics: dict[str, float] = {}
        piece = max(1, n // 50)  # report progress ~50 times: the warm start takes a minute on a CPU
        for done in range(0, n, piece):
            logger.phase("warm_start", step=0, done=done, total=n)
            metrics = self.algo.pretrain_offline(self.sampler.sample_demo, min(piece, n - done))
            if self._stop.is_set():
                return False
        logger.phase("warm_start", step=0, done=n, total=n)
        log.info("offline pre-training: %d updates on %d demo transitions in %.1fs: %s", n, len(self.demo),
                 time.monotonic() - t0, {k: round(v, 4) for k, v in metrics.items()})
        logger.log({f"pretrain/{k}": v for k, v in metrics.items()}, step=0)
        if self.cfg.learner.eval_every_env_steps:
            self._log_evaluation(logger)  # the starting point of the learning curve (env step 0)
        return True

    def run(self) -> dict[str, float]:
        cfg = self.cfg
        logger = RunLogger(self.run_dir, cfg.logger, "learner", to_dict(cfg))
        warm_started = self._pretrain_offline(logger)
        if self._stop.is_set():  # stopped mid-way through the warm start: no checkpoint, a resume redoes it
            log.info("stopped during the offline warm start: nothing checkpointed")
            self.sampler.close()
            logger.close()
            return {"updates": float(self.updates), "env_steps": float(self.online_transitions)}
        self.transport.start()
        if self.dashboard_feed is not None:
            self.dashboard_feed.start()
        if warm_started:  # a restart must not redo a minute of warm start: checkpoint it right away
            self.save_checkpoint()
        self.publish()  # actors start from the learner's initial (or resumed, or demo-pretrained) policy
        logger.phase("online", step=self.online_transitions, total=cfg.learner.max_env_steps)
        last_ckpt = last_log = last_publish = last_value_check = t_start = time.monotonic()
        metrics: dict[str, float] = {}
        eval_every = cfg.learner.eval_every_env_steps
        next_eval = eval_every if eval_every else None
        try:
            while not self._done():
                if not self.algo.keeps_offline_data and not self._offline_dropped \
                        and self.online_transitions >= self.algo.warmup_env_steps:
                    self.drop_offline_data()
                if self.updates >= self._target_updates():
                    time.sleep(0.002)
                else:
                    batch = self.sampler.next()
                    metrics = self.algo.update(batch)
                    self.updates += 1
                    if self.updates % cfg.learner.publish_every == 0:
                        self.publish()
                        last_publish = time.monotonic()
                if next_eval is not None and self.online_transitions >= next_eval:
                    self._log_evaluation(logger)
                    logger.phase("online", step=self.online_transitions, total=cfg.learner.max_env_steps)
                    next_eval = (self.online_transitions // eval_every + 1) * eval_every
                if time.monotonic() - last_publish >= 1.0:  # late joiners + a fresh pacing budget
                    self.publish()
                    last_publish = time.monotonic()
                if time.monotonic() - last_ckpt >= cfg.learner.checkpoint_every_s:
                    self.save_checkpoint()
                    last_ckpt = time.monotonic()
                if self.value_check is not None \
                        and time.monotonic() - last_value_check >= cfg.learner.value_check_every_s:
                    self._check_values()
                    last_value_check = time.monotonic()
                if time.monotonic() - last_log >= 1.0:
                    last_log = time.monotonic()
                    self._log_progress(logger, metrics, last_log - t_start)
            if self.value_check is not None:
                self._check_values()
            self._log_progress(logger, metrics, time.monotonic() - t_start)  # short runs get one line too
            self.publish()
            self.save_checkpoint()
            if eval_every and not self._stop.is_set():  # a signal means "exit now", not "evaluate first"
                self._log_evaluation(logger)
            self._drain(logger)
            logger.phase("done", step=self.online_transitions)
        finally:
            self.sampler.close()
            logger.close()
        return {"updates": float(self.updates), "env_steps": float(self.online_transitions)}

    def _check_values(self) -> None:
        """Start-state Q of the last finished online episodes against their realised returns, on the rewards
        the algorithm trains on (:mod:`robot_rl.value_check`); logged with the next progress line."""
        q_values = getattr(self.algo, "q_values", None)  # the algorithm may since be wrapped (distributed.py)
        if self.value_check is None or q_values is None:
            return
        labeller = self.reward_labeller  # its labels, not counted in reward/base_mean etc. (not trained on)
        self._value_metrics = self.value_check.check(
            q_values, (lambda batch: labeller.rewards(batch, record=False)) if labeller is not None
            else (lambda batch: batch.reward))

    def _log_progress(self, logger: RunLogger, metrics: dict[str, float], elapsed: float) -> None:
        logger.log({**metrics, "updates": self.updates, "env_steps": self.online_transitions,
                    "updates_per_s": (self.updates - self._updates_at_start) / max(elapsed, 1e-9),
                    "replay_online": len(self.online), "replay_demo": len(self.demo),
                    **({"embed_ms_per_frame": 1e3 * self.embed_seconds / max(self.embedded_frames, 1)}
                       if self.frozen_cameras else {}),
                    **{f"transport/{k}": v for k, v in self.transport.stats().items()},
                    **(self.reward_labeller.stats() if self.reward_labeller else {}), **self._value_metrics},
                   step=self.online_transitions)

    def _drain(self, logger: RunLogger) -> None:
        """After the budget: tell the actors (``progress["draining"]``), take their last chunks and commit them
        (a checkpoint each time new data came), so a clean finish leaves nothing pending on the actors. Ends
        when no actor is connected, on a stop (``robot-rl train`` sends one once its actors exited) or after
        ``learner.drain_s``."""
        lc = self.cfg.learner
        if lc.drain_s <= 0 or self._stop.is_set() or self.cfg.transport.kind != "zmq":
            return  # in-process actors are stopped by their caller; a stop signal means "exit now"
        logger.phase("drain", step=self.online_transitions)
        self._draining = True
        deadline = time.monotonic() + lc.drain_s
        saved = self.online_transitions
        last_publish = 0.0
        while not self._stop.is_set() and time.monotonic() < deadline and self.transport.connected_actors():
            if time.monotonic() - last_publish >= 0.5:  # weights are conflated: repeat the news for late readers
                self.publish()
                last_publish = time.monotonic()
            quiet = self._last_data_time is None or time.monotonic() - self._last_data_time > 0.2
            if self.online_transitions != saved and quiet:
                saved = self.online_transitions
                self.save_checkpoint()
            time.sleep(0.05)
        if self.online_transitions != saved:
            self.save_checkpoint()
        log.info("stopped after draining the actors: %d online transitions in the final checkpoint",
                 self.online_transitions)

    def close(self) -> None:
        if self.reward_labeller is not None:  # before the process exits: no refresh thread left in torch ops
            self.reward_labeller.close()
        if self.dashboard_feed is not None:
            self.dashboard_feed.close()
        self.transport.close()
        if self._eval_env is not None:
            self._eval_env.close()
