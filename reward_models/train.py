"""Training the progress model (or the success classifier) from episodes, and its checkpoint file.

Each step draws ``episodes_per_batch`` episode groups of ``frames_per_episode`` frames (:class:`PairSampler`),
encodes every frame once and supervises: ``phi`` (MSE to the progress label), ``done`` (weighted BCE) and
``delta`` for all F x F ordered pairs of a group (MSE), so one encoder pass yields F^2 pair labels.

Checkpoint (``torch.save``, loadable with ``weights_only=True``): kind, model config, view shapes, weights,
the tasks it was trained on with their text embeddings, a ``version`` (hash of the weights) that the learner
records, and the training config.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from robot_rl.reward_models.classifier import SuccessClassifier
from robot_rl.reward_models.config import ProgressModelConfig, RewardTrainConfig
from robot_rl.reward_models.data import PairBatch, PairSampler
from robot_rl.reward_models.progress import ProgressRewardModel, model_config_dict, model_config_from_dict
from robot_rl.types import Episode

log = logging.getLogger("robot_rl.reward_models")
MODEL_KINDS: dict[str, type[nn.Module]] = {"prm": ProgressRewardModel, "classifier": SuccessClassifier}


def views_of(episodes: Sequence[Episode], views: Sequence[str] = ()) -> dict[str, tuple[int, ...]]:
    """view key -> per-frame shape, checked identical across episodes."""
    if not episodes:
        raise ValueError("no episodes")
    keys = list(views) or sorted(episodes[0].frames)
    shapes = {k: tuple(episodes[0].frames[k].shape[1:]) for k in keys if k in episodes[0].frames}
    if len(shapes) != len(keys):
        raise ValueError(f"views {keys} not all in the episodes' observations {sorted(episodes[0].frames)}")
    for e in episodes:
        for k, s in shapes.items():
            if k not in e.frames or tuple(e.frames[k].shape[1:]) != s:
                raise ValueError(f"episode {e.actor_id}/{e.episode_id}: view {k!r} missing or not shaped {s}")
    return shapes


def build_model(kind: str, cfg: ProgressModelConfig, view_shapes: Mapping[str, tuple[int, ...]]) -> nn.Module:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown reward-model kind {kind!r}; choose from {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](cfg, view_shapes)


def _to_torch(frames: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in frames.items()}


def batch_loss(model: nn.Module, batch: PairBatch, cfg: RewardTrainConfig, device: torch.device
               ) -> tuple[torch.Tensor, dict[str, float]]:
    E, Fn = batch.phi.shape
    flat = {k: v.reshape(E * Fn, *v.shape[2:]) for k, v in batch.frames.items()}  # (E*F, ...)
    f = model.encoder(_to_torch(flat, device), augment=cfg.augment_shift)  # (E*F, d)
    tf = model.text_features(torch.from_numpy(batch.text).to(device))  # (E, d)
    tf_frames = tf.repeat_interleave(Fn, dim=0)  # (E*F, d)
    done = torch.from_numpy(batch.done).to(device).reshape(-1)
    pos_weight = torch.tensor(cfg.done_pos_weight, device=device)
    if isinstance(model, SuccessClassifier):
        loss = F.binary_cross_entropy_with_logits(model.logit(f, tf_frames), done, pos_weight=pos_weight)
        return loss, {"loss": float(loss.detach()), "done_bce": float(loss.detach())}
    phi, done_logit = model.state_outputs(f, tf_frames)  # (E*F,), (E*F,)
    phi_t, phi_m = (torch.from_numpy(x).to(device).reshape(-1) for x in (batch.phi, batch.phi_mask))
    phi_loss = ((phi - phi_t) ** 2 * phi_m).sum() / phi_m.sum().clamp(min=1.0)
    done_loss = F.binary_cross_entropy_with_logits(done_logit, done, pos_weight=pos_weight)
    f0 = model.encoder(_to_torch(batch.first, device), augment=cfg.augment_shift)  # (E, d)
    fe = f.reshape(E, Fn, -1)
    d = fe.shape[-1]
    fa = fe[:, :, None, :].expand(E, Fn, Fn, d).reshape(-1, d)  # pair [e, a, b]: a
    fb = fe[:, None, :, :].expand(E, Fn, Fn, d).reshape(-1, d)  # pair [e, a, b]: b
    f0p = f0[:, None, None, :].expand(E, Fn, Fn, d).reshape(-1, d)
    tfp = tf[:, None, None, :].expand(E, Fn, Fn, d).reshape(-1, d)
    delta = model.delta(f0p, fa, fb, tfp)  # (E*F*F,)
    dl_t, dl_m = (torch.from_numpy(x).to(device).reshape(-1) for x in (batch.delta, batch.delta_mask))
    delta_loss = ((delta - dl_t) ** 2 * dl_m).sum() / dl_m.sum().clamp(min=1.0)
    loss = phi_loss + delta_loss + 0.5 * done_loss
    return loss, {"loss": float(loss.detach()), "phi_mse": float(phi_loss.detach()), "delta_mse": float(delta_loss.detach()),
                  "done_bce": float(done_loss.detach())}


def fit_state_normalisation(model: nn.Module, episodes: Sequence[Episode]) -> None:
    for key in model.encoder.views:
        if not key.startswith("images/"):
            x = np.concatenate([e.frames[key] for e in episodes]).astype(np.float64)
            model.encoder.set_normalisation(key, x.mean(0), x.std(0))


class TrainingCancelled(RuntimeError):
    """``train_model`` was asked to stop (``should_stop``) before it finished; the model is discarded."""


def train_model(episodes: Sequence[Episode], cfg: RewardTrainConfig, model: nn.Module | None = None,
                task_embedding: dict[str, np.ndarray] | None = None,
                on_log: Callable[[int, dict[str, float]], None] | None = None, log_every: int = 100,
                weights: Sequence[float] | None = None, should_stop: Callable[[], bool] | None = None) -> nn.Module:
    """Train (or continue training ``model``) on ``episodes``; returns the model in eval mode. ``weights``
    (one per episode, default uniform) sets how often each successful episode is drawn. ``should_stop`` is
    asked before every step; when it answers True, :class:`TrainingCancelled` is raised (the learner's refresh
    thread uses it to stop at shutdown instead of running torch ops while the interpreter exits)."""
    from robot_rl.reward_models.text import embed

    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    shapes = views_of(episodes, cfg.model.views) if model is None else model.encoder.view_shapes
    if model is None:
        model = build_model(cfg.kind, cfg.model, shapes)
        fit_state_normalisation(model, episodes)
    model.to(device).train()
    tasks = sorted({e.task for e in episodes})
    task_embedding = dict(task_embedding or {})
    missing = [t for t in tasks if t not in task_embedding]
    if missing:
        task_embedding.update(zip(missing, embed(missing)))
    distractors = [t for t in cfg.distractor_tasks if t not in tasks]
    if not distractors:
        raise ValueError("need at least one distractor task text that differs from the training tasks")
    sampler = PairSampler(episodes, list(shapes), task_embedding, embed(distractors), cfg.frames_per_episode,
                          cfg.mismatch_prob, cfg.failure_prob, seed=cfg.seed, weights=weights)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.steps, 1), eta_min=cfg.lr * 0.05)
    t0 = time.monotonic()
    for step in range(1, cfg.steps + 1):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"reward-model training cancelled at step {step} of {cfg.steps}")
        loss, stats = batch_loss(model, sampler.sample(cfg.episodes_per_batch), cfg, device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"reward-model loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if on_log is not None and (step % log_every == 0 or step == cfg.steps):
            on_log(step, {**stats, "elapsed_s": time.monotonic() - t0})
    model.eval()
    model.task_embedding = task_embedding  # type: ignore[attr-defined]  (saved with the checkpoint)
    return model


# --------------------------------------------------------------------------------------- checkpoints
def weights_version(model: nn.Module) -> str:
    """Short hash of the weights: what a labelled batch records as its reward-model version."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_checkpoint(path: str | Path, model: nn.Module, tasks: Sequence[str], train_cfg: RewardTrainConfig | None = None,
                    metrics: Mapping[str, float] | None = None) -> str:
    """Write the checkpoint atomically; returns its version."""
    from robot_rl.storage import atomic_write_bytes
    import io

    emb = getattr(model, "task_embedding", {})
    missing = [t for t in tasks if t not in emb]
    if missing:
        from robot_rl.reward_models.text import embed
        emb = {**emb, **dict(zip(missing, embed(missing)))}
    version = weights_version(model)
    state = {"format": "robot_rl.reward_model/1", "kind": model.kind, "version": version,
             "model_cfg": model_config_dict(model.cfg),
             "view_shapes": {k: list(v) for k, v in model.encoder.view_shapes.items()},
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "tasks": list(tasks), "task_embeddings": torch.from_numpy(np.stack([emb[t] for t in tasks])),
             "train_cfg": _plain(asdict(train_cfg)) if train_cfg is not None else {},
             "metrics": {k: float(v) for k, v in (metrics or {}).items()}}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return version


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a reward model written by :func:`save_checkpoint` (eval mode, ``.version``, ``.tasks`` and
    ``.task_embedding`` set)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reward-model checkpoint {path} does not exist (robot-rl reward train ...)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != "robot_rl.reward_model/1":
        raise ValueError(f"{path} is not a robot_rl reward-model checkpoint (format {state.get('format')!r})")
    model = build_model(state["kind"], model_config_from_dict(state["model_cfg"]),
                        {k: tuple(v) for k, v in state["view_shapes"].items()})
    model.load_state_dict(state["state_dict"])
    model.to(device).eval()
    model.version = state["version"]  # type: ignore[attr-defined]
    model.tasks = list(state["tasks"])  # type: ignore[attr-defined]
    model.task_embedding = {t: e.numpy() for t, e in zip(state["tasks"], state["task_embeddings"])}  # type: ignore
    model.train_metrics = dict(state.get("metrics", {}))  # type: ignore[attr-defined]
    if weights_version(model) != state["version"]:
        raise ValueError(f"{path}: weights do not match their recorded version (corrupt file)")
    return model
