"""Evaluating a reward model on held-out episodes: per-frame progress, metrics, and a plot.

GRM-style multi-perspective fusion of the progress of frame t in an episode:

- goal-anchored: ``phi(s_t)`` (absolute progress of the frame alone);
- start-anchored: ``delta(first=s_0, a=s_0, b=s_t)`` (progress from the start, label t / T);
- incremental: ``p_0 = 0``, ``p_{t+k}`` from ``p_t`` and ``delta(s_0, s_t, s_{t+k})`` (the pair label inverted) over strides of k frames
  (linearly interpolated in between), clipped to [0, 1];

and the fused estimate, their mean. The classifier has only ``phi`` (= P(success)).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from robot_rl.reward_models import metrics as M
from robot_rl.reward_models.data import apply_pair_label
from robot_rl.types import Episode


def _frames(episode: Episode, views: Sequence[str], idx: np.ndarray | slice, device: Any) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(episode.frames[k][idx])).to(device) for k in views}


def text_embedding(model: Any, task: str) -> np.ndarray:
    emb = getattr(model, "task_embedding", {})
    if task in emb:
        return np.asarray(emb[task], np.float32)
    from robot_rl.reward_models.text import embed

    return embed([task])[0]


@torch.no_grad()
def predict_episode(model: Any, episode: Episode, task: str | None = None, stride: int = 4) -> dict[str, np.ndarray]:
    """float64 (T + 1,) arrays per perspective: ``phi``, ``done`` and, for the progress model,
    ``start``, ``incremental`` and ``fused`` (the classifier's ``fused`` is its ``phi``)."""
    device = next(model.parameters()).device
    views = model.encoder.views
    text = torch.from_numpy(text_embedding(model, task or episode.task))[None].to(device)  # (1, 384)
    f = model.encoder(_frames(episode, views, slice(None), device))  # (T+1, d)
    tf = model.text_features(text)  # (1, d)
    n = f.shape[0]
    if model.kind == "classifier":
        p = torch.sigmoid(model.logit(f, tf.expand(n, -1))).double().cpu().numpy()
        return {"phi": p, "done": p, "fused": p}
    phi, done_logit = model.state_outputs(f, tf.expand(n, -1))
    f0 = f[:1].expand(n, -1)
    start = model.delta(f0, f0, f, tf.expand(n, -1)).clamp(0.0, 1.0)  # (T+1,)
    knots = np.unique(np.concatenate([np.arange(0, n, max(1, stride)), [n - 1]]))
    a, b = torch.from_numpy(knots[:-1]).to(device), torch.from_numpy(knots[1:]).to(device)
    steps = model.delta(f0[: len(a)], f[a], f[b], tf.expand(len(a), -1)).double().cpu().numpy()
    p_knots = np.zeros(len(knots))
    for i, d in enumerate(steps):  # invert the pair label a -> b (forward or backward)
        p_knots[i + 1] = apply_pair_label(p_knots[i], d)
    incremental = np.interp(np.arange(n), knots, p_knots)
    out = {"phi": phi.double().cpu().numpy(), "done": torch.sigmoid(done_logit).double().cpu().numpy(),
           "start": start.double().cpu().numpy(), "incremental": incremental}
    out["fused"] = (out["phi"] + out["start"] + out["incremental"]) / 3.0
    return out


def reversed_episode(episode: Episode) -> Episode:
    """The same frames played backwards (a time-reversed clip; actions and rewards are not meaningful)."""
    from dataclasses import replace

    return replace(episode, frames={k: np.ascontiguousarray(v[::-1]) for k, v in episode.frames.items()})


def evaluate(model: Any, episodes: Sequence[Episode], done_threshold: float = 0.5,
             mismatched_task: str = "open the top drawer", stride: int = 4) -> dict[str, float]:
    """Metrics over held-out episodes (successes and failures):

    ``voc``/``vroc`` (means over successful episodes, fused progress), ``voc_<perspective>``,
    ``order_accuracy`` (fused progress vs time, pooled within episodes), ``success_auroc`` (episode score:
    max done probability, successes vs failures), ``success_auroc_progress`` (score: final fused progress),
    ``done_precision``/``done_recall`` (per frame, threshold ``done_threshold``; a success's last frame is the
    done frame), and ``mismatched_text_delta`` (mean |start-anchored progress of the final frame| under
    another task's text: ~0 means the model reads the text).
    """
    succ = [e for e in episodes if e.success]
    fail = [e for e in episodes if not e.success]
    if not succ:
        raise ValueError("evaluation needs successful episodes")
    out: dict[str, list[float]] = {}
    scores, score_prog, labels, done_p, done_y = [], [], [], [], []
    for e in episodes:
        pred = predict_episode(model, e, stride=stride)
        if e.success:
            for key in ("fused", "phi", "start", "incremental"):
                if key in pred:
                    out.setdefault("voc" if key == "fused" else f"voc_{key}", []).append(M.voc(pred[key]))
            out.setdefault("order_accuracy", []).append(M.order_accuracy(pred["fused"], np.arange(len(e) + 1)))
            rev = predict_episode(model, reversed_episode(e), stride=stride)
            out.setdefault("vroc", []).append(M.vroc(rev["fused"]))
            if model.kind != "classifier":
                mm = predict_episode(model, e, task=mismatched_task, stride=stride)
                out.setdefault("mismatched_text_delta", []).append(abs(float(mm["start"][-1])))
                out.setdefault("final_progress", []).append(float(pred["fused"][-1]))
        scores.append(float(pred["done"].max()))
        score_prog.append(float(pred["fused"][-1]))
        labels.append(e.success)
        done_p.append(pred["done"])
        y = np.zeros(len(e) + 1, bool)
        y[-1] = e.success
        done_y.append(y)
    result = {k: float(np.mean(v)) for k, v in out.items()}
    if fail:
        result["success_auroc"] = M.auroc(np.asarray(scores), np.asarray(labels))
        result["success_auroc_progress"] = M.auroc(np.asarray(score_prog), np.asarray(labels))
    from robot_rl.reward_models.trust import expected_calibration_error

    # calibration against the success labels: does "P(done) somewhere in the episode" / "final progress"
    # match how often such episodes actually succeed (0 = calibrated)
    result["success_ece"] = expected_calibration_error(np.asarray(scores), np.asarray(labels))
    result["progress_ece"] = expected_calibration_error(np.clip(score_prog, 0.0, 1.0), np.asarray(labels))
    precision, recall = M.precision_recall(np.concatenate(done_p), np.concatenate(done_y), done_threshold)
    result.update(done_precision=precision, done_recall=recall, episodes=float(len(episodes)),
                  successes=float(len(succ)))
    return result


def calibration_data(model: Any, episodes: Sequence[Episode], stride: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(max P(done) per episode (E,), success label per episode (E,) bool): the reliability diagram's input."""
    probs = np.array([float(predict_episode(model, e, stride=stride)["done"].max()) for e in episodes])
    return probs, np.array([bool(e.success) for e in episodes])


def plot_progress(model: Any, episodes: Sequence[Episode], path: str | Path, max_episodes: int = 8,
                  stride: int = 4) -> Path:
    """PNG of predicted (fused) progress over normalised time for held-out successes and failures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, want, title in ((axes[0], True, "successful episodes"), (axes[1], False, "failed episodes")):
        chosen = [e for e in episodes if e.success == want][:max_episodes]
        for e in chosen:
            pred = predict_episode(model, e, stride=stride)
            t = np.arange(len(e) + 1) / max(len(e), 1)
            line, = ax.plot(t, pred["fused"], alpha=0.8)
            ax.plot(t, pred["done"], ls=":", color=line.get_color(), alpha=0.6)
        if want:
            ax.plot([0, 1], [0, 1], "k--", lw=1, label="t / T (linear reference)")
            ax.legend(loc="upper left")
        ax.set_title(f"{title} ({len(chosen)}); solid: progress, dotted: P(done)")
        ax.set_xlabel("t / T")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("predicted progress")
    axes[0].set_ylim(-0.05, 1.05)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
