"""LeRobotDataset (v3.0 / v2.1) -> our episode store (``robot-rl data import-lerobot SRC OUT``).

Rows become steps: row i holds observation i, the action taken there and ``next.reward`` / ``next.done`` of that
step. LeRobot stores no observation after an episode's last action, so the last step's ``next_obs`` repeats the
last frame (what LeRobot's own RL buffer does); datasets we exported carry that final observation as an extra
row flagged ``final_observation`` and come back exactly. Images go through ``robot_rl.images.prepare_frame``
(crop, then resize to the target size). The output appears atomically: on any error nothing is written.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.datasets.common import DatasetError, atomic_output_dir
from robot_rl.datasets.lerobot_layout import EpisodeRows, LeRobotSource
from robot_rl.datasets.mapping import LeRobotMapping
from robot_rl.episode_store import EpisodeStore
from robot_rl.images import ImageError, prepare_frame
from robot_rl.specs import IMAGE_PREFIX, ActionSpec, ArraySpec, ObsSpec, SpecError, spec_hash
from robot_rl.types import Episode

log = logging.getLogger("robot_rl.datasets")
FINAL_OBSERVATION = "final_observation"  # our export's flag of the extra row holding the final observation
SPEC_FILE = "robot_rl.json"  # meta/robot_rl.json: the ObsSpec/ActionSpec of datasets we exported


def camera_features(source: LeRobotSource, mapping: LeRobotMapping) -> dict[str, str]:
    """Our camera name -> dataset feature, checked against the dataset."""
    if mapping.cameras:
        cams = dict(mapping.cameras)
    else:
        prefix = "observation.images."
        cams = {k[len(prefix):] if k.startswith(prefix) else k.replace(".", "_"): k for k in source.visual_keys}
    for cam, key in cams.items():
        if key not in source.features:
            raise DatasetError(f"{source.root / 'meta/info.json'}: camera {cam!r} maps to feature {key!r}, which "
                               f"the dataset lacks (image/video features: {source.visual_keys})")
        if source.features[key]["dtype"] not in ("video", "image"):
            raise DatasetError(f"{source.root / 'meta/info.json'}: feature {key!r} for camera {cam!r} is "
                               f"{source.features[key]['dtype']}, not an image or video")
    return cams


def _stored_spec(source: LeRobotSource) -> dict[str, Any] | None:
    path = source.root / "meta" / SPEC_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON: {e}") from e


def dataset_specs(source: LeRobotSource, mapping: LeRobotMapping, cams: dict[str, str]) -> tuple[ObsSpec, ActionSpec]:
    """``spec=dataset``: our export's stored specs, else shapes from the features and action bounds from the data."""
    stored = _stored_spec(source)
    if stored is not None and "action_spec" in stored:
        return ObsSpec.from_dict(stored["obs_spec"]), ActionSpec.from_dict(stored["action_spec"])
    fields: dict[str, ArraySpec] = {}
    if mapping.state:
        fields["state"] = ArraySpec((sum(int(np.prod(source.shape(k))) for k in mapping.state),), "float32")
    for cam, key in cams.items():
        shape = source.shape(key)
        h, w = (mapping.crop[cam][3], mapping.crop[cam][2]) if cam in mapping.crop else shape[:2]
        if mapping.image_size is not None:
            h, w = mapping.image_size
        fields[f"{IMAGE_PREFIX}{cam}"] = ArraySpec((h, w, 3), "uint8")
    low, high = None, None
    for ref in source.episodes:  # one pass over the (small, non-image) action column
        action = source.read_episode(ref, [mapping.action]).arrays[mapping.action].reshape(ref.length, -1)
        low = action.min(0) if low is None else np.minimum(low, action.min(0))
        high = action.max(0) if high is None else np.maximum(high, action.max(0))
    if low is None:
        raise DatasetError(f"{source.root}: no episodes")
    high = np.where(high > low, high, low + 1.0)  # a constant dimension still needs low < high
    names = tuple(source.features[mapping.action].get("names") or ())
    if names and len(names) != len(low):
        names = ()
    return ObsSpec(fields), ActionSpec((len(low),), tuple(low), tuple(high), names)


