"""A small progress model trained on twin episodes reaches the metric floor on held-out episodes."""
import numpy as np
import pytest
import torch

from robot_rl.reward_models.evaluate import evaluate, plot_progress, predict_episode
from robot_rl.reward_models.train import load_checkpoint, train_model, weights_version


def test_progress_model_reaches_the_metric_floor_on_held_out_episodes(trained_state_model, state_heldout_episodes):
    m = evaluate(trained_state_model, state_heldout_episodes)
    assert m["voc"] >= 0.9, m
    assert m["vroc"] >= 0.9, m
    assert m["order_accuracy"] >= 0.9, m
    assert m["success_auroc"] >= 0.95, m
    assert m["mismatched_text_delta"] <= 0.1, m  # reads the task text: no progress on another task
    assert m["done_recall"] >= 0.8 and m["done_precision"] >= 0.8, m


def test_fused_perspectives_and_plot(trained_state_model, state_heldout_episodes, tmp_path):
    succ = next(e for e in state_heldout_episodes if e.success)
    pred = predict_episode(trained_state_model, succ)
    assert set(pred) == {"phi", "done", "start", "incremental", "fused"}
    for v in pred.values():
        assert v.shape == (len(succ) + 1,) and np.isfinite(v).all()
    assert pred["fused"][-1] > 0.8 and pred["fused"][0] < 0.2
    path = plot_progress(trained_state_model, state_heldout_episodes, tmp_path / "p.png")
    assert path.stat().st_size > 10_000


def test_checkpoint_roundtrip_keeps_outputs_and_version(trained_state_model, state_checkpoint,
                                                        state_heldout_episodes):
    loaded = load_checkpoint(state_checkpoint)
    assert loaded.version == weights_version(trained_state_model)
    e = state_heldout_episodes[0]
    a, b = predict_episode(trained_state_model, e), predict_episode(loaded, e)
    np.testing.assert_allclose(a["fused"], b["fused"], atol=1e-6)


def test_success_classifier_baseline(state_train_episodes, state_heldout_episodes, small_cfg):
    clf = train_model(state_train_episodes, small_cfg(kind="classifier", steps=100))
    m = evaluate(clf, state_heldout_episodes)
    assert m["success_auroc"] >= 0.95, m
    assert m["done_recall"] >= 0.8, m


def test_pixel_multiview_model_trains_and_rejects_bad_input(small_cfg):
    """Two cameras + proprio at 16 px: the CNN path runs, the loss falls, bad inputs fail loudly."""
    from robot_rl.config import load_config
    from robot_rl.reward_models.data import generate_episodes

    cfg = load_config(["env.obs=pixels", "env.image_size=16", "env.max_episode_steps=30"])
    eps = generate_episodes(cfg.env, 3, 1, seed=5, failure_kinds=("random",))
    assert eps[0].frames["images/front"].shape[1:] == (16, 16, 3)
    losses = []
    model = train_model(eps, small_cfg(steps=30, model=small_cfg().model.__class__(
        image_size=16, channels=(8, 16), feature_dim=32, hidden_dim=48)),
        on_log=lambda step, s: losses.append(s["loss"]), log_every=10)
    assert model.encoder.views == ["images/front", "images/wrist", "state"]
    assert losses[-1] < losses[0]
    obs = {k: torch.from_numpy(v[:4]) for k, v in eps[0].frames.items()}
    text = torch.from_numpy(model.task_embedding[eps[0].task])[None]
    phi, done = model.phi_done(obs, text)
    assert phi.shape == (4,) and ((phi >= 0) & (phi <= 1)).all() and torch.isfinite(done).all()
    bad = dict(obs, state=obs["state"].clone())
    bad["state"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.phi_done(bad, text)
    with pytest.raises(ValueError, match="uint8"):
        model.phi_done(dict(obs, **{"images/front": obs["images/front"].float()}), text)
    with pytest.raises(KeyError):
        model.phi_done({"state": obs["state"]}, text)
