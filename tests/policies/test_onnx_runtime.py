"""actor.inference=onnxruntime: the exported policy acts as the PyTorch one does, and follows new weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.policies.gaussian import GaussianPolicy, GaussianPolicyConfig
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec

pytest.importorskip("onnxruntime", reason="onnxruntime is installed by the test extra (robot-rl[onnx])")
from robot_rl.policies.onnx_runtime import OnnxRuntimePolicy, export_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

STATE = ObsSpec({"state": ArraySpec((7,), "float32")})
PIXELS = ObsSpec({"state": ArraySpec((5,), "float32"), "images/front": ArraySpec((32, 32, 3), "uint8"),
                  "images/wrist": ArraySpec((32, 32, 3), "uint8")})
ACTIONS = ActionSpec((4,), (-1.0, -1.0, -0.5, 0.0), (1.0, 1.0, 0.5, 2.0))


def _obs(spec: ObsSpec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.integers(0, 256, (n, *s.shape)).astype(np.uint8) if s.dtype == "uint8"
                else rng.normal(0, 2, (n, *s.shape)).astype(np.float32)) for k, s in spec.fields.items()}


@pytest.mark.parametrize("spec,encoder", [(STATE, "drq"), (PIXELS, "drq"), (PIXELS, "task")])
def test_onnx_runtime_acts_exactly_as_pytorch_batched_and_unbatched(spec, encoder) -> None:
    torch.manual_seed(0)
    policy = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[32, 32], encoder=encoder, conv_channels=8,
                                                 conv_layers=2, image_feature_dim=16), spec, ACTIONS).eval()
    with torch.no_grad():
        policy.encoder.set_state_normalization(torch.full((spec.fields["state"].shape[0],), 0.5),
                                               torch.full((spec.fields["state"].shape[0],), 2.0))
    runner = OnnxRuntimePolicy(policy)
    obs = _obs(spec, 6)
    np.testing.assert_allclose(runner.act(obs, deterministic=True), policy.act(obs, deterministic=True),
                               rtol=1e-5, atol=1e-5)
    one = {k: v[0] for k, v in obs.items()}
    out = runner.act(one, deterministic=True)
    assert out.shape == (4,) and out.dtype == np.float32
    np.testing.assert_allclose(out, policy.act(one, deterministic=True), rtol=1e-5, atol=1e-5)


def test_new_weights_are_bound_into_the_running_session() -> None:
    torch.manual_seed(0)
    policy = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[16]), STATE, ACTIONS).eval()
    runner = OnnxRuntimePolicy(policy)
    obs = _obs(STATE, 4)
    before = runner.act(obs, deterministic=True)
    learner = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[16]), STATE, ACTIONS)  # other weights, as published
    with torch.no_grad():
        learner.encoder.set_state_normalization(torch.arange(7.0), torch.full((7,), 3.0))
    runner.load_state_dict({k: v.clone() for k, v in learner.state_dict().items()})
    after = runner.act(obs, deterministic=True)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, learner.eval().act(obs, deterministic=True), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError):  # a wrong name is refused by the PyTorch module, as without ONNX
        runner.load_state_dict({"nope": torch.zeros(1)})


def test_stochastic_actions_sample_the_policys_distribution_inside_the_bounds() -> None:
    torch.manual_seed(0)
    policy = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[16]), STATE, ACTIONS).eval()
    runner = OnnxRuntimePolicy(policy)
    obs = {"state": np.repeat(_obs(STATE, 1)["state"], 4000, 0)}
    ours, theirs = runner.act(obs), policy.act(obs)
    low, high = np.asarray(ACTIONS.low), np.asarray(ACTIONS.high)
    assert (ours >= low).all() and (ours <= high).all()
    assert ours.std(0).min() > 1e-3  # really sampled, not the mean
    np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=0.05)  # same distribution (SE ~0.01)
    np.testing.assert_allclose(ours.std(0), theirs.std(0), atol=0.05)


def test_a_policy_that_does_not_export_is_refused(tmp_path) -> None:
    class Chunked(GaussianPolicy):
        onnx_exportable = False

    policy = Chunked(GaussianPolicyConfig(hidden_dims=[8]), STATE, ACTIONS)
    with pytest.raises(ValueError, match="actor.inference=torch"):
        export_onnx(policy, tmp_path / "p.onnx")
    # the discrete gripper's epsilon draw (torch.randint) has no ONNX operator: refused, not mis-exported
    named = ActionSpec((4,), ACTIONS.low, ACTIONS.high, names=("dx", "dy", "dz", "grip"))
    gripper = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[8], discrete_gripper=True,
                                                  gripper_commands=[0.0, 2.0]), STATE, named)
    assert not gripper.onnx_exportable
    with pytest.raises(ValueError, match="actor.inference=torch"):
        OnnxRuntimePolicy(gripper)


def test_the_actor_runs_its_policy_through_onnx_runtime(tmp_path) -> None:
    from robot_rl.actor import Actor, load_weights
    from robot_rl.config import load_config
    from robot_rl.learner import Learner

    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "transport.kind=inproc", "actor.inference=onnxruntime",
                       "actor.random_steps=0"])
    learner = Learner(cfg)
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    assert isinstance(actor.policy, OnnxRuntimePolicy)
    weights = {k: v.detach().numpy() for k, v in learner.algo.policy_weights().items()}
    load_weights(actor.policy, weights)  # what the actor does with each published set of weights
    obs = actor.envs[0].reset(seed=0)
    np.testing.assert_allclose(actor.policy.act(obs, deterministic=True),
                               learner.policy.eval().act(obs, deterministic=True), rtol=1e-5, atol=1e-5)
    assert np.isfinite(actor._actions([obs])).all()


def test_auto_takes_onnx_runtime_where_the_policy_exports_and_torch_where_it_does_not() -> None:
    from robot_rl.actor import inference_policy

    policy = GaussianPolicy(GaussianPolicyConfig(hidden_dims=[8]), STATE, ACTIONS)
    assert isinstance(inference_policy(policy, "auto"), OnnxRuntimePolicy)
    assert inference_policy(policy, "torch") is policy

    class Chunked(GaussianPolicy):
        onnx_exportable = False

    chunked = Chunked(GaussianPolicyConfig(hidden_dims=[8]), STATE, ACTIONS)
    assert inference_policy(chunked, "auto") is chunked  # a chunk policy keeps running, in torch
    with pytest.raises(ValueError, match="actor.inference=torch"):
        inference_policy(chunked, "onnxruntime")  # asked for explicitly: refused loudly
    with pytest.raises(ValueError, match="torch, onnxruntime or auto"):
        inference_policy(policy, "tensorrt")


def test_the_actor_node_runs_onnx_runtime_by_default_and_its_overrides_still_win() -> None:
    from robot_rl.hardware.ros2.actor_node import load_train_config
    from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params

    assert load_train_config(from_params(RobotNodeConfig, {})).actor.inference == "auto"
    chosen = from_params(RobotNodeConfig, {"inference": "torch"})
    assert load_train_config(chosen).actor.inference == "torch"
    explicit = from_params(RobotNodeConfig, {"overrides": ["env.obs=pixels", "actor.inference=onnxruntime"]})
    assert load_train_config(explicit).actor.inference == "onnxruntime"