def _check_mapping(source: LeRobotSource, mapping: LeRobotMapping, cams: dict[str, str], obs_spec: ObsSpec,
                   action_spec: ActionSpec) -> None:
    info = source.root / "meta/info.json"
    needed = (*(mapping.state if "state" in obs_spec.fields else ()), mapping.action)
    for key in needed:
        if key not in source.features:
            raise DatasetError(f"{info}: no feature {key!r} (features: {sorted(source.features)})")
    if "state" in obs_spec.fields:
        if not mapping.state:
            raise DatasetError("the target spec has a state vector: map it with state=<features>")
        dim = sum(int(np.prod(source.shape(k))) for k in mapping.state)
        if (dim,) != obs_spec.fields["state"].shape:
            raise DatasetError(f"{info}: state features {list(mapping.state)} hold {dim} values, the target spec's "
                               f"state has {obs_spec.fields['state'].shape[0]}")
    for key in obs_spec.image_keys:
        cam = key[len(IMAGE_PREFIX):]
        if cam not in cams:
            raise DatasetError(f"{info}: the target spec needs camera {cam!r}; map one of {source.visual_keys} "
                               f"to it with camera.{cam}=<feature>")
    a_dim = int(np.prod(source.shape(mapping.action)))
    if a_dim != int(np.prod(action_spec.shape)):
        raise DatasetError(f"{info}: feature {mapping.action!r} has {a_dim} values, the target action has "
                           f"{int(np.prod(action_spec.shape))}")
    if mapping.reward not in source.features and mapping.missing_reward == "error":
        raise DatasetError(f"{info}: no reward feature {mapping.reward!r}; for demonstrations without rewards "
                           f"pass missing_reward=success_at_end (successful demos) or missing_reward=zero")


def episode_from_rows(rows: EpisodeRows, source: LeRobotSource, mapping: LeRobotMapping, cams: dict[str, str],
                      obs_spec: ObsSpec, action_spec: ActionSpec, hash_: str) -> Episode:
    """One dataset episode -> one of our episodes, checked against the target spec."""
    ref, a = rows.ref, rows.arrays
    where = f"{ref.data_file}: episode {ref.index}"
    n = ref.length
    if n < 1 + int(FINAL_OBSERVATION in a):
        raise DatasetError(f"{where}: too few frames ({n})")
    frames: dict[str, np.ndarray] = {}
    if "state" in obs_spec.fields:
        frames["state"] = np.concatenate([a[k].reshape(n, -1) for k in mapping.state], axis=1).astype(np.float32)
    for key in obs_spec.image_keys:
        cam = key[len(IMAGE_PREFIX):]
        h, w = obs_spec.fields[key].shape[:2]
        try:
            frames[key] = np.stack([prepare_frame(f, mapping.crop.get(cam), (h, w), cam) for f in a[cams[cam]]])
        except ImageError as e:
            raise DatasetError(f"{where}: {e}") from e
    action = a[mapping.action].reshape(n, *action_spec.shape).astype(np.float32)
    policy_action = (a[mapping.policy_action].reshape(n, *action_spec.shape).astype(np.float32)
                     if mapping.policy_action in a else action)
    intervened = a[mapping.intervened].reshape(n).astype(bool) if mapping.intervened in a else np.zeros(n, bool)
    if mapping.reward in a:
        reward = a[mapping.reward].reshape(n).astype(np.float32)
    else:
        reward = np.zeros(n, np.float32)
    done = a[mapping.done].reshape(n).astype(bool) if mapping.done in a else None
    if FINAL_OBSERVATION in a:  # our export: the last row is the final observation, not a step
        flag = a[FINAL_OBSERVATION].reshape(n).astype(bool)
        if not flag[-1] or flag[:-1].any():
            raise DatasetError(f"{where}: {FINAL_OBSERVATION!r} must flag exactly the last row")
        steps = n - 1
    else:  # LeRobot's recordings: n steps, the last next_obs repeats the last frame
        steps = n
        frames = {k: np.concatenate([v, v[-1:]], axis=0) for k, v in frames.items()}
    action, policy_action, intervened, reward = action[:steps], policy_action[:steps], intervened[:steps], \
        reward[:steps]
    if done is not None and done[:steps - 1].any():
        raise DatasetError(f"{where}: {mapping.done!r} is true at frame {int(np.argmax(done))}, before the "
                           f"episode's last step ({steps - 1})")
    if mapping.reward not in a and mapping.missing_reward == "success_at_end":
        reward[-1] = 1.0
    success_key = next((k for k in (mapping.success, "next.success") if k in a), None)
    labelled = bool(a[success_key].reshape(n).any()) if success_key else None
    terminated, truncated = np.zeros(steps, bool), np.zeros(steps, bool)
    if "next.terminated" in a and "next.truncated" in a:  # exported by us: the exact flags
        terminated = a["next.terminated"].reshape(n)[:steps].astype(bool)
        truncated = a["next.truncated"].reshape(n)[:steps].astype(bool)
    elif labelled if labelled is not None else reward[-1] > 0:  # the goal was reached: the MDP ended
        terminated[-1] = True
    else:  # cut short (time limit or end of recording): bootstrapping stays valid
        truncated[-1] = True
    success = labelled if labelled is not None else bool(terminated[-1])
    low, high = action_spec.low_array(), action_spec.high_array()
    outside = (action < low - 1e-6) | (action > high + 1e-6)
    if outside.any():
        if not mapping.clip_actions:
            t, d = (int(i) for i in np.argwhere(outside.reshape(steps, -1))[0])
            raise DatasetError(f"{where}: action[{t}][{d}] = {action.reshape(steps, -1)[t, d]:g} is outside the "
                               f"target bounds [{low.reshape(-1)[d]:g}, {high.reshape(-1)[d]:g}] "
                               f"({int(outside.sum())} values); pass clip_actions=true to clip")
        action = np.clip(action, low, high).astype(np.float32)
    if mapping.clip_actions:  # the policy's own proposal is checked against the same bounds on the wire
        policy_action = np.clip(policy_action, low, high).astype(np.float32)
    task = next((t for t in rows.tasks if t), "") or (ref.tasks[0] if ref.tasks else "") or mapping.task
    episode = Episode(frames=frames, action=action, policy_action=policy_action, reward=reward,
                      terminated=terminated, truncated=truncated, intervened=intervened, actor_id=mapping.actor_id,
                      episode_id=ref.index, spec_hash=hash_, success=success, task=task,
                      meta={"source": "lerobot", "dataset": str(source.root), "episode_index": ref.index,
                            "codebase_version": source.version, "fps": source.fps})
    try:
        batch = episode.to_batch()
        batch.check(obs_spec, action_spec)
    except SpecError as e:
        raise DatasetError(f"{where}: {e}") from e
    return episode


