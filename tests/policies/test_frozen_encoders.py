"""Frozen camera encoders: torchvision-layout ResNet weights from a file, the embedding cache in replay, the task
encoder's pretraining on demos, and SAC training only the heads."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_rl.config import load_config
from robot_rl.demos import generate_demos
from robot_rl.episode_store import EpisodeStore
from robot_rl.learner import Learner
from robot_rl.policies.backbones import BackboneWeightsError, ResNetTrunk
from robot_rl.policies.frozen_encoders import ResNetCameraEncoder, TaskCameraEncoder
from robot_rl.policies.task_pretrain import pretrain_task_encoder, task_targets
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.types import Batch
from support import rollout

pytestmark = pytest.mark.usefixtures("single_thread")

# A few entries of torchvision.models.resnet18().state_dict() (122 entries with fc), written out from
# torchvision's architecture so that this test does not need torchvision installed.
TORCHVISION_RESNET18_KEYS = {
    "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.1.conv2.weight": (64, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer2.0.downsample.1.num_batches_tracked": (),
    "layer3.1.bn1.weight": (256,), "layer4.0.conv1.weight": (512, 256, 3, 3), "layer4.1.bn2.running_mean": (512,),
}


def save_torchvision_layout(path: Path, arch: str, seed: int) -> dict[str, torch.Tensor]:
    """Random weights in torchvision's ResNet state-dict layout, classifier included, saved with torch.save."""
    torch.manual_seed(seed)
    trunk = ResNetTrunk(arch, 4)
    for module in trunk.modules():  # non-trivial BatchNorm statistics, so loading them is actually checked
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = dict(trunk.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(state, path)
    return state


def test_frozen_resnet18_loads_a_torchvision_state_dict_and_refuses_another_architecture(tmp_path) -> None:
    path = tmp_path / "resnet18.pt"
    state = save_torchvision_layout(path, "resnet18", seed=0)
    assert len(state) == 122
    for key, shape in TORCHVISION_RESNET18_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    cfg = load_config(["policy.encoder=frozen", f"policy.backbone.weights={path}", "policy.backbone.stages=3"])
    encoder = ResNetCameraEncoder((64, 64, 3), cfg.policy.backbone, feature_dim=32)
    trunk = encoder._trunk[0]
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert encoder.embedding_shape == (256, 4, 4)  # layer3 of a 64 px frame: stride 16
    assert all(not p.requires_grad for p in trunk.parameters()) and not trunk.training
    assert not any(k.startswith("_trunk") or k.startswith("layer") for k in encoder.state_dict())  # not on the wire
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    assert encoder(images).shape == (3, 32)

    wrong = tmp_path / "resnet10.pt"
    save_torchvision_layout(wrong, "resnet10", seed=1)
    cfg18 = load_config(["policy.encoder=frozen", f"policy.backbone.weights={wrong}"])
    with pytest.raises(BackboneWeightsError, match=r"resnet10\.pt.*expected architecture resnet18"):
        ResNetCameraEncoder((64, 64, 3), cfg18.policy.backbone, feature_dim=32)
    not_weights = tmp_path / "notes.pt"
    not_weights.write_text("not a state dict")
    cfg_bad = load_config(["policy.encoder=frozen", f"policy.backbone.weights={not_weights}"])
    with pytest.raises(BackboneWeightsError, match=r"notes\.pt.*resnet18"):
        ResNetCameraEncoder((64, 64, 3), cfg_bad.policy.backbone, feature_dim=32)
    with pytest.raises(ValueError, match="policy.backbone.weights"):
        ResNetCameraEncoder((64, 64, 3), load_config(["policy.encoder=frozen"]).policy.backbone, 32)


def test_embedding_cache_in_replay_equals_recomputing(tmp_path, pixel_env) -> None:
    """The learner embeds each frame once on arrival; what replay hands to an update equals encoding the raw
    frames again, and the head's features from the cache equal the whole encoder's on the images."""
    weights = tmp_path / "resnet10.pt"
    save_torchvision_layout(weights, "resnet10", seed=2)
    cfg = load_config(["env=point_reach", "env.obs=pixels", "env.image_size=16", "policy.encoder=frozen",
                       "policy.backbone.arch=resnet10", f"policy.backbone.weights={weights}",
                       "policy.backbone.stages=2", "policy.backbone.pooling=learned", "transport.kind=inproc",
                       f"run_dir={tmp_path / 'run'}", "logger.wandb=disabled", "logger.progress=false",
                       "num_demos=0", "replay.prefetch=0"])
    learner = Learner(cfg)
    try:
        assert set(learner.online.obs_spec.fields) == {"state", "embed/top"}  # no images in replay
        batch = Batch.from_transitions(rollout(pixel_env, 60))
        stored = learner._to_replay(batch)
        assert learner.embedded_frames < 2 * len(batch)  # obs of a continuing step reuses next_obs' embedding
        learner.online.add_batch(stored)
        camera = learner.policy.encoder.frozen_cameras["images/top"]
        for i in (0, 7, 31, 59):
            for side in ("obs", "next_obs"):
                fresh = camera.embed(torch.from_numpy(getattr(batch, side)["images/top"][i:i + 1]))[0]
                torch.testing.assert_close(torch.from_numpy(getattr(stored, side)["embed/top"][i]), fresh,
                                           rtol=1e-5, atol=1e-5)
        sampled = learner.online.sample(32, np.random.default_rng(0))  # what an update gets
        for row in sampled.obs["embed/top"]:
            assert np.abs(stored.obs["embed/top"] - row).reshape(len(stored), -1).max(1).min() == 0.0
        raw = Batch.from_transitions(rollout(pixel_env, 60)).to_torch()  # same seed: the same frames again
        embedded = learner._to_replay(Batch.from_transitions(rollout(pixel_env, 60))).to_torch()
        with torch.no_grad():
            torch.testing.assert_close(learner.policy.encoder(embedded.obs), learner.policy.encoder(raw.obs),
                                       rtol=1e-5, atol=1e-5)
    finally:
        learner.close()


def test_task_encoder_pretrains_on_demos_then_stays_frozen_while_sac_trains_its_head(tmp_path) -> None:
    cfg = load_config(["env=point_reach", "env.obs=pixels", "env.image_size=16", "policy.encoder=task",
                       "policy.task_encoder.pretrain_steps=150", "policy.task_encoder.channels=8",
                       "policy.task_encoder.keypoints=8", "algo=sac", "algo.batch_size=32",
                       "policy.hidden_dims=[32,32]", "algo.critic_hidden_dims=[32,32]"])
    generate_demos(cfg, 8, tmp_path / "demos")
    from robot_rl.registry import env_specs

    obs_spec, action_spec = env_specs(cfg)
    episodes = list(EpisodeStore(tmp_path / "demos").episodes())
    torch.manual_seed(0)
    policy = POLICIES.make("gaussian", cfg.policy, obs_spec, action_spec)
    camera = policy.encoder.frozen_cameras["images/top"]
    assert isinstance(camera, TaskCameraEncoder)
    frames = torch.from_numpy(np.concatenate([ep.frames["images/top"][:-1] for ep in episodes]))
    targets = task_targets(episodes, action_spec)
    assert set(targets) == {"action", "progress", "success"}  # robot signals only, no object pose

    def action_mse() -> float:  # linear read-out of the frozen embedding -> demo action (least squares)
        with torch.no_grad():
            x = torch.cat([camera.embed(frames), torch.ones(len(frames), 1)], 1).double()
        y = torch.from_numpy(targets["action"]).double()
        solution = torch.linalg.lstsq(x, y).solution
        return float((x @ solution - y).square().mean())

    before = action_mse()
    losses = pretrain_task_encoder(policy.encoder, episodes, action_spec, cfg.policy.task_encoder, seed=0)
    after = action_mse()
    assert losses["frames"] == len(frames)
    assert after < 0.7 * before, (before, after)  # the keypoints now carry what the demos' actions depend on
    assert all(not p.requires_grad for p in camera.backbone_parameters())
    assert all(p.requires_grad for p in camera.projection.parameters())
    with pytest.raises(ValueError, match="needs demonstrations"):
        pretrain_task_encoder(policy.encoder, [], action_spec, cfg.policy.task_encoder)

    # SAC: updates on embeddings move the head (and its Polyak target), never the frozen backbone.
    algo = ALGORITHMS.make("sac", cfg.algo, policy, obs_spec, action_spec, "cpu")
    algo.sync_target_encoder()
    embedded = policy.encoder.replay_spec(obs_spec)
    assert set(embedded.fields) == {"state", "embed/top"} and embedded.fields["embed/top"].shape == (16,)
    batch = episodes[0].to_batch()
    with torch.no_grad():
        obs = {"state": torch.from_numpy(batch.obs["state"]), "embed/top":
               camera.embed(torch.from_numpy(np.ascontiguousarray(batch.obs["images/top"])))}
        next_obs = {"state": torch.from_numpy(batch.next_obs["state"]), "embed/top":
                    camera.embed(torch.from_numpy(np.ascontiguousarray(batch.next_obs["images/top"])))}
    tb = dataclasses.replace(batch.to_torch(), obs=obs, next_obs=next_obs)
    backbone_before = [p.detach().clone() for p in camera.backbone_parameters()]
    head_before = [p.detach().clone() for p in camera.projection.parameters()]
    for _ in range(3):
        metrics = algo.update(tb)
    assert np.isfinite(metrics["critic_loss"])
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, camera.backbone_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, camera.projection.parameters()))
    assert not algo._augment  # embeddings are fixed: no per-update image augmentation
