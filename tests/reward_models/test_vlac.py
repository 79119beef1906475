"""Pretrained VLAC-style weights: output parsing (always) and the real loader (GPU + local weights only)."""
import os

import numpy as np
import pytest

from robot_rl.reward_models.vlac import build_messages, chain_progress, parse_progress


@pytest.mark.parametrize("text,value", [("+12.5%", 0.125), ("-3%", -0.03), ("progress: 0.4", 0.4),
                                        ("The robot made 25 percent progress.", 0.25), ("  - 10 %", -0.10),
                                        ("0", 0.0), ("100%", 1.0), ("-1", -1.0)])
def test_parse_progress(text, value):
    assert parse_progress(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "no idea", "progress: unknown", "250%"])
def test_parse_progress_refuses_to_guess(text):
    with pytest.raises(ValueError):
        parse_progress(text)


def test_chain_progress_and_messages():
    # -0.5 from 0.75: back to p_b with 0.75 - p_b = 0.5 * (1 - p_b), i.e. 0.5
    np.testing.assert_allclose(chain_progress([0.5, 0.5, -0.5]), [0.0, 0.5, 0.75, 0.5])
    msgs = build_messages("pick up the cube")
    assert [c["type"] for c in msgs[0]["content"]] == ["image", "image", "text"]
    assert "pick up the cube" in msgs[0]["content"][-1]["text"]
    with pytest.raises(ValueError):
        build_messages("  ")


@pytest.mark.gpu
def test_real_pretrained_weights_rank_an_expert_episode():
    import torch

    path = os.environ.get("ROBOT_RL_VLAC_WEIGHTS")
    if not path:
        pytest.skip("no pretrained VLAC-style weights: set ROBOT_RL_VLAC_WEIGHTS to a local model directory")
    if not torch.cuda.is_available():
        pytest.skip("the pretrained VLM critic needs a CUDA GPU")
    from robot_rl.config import load_config
    from robot_rl.reward_models.data import generate_episodes
    from robot_rl.reward_models.metrics import voc
    from robot_rl.reward_models.vlac import PretrainedProgressModel

    cfg = load_config(["env.obs=pixels", "env.image_size=224", "env.max_episode_steps=40"])
    episode = generate_episodes(cfg.env, 1, 0, seed=3)[0]
    model = PretrainedProgressModel(path, trust_remote_code=True)
    progress = model.episode_progress(episode.task, episode.frames["images/front"], stride=4)
    assert voc(progress) > 0.5