def import_lerobot(src: str | Path, out: str | Path, mapping: LeRobotMapping = LeRobotMapping(),
                   target: tuple[ObsSpec, ActionSpec] | None = None) -> dict[str, Any]:
    """Import every episode of the dataset at ``src`` into a new episode store ``out``.

    ``target`` is the env's specs (``mapping.spec == "env"``); returns counts and the spec hash."""
    source = LeRobotSource(src, mapping.tolerance_s)
    try:
        cams = camera_features(source, mapping)
        if mapping.spec == "env":
            if target is None:
                raise DatasetError("spec=env needs the target env's specs")
            obs_spec, action_spec = target
        else:
            obs_spec, action_spec = dataset_specs(source, mapping, cams)
        _check_mapping(source, mapping, cams, obs_spec, action_spec)
        used_cams = {k[len(IMAGE_PREFIX):] for k in obs_spec.image_keys}
        ignored = sorted(set(cams) - used_cams)
        if ignored:
            log.info("cameras not in the target spec, not imported: %s", ignored)
        keys = [*(mapping.state if "state" in obs_spec.fields else ()), mapping.action]
        keys += [cams[c] for c in sorted(used_cams)]
        keys += [k for k in (mapping.reward, mapping.done, mapping.intervened, mapping.policy_action,
                             mapping.success, "next.success", "next.terminated", "next.truncated",
                             FINAL_OBSERVATION)
                 if k in source.features and k not in keys]
        hash_ = spec_hash(obs_spec, action_spec)
        steps = 0
        with atomic_output_dir(out) as tmp:
            store = EpisodeStore(tmp, fsync=False)
            for ref in source.episodes:
                episode = episode_from_rows(source.read_episode(ref, keys), source, mapping, cams, obs_spec,
                                            action_spec, hash_)
                store.write(episode)
                steps += len(episode)
            (tmp / "import.json").write_text(json.dumps({
                "source": str(source.root), "codebase_version": source.version, "fps": source.fps,
                "spec_hash": hash_, "obs_spec": obs_spec.to_dict(), "action_spec": action_spec.to_dict(),
                "cameras": {c: cams[c] for c in sorted(used_cams)}, "state": list(mapping.state),
                "action": mapping.action, "episodes": len(source.episodes), "steps": steps}, indent=1))
    finally:
        source.close()
    return {"episodes": len(source.episodes), "steps": steps, "spec_hash": hash_, "out": str(out)}
