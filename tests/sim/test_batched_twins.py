"""Batched envs: the vectorised CPU twin, the batched actor loop, and the MuJoCo Warp twin against the CPU twin."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from robot_rl.config import load_config
from robot_rl.sim.batched import BatchedEnv, VectorizedTwin, make_batched_env
from robot_rl.sim.panda_config import PandaPickCubeConfig, RandomizationConfig
from robot_rl.sim.panda_pick_cube import PandaPickCube
from robot_rl.sim.pick_cube_warp import warp_available
from support import run_with_actor_thread

WARP_OK, WARP_WHY = warp_available()


def test_vectorized_pick_cube_matches_single_envs_and_auto_resets() -> None:
    cfg = PandaPickCubeConfig(max_episode_steps=3, randomization=RandomizationConfig(object_xy_range=0.05))
    env = VectorizedTwin(lambda s: PandaPickCube(cfg, seed=s), 2, seed=7)
    assert isinstance(env, BatchedEnv)
    singles = [PandaPickCube(cfg, seed=s) for s in env.seeds]
    obs = env.reset()
    first = [e.reset(seed=s) for e, s in zip(singles, env.seeds)]
    assert obs["state"].shape == (2, 28) and obs["state"].dtype == torch.float32
    np.testing.assert_array_equal(obs["state"].numpy(), np.stack([o["state"] for o in first]))
    assert not torch.equal(obs["state"][0], obs["state"][1])  # the seeds differ per env
    actions = torch.tensor([[1.0, 0.0, -1.0, -1.0], [0.0, -1.0, 0.0, 1.0]])
    for t in range(3):
        step = env.step(actions)
        results = [e.step(a) for e, a in zip(singles, actions.numpy())]
        np.testing.assert_array_equal(step.final_obs["state"].numpy(), np.stack([r.obs["state"] for r in results]))
        assert step.truncated.tolist() == [t == 2] * 2 and not step.terminated.any() and not step.success.any()
        assert step.reward.shape == (2,) and step.done.dtype == torch.bool
    # Same-step auto-reset: obs is the next episode's first observation (seed + 1), final_obs the last one.
    fresh = np.stack([e.reset(seed=s + 1)["state"] for e, s in zip(singles, env.seeds)])
    np.testing.assert_array_equal(step.obs["state"].numpy(), fresh)
    assert not np.array_equal(step.final_obs["state"].numpy(), fresh)
    with pytest.raises(ValueError, match="shaped"):
        env.step(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="non-finite actions for envs \\[1\\]"):
        env.step(torch.tensor([[0.0] * 4, [float("nan")] * 4]))
    env.close()


def test_batched_actor_streams_every_row_to_the_learner(tmp_path) -> None:
    from robot_rl.batched_actor import BatchedActor
    from robot_rl.learner import Learner

    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "learner.warmup_transitions=64", "algo.batch_size=32",
                       "learner.max_env_steps=400", "learner.utd=0.25", "learner.publish_every=10",
                       "replay.prefetch=0", "transport.kind=inproc", "transport.chunk_size=16"])
    env = make_batched_env(cfg.env, num_envs=8)
    learner = Learner(cfg)
    actor = BatchedActor(cfg, learner.transport.connect(cfg.transport, "actor-0"), env)
    learned, result = run_with_actor_thread(learner, actor, join_s=30)
    assert learned["env_steps"] >= 400 and result["weights_version"] > 0
    assert result["steps"] % 8 == 0  # whole batched steps only
    episodes = list(actor.store.episodes())
    assert sum(len(ep) for ep in episodes) == result["steps"]  # every row of every step is in the store
    assert len({ep.episode_id for ep in episodes}) == len(episodes)
    for ep in episodes:  # rows never mix: each episode ends once, at its end (or was cut by the stop)
        ended = ep.terminated | ep.truncated
        assert not ended[:-1].any() and (ended[-1] or ep.meta["interrupted"])
        assert len(ep) <= cfg.env.max_episode_steps and ep.frames["state"].shape == (len(ep) + 1, 6)
        # the goal (state[2:4]) is fixed within an episode: frames of one env, never a neighbour's
        np.testing.assert_array_equal(ep.frames["state"][:, 2:4], np.broadcast_to(ep.frames["state"][0, 2:4],
                                                                                   (len(ep) + 1, 2)))


def _expert_episodes(cfg: PandaPickCubeConfig, seeds: list[int]) -> list[dict[str, np.ndarray]]:
    """CPU twin + scripted expert: actions (T, 4), states (T + 1, 28), success (T,) per seed."""
    out = []
    for seed in seeds:
        env = PandaPickCube(cfg, seed=seed)
        obs = env.reset(seed=seed)
        expert = env.expert()
        expert.reset()
        actions, states, success = [], [obs["state"]], []
        for _ in range(cfg.max_episode_steps):
            action = expert.act(obs)
            result = env.step(action)
            actions.append(action), states.append(result.obs["state"]), success.append(result.success)
            obs = result.obs
            if result.terminated or result.truncated:
                break
        out.append({"actions": np.stack(actions), "states": np.stack(states), "success": np.asarray(success),
                    "next_start": env.reset(seed=seed + 1)["state"]})
    return out


@pytest.mark.skipif(not WARP_OK, reason=f"mujoco-warp is not installed here: {WARP_WHY}")
@pytest.mark.timeout(240)
def test_warp_twin_agrees_with_cpu_twin_on_expert_episodes() -> None:
    from robot_rl.sim.pick_cube_warp import PickCubeWarp

    cfg = PandaPickCubeConfig(max_episode_steps=40, randomization=RandomizationConfig(object_xy_range=0.04,
                                                                                        object_yaw_range=0.2))
    seeds = [3, 1003]
    ref = _expert_episodes(cfg, seeds)
    assert all(r["success"][-1] for r in ref)  # the expert picks the cube on the CPU twin
    env = PickCubeWarp(cfg, num_envs=2, seed=3)
    assert env.seeds == seeds and env.obs_spec == PandaPickCube(cfg).obs_spec
    obs = env.reset()
    np.testing.assert_allclose(obs["state"].numpy(), np.stack([r["states"][0] for r in ref]), atol=1e-5)
    steps = max(len(r["actions"]) for r in ref)
    for t in range(steps):
        actions = np.stack([r["actions"][min(t, len(r["actions"]) - 1)] for r in ref])  # (2, 4)
        result = env.step(torch.as_tensor(actions))
        for j, r in enumerate(ref):
            if t >= len(r["actions"]):
                continue  # this world finished and restarted; its later actions are padding
            state = result.final_obs["state"][j].numpy()
            # Positions: TCP (0:3), cube (21:24); float32 physics against float64 within 1 mm.
            np.testing.assert_allclose(state[:3], r["states"][t + 1][:3], atol=1e-3, err_msg=f"tcp env {j} t {t}")
            np.testing.assert_allclose(state[21:24], r["states"][t + 1][21:24], atol=1e-3,
                                       err_msg=f"cube env {j} t {t}")
            assert bool(result.success[j]) == bool(r["success"][t]), f"success differs: env {j} step {t}"
            assert bool(result.terminated[j]) == bool(r["success"][t]) and not bool(result.truncated[j])
            if t == len(r["actions"]) - 1:  # auto-reset into the CPU twin's next episode (seed + 1)
                np.testing.assert_allclose(result.obs["state"][j].numpy(), r["next_start"], atol=1e-5)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(torch.full((2, 4), float("nan")))


@pytest.mark.skipif(not WARP_OK, reason=f"mujoco-warp is not installed here: {WARP_WHY}")
@pytest.mark.timeout(300)
def test_train_on_the_warp_twin_through_real_processes(tmp_path) -> None:
    """``robot-rl train env=pick_cube_warp num_envs=4``: the actor process steps 4 Warp worlds as one batch and
    streams them to the learner; the run ends with its evaluation, checkpoint and stored episodes."""
    import json

    from support import run_cli

    run = tmp_path / "run"
    result = run_cli("train", "env=pick_cube_warp", "num_envs=4", f"run_dir={run}", "num_demos=3",
                     "learner.max_env_steps=120", "learner.eval_every_env_steps=0", "algo.batch_size=32",
                     "algo.offline_pretrain_updates=20", "learner.warmup_transitions=50", "eval_episodes=1",
                     "logger.wandb=disabled", "logger.progress=false", timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mujoco_warp" in (run / "logs" / "actor-0.log").read_text()  # the actor really ran the Warp twin
    records = [json.loads(line) for line in (run / "metrics_learner.jsonl").read_text().splitlines()]
    assert max(r.get("env_steps", 0) for r in records) >= 120
    assert json.loads((run / "eval.json").read_text())["episodes"] == 1
    assert (run / "checkpoints" / "LATEST").exists()


def test_the_batched_actor_refuses_onnx_inference_instead_of_ignoring_it(tmp_path) -> None:
    from robot_rl.batched_actor import BatchedActor

    cfg = load_config(["env=point_reach", f"run_dir={tmp_path}", "actor.inference=onnxruntime",
                       "actor.batched_backend=cpu"])
    with pytest.raises(ValueError, match="per-env actor"):
        BatchedActor(cfg, transport=None, env=make_batched_env(cfg.env, num_envs=2))
