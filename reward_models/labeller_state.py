"""The learned reward's part of a learner checkpoint, so a resumed run labels as the interrupted one did.

A :class:`~robot_rl.reward_models.labeller.RewardLabeller` changes during a run: a refresh
(``reward.refresh_every_episodes``) swaps in a model trained on the online episodes, the online steps seen
move the shaping schedule (``reward.scale_final``), the drift check keeps a probe set and its first reading,
and the hacking monitor keeps a running window. Without this state a resumed learner went back to the model
the run started with (trained on the demos, cached as ``run_dir/reward_<kind>.pt``) and to the start of the
schedule: the reward changed under the critic at every restart, without a word in the logs. Real-robot runs are
the ones that get interrupted (e-stops, battery swaps), and they are the ones that depend on a learned reward.

Layout: the state from :func:`labeller_checkpoint` goes into the checkpoint's ``state.pt`` (tensors and plain
types, loaded with ``weights_only=True``); its writer puts the online episodes kept for the next refresh into the
checkpoint's ``reward_refresh/`` directory as ordinary episode files (:class:`~robot_rl.episode_store.EpisodeStore`),
in the order the state lists them.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from robot_rl.episode_store import EpisodeStore

if TYPE_CHECKING:
    from robot_rl.reward_models.labeller import RewardLabeller

log = logging.getLogger("robot_rl.reward_models")
STATE_FORMAT = "robot_rl.reward_labeller/1"
KEPT = "kept"  # actor id of the files in reward_refresh/ (the episode id is the position)


def labeller_checkpoint(labeller: RewardLabeller) -> tuple[dict[str, Any], Callable[[Path], None]]:
    """The labeller's resumable state and the writer of the online episodes kept for refreshing, taken from one
    snapshot. The state holds the model labelling now (weights and version), the online env steps behind the
    shaping schedule, the refresh counters, the drift probe set with its reference and the hacking monitor.
    Safe while a refresh trains: that one works on a copy and is lost (a resumed run refreshes again after
    ``refresh_every_episodes`` more episodes)."""
    with labeller._lock:
        model, version = labeller.model, labeller.version
    with labeller._ingest_lock:
        online_steps, since_refresh = labeller.online_steps, labeller._since_refresh
        kept = list(labeller.online_episodes)
    probe = labeller._probe
    state = {"format": STATE_FORMAT, "version": version, "initial_version": labeller.initial_version,
             "online_steps": int(online_steps),
             "refreshes": int(labeller.refreshes), "since_refresh": int(since_refresh),
             # the model object is only ever replaced, never trained in place: its weights are a stable read
             "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
             # (actor, episode id) of each kept episode, oldest first; file i of reward_refresh/ is the i-th
             "refresh_episodes": [(e.actor_id, int(e.episode_id)) for e in kept],
             "probe": None if probe is None else {k: torch.from_numpy(np.ascontiguousarray(v))
                                                  for k, v in probe.items()},
             "drift": labeller.drift.state_dict(),
             "monitor": None if labeller.monitor is None else labeller.monitor.state_dict()}

    def write_refresh_episodes(directory: Path) -> None:
        store = EpisodeStore(directory, fsync=False)  # the checkpointer fsyncs every file of the checkpoint
        for i, episode in enumerate(kept):  # by position: ids need not be unique across actors' restarts
            store.write(replace(episode, actor_id=KEPT, episode_id=i))

    return state, write_refresh_episodes


def restore_labeller(labeller: RewardLabeller, state: dict[str, Any], refresh_dir: Path | None) -> None:
    """Put a checkpoint's labeller state back. The model's weights must hash to the recorded version (a
    corrupt or foreign checkpoint fails here, not as a silently different reward)."""
    from robot_rl.reward_models.train import weights_version

    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"reward labeller state has format {state.get('format')!r}, expected {STATE_FORMAT!r}")
    if state["initial_version"] != labeller.initial_version:  # reward.checkpoint now names another model
        log.warning("the run started from reward model %s, this learner was given %s: it labels with the new "
                    "one from the start of its schedule (the checkpoint's model %s, its refreshes and monitor "
                    "are not used)", state["initial_version"], labeller.initial_version, state["version"])
        return
    if state["version"] != labeller.version:  # a refresh ran before the checkpoint: its model labels again
        model = copy.deepcopy(labeller.model).cpu()
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"the checkpoint's reward model does not fit this run's ({labeller.version}): "
                             f"{exc}") from exc
        if weights_version(model) != state["version"]:
            raise ValueError(f"the checkpoint's reward-model weights hash to {weights_version(model)}, "
                             f"it records version {state['version']}: corrupt checkpoint")
        model.version = state["version"]
        labeller._set_model(model)
    episodes = []
    if state["refresh_episodes"]:
        if refresh_dir is None or not refresh_dir.is_dir():
            raise FileNotFoundError(f"the checkpoint lists {len(state['refresh_episodes'])} online episodes "
                                    f"kept for refreshing the reward model, but {refresh_dir} is missing")
        store = EpisodeStore(refresh_dir, fsync=False)
        episodes = [replace(EpisodeStore.read(store.path_for(KEPT, i)), actor_id=actor, episode_id=int(episode_id))
                    for i, (actor, episode_id) in enumerate(state["refresh_episodes"])]
    with labeller._ingest_lock:
        labeller.online_steps = int(state["online_steps"])
        labeller._since_refresh = int(state["since_refresh"])
        labeller.online_episodes = episodes
    labeller.refreshes = int(state["refreshes"])
    probe = state["probe"]
    labeller._probe = None if probe is None else {k: v.numpy() for k, v in probe.items()}
    labeller.drift.load_state_dict(state["drift"])
    if labeller.monitor is not None and state["monitor"] is not None:
        labeller.monitor.load_state_dict(state["monitor"])
    log.info("learned reward resumed: model version %s (%d refreshes), %d online steps into the schedule "
             "(scale %g), %d online episodes kept for the next refresh", labeller.version, labeller.refreshes,
             labeller.online_steps, labeller.current_scale(), len(episodes))


def restore_from_checkpoint(labeller: RewardLabeller, state: dict[str, Any], checkpoint: Path) -> None:
    """A resuming learner's call with its checkpoint's ``state.pt`` contents and directory."""
    if "reward" in state:
        restore_labeller(labeller, state["reward"], checkpoint / "reward_refresh")
    elif state.get("reward_version") != labeller.version:  # a checkpoint written before this state existed
        log.warning("checkpoint %s was labelled by reward model %s and holds no reward state: this run labels "
                    "with %s from the start of its schedule (refreshes and the monitor start again)", checkpoint,
                    state.get("reward_version"), labeller.version)
