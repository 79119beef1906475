"""One-shot adaptation to a new task (pick-and-place) from a single expert trajectory (pixels: slow)."""
import pytest

from robot_rl.config import load_config
from robot_rl.reward_models.adapt import adapt_one_shot
from robot_rl.reward_models.config import ProgressModelConfig
from robot_rl.reward_models.data import generate_episodes
from robot_rl.reward_models.evaluate import evaluate
from robot_rl.reward_models.train import train_model


def test_adapt_rejects_failed_demo(trained_state_model, state_heldout_episodes):
    failed = next(e for e in state_heldout_episodes if not e.success)
    with pytest.raises(ValueError, match="successful"):
        adapt_one_shot(trained_state_model, failed)


@pytest.mark.slow
@pytest.mark.xfail(reason="measured 2026-11: held-out VOC 0.78 -> 0.80 with old-episode replay (0.67 without); "
                          "one-shot adaptation does not yet reach 0.8 at this CPU budget", strict=False)
def test_one_shot_adaptation_to_pick_and_place(small_cfg):
    views = ("images/front", "images/wrist")  # the two tasks share cameras, not the state layout
    pick = load_config(["env.obs=pixels", "env.image_size=32", "env.max_episode_steps=40"])
    place = load_config(["env=panda_pick_place_cube", "env.obs=pixels", "env.image_size=32",
                         "env.max_episode_steps=80"])
    pick_eps = generate_episodes(pick.env, 16, 8, seed=21)
    base = train_model(pick_eps, small_cfg(
        steps=300, model=ProgressModelConfig(views=views, image_size=32, feature_dim=64, hidden_dim=96)))
    demo = generate_episodes(place.env, 1, 0, seed=22)[0]
    held_out = generate_episodes(place.env, 6, 0, seed=23)
    before = evaluate(base, held_out)["voc"]
    adapted = adapt_one_shot(base, demo, old_episodes=pick_eps, steps=200, cfg=small_cfg())
    after = evaluate(adapted, held_out)["voc"]
    assert after >= 0.8 and after > before, (before, after)
