"""Data-parallel SAC on torch.distributed (gloo, 2 CPU processes) equals one process on the same global batches
(the default recipe: BC on demo rows, discrete gripper, pixels; and plain state-only SAC, which takes the
hand-written update);
the torchrun entry point trains end to end with a real actor process over ZeroMQ."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support import free_ports, run_cli

from robot_rl.algorithms.sac import SAC, SACConfig
from robot_rl.policies.gaussian import GaussianPolicy, GaussianPolicyConfig
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.types import Batch

IMAGE = 16  # pixels, kept tiny: the point is the arithmetic of the split, not the encoder
OBS = ObsSpec({"state": ArraySpec((6,), "float32"), "images/top": ArraySpec((IMAGE, IMAGE, 3), "uint8")})
ACT = ActionSpec((4,), (-1.0,) * 4, (1.0,) * 4, ("vx", "vy", "vz", "grip"))
# The default recipe (algo=rlpd_cpu, policy=gaussian on the Panda twin): a BC term on demo rows (bc_weight=1),
# the discrete gripper's grasp critic (large-margin loss on demo rows, epsilon-greedy exploration), pixels
# (random-shift augmentation), REDQ subset (randperm on every rank), 2 critic minibatches per update (strided
# rows); small nets.
CFG = SACConfig(num_critics=4, target_subset_size=2, critic_updates_per_actor_update=2, critic_hidden_dims=[32, 32],
                critic_layer_norm=True, actor_lr=1e-3, critic_lr=1e-3, temperature_lr=1e-3, bc_weight=1.0)
POLICY = GaussianPolicyConfig(hidden_dims=[32, 32], conv_channels=8, conv_layers=2, image_feature_dim=16,
                              augment_pad=2, discrete_gripper=True, grasp_hidden_dims=[32, 32], gripper_epsilon=0.3)
GLOBAL_BATCH = 64  # 2 critic minibatches of 32; each rank gets 32 rows = 2 x 16
DEMO_ROWS = 32  # stacked first, as the sampler does (replay.demo_ratio=0.5)
UPDATES = 6


# Plain SAC on state: the hand-written update (sac_handwritten.py), its gradients averaged by the same hook.
STATE_CFG = SACConfig(critic_hidden_dims=[32, 32], actor_lr=1e-3, critic_lr=1e-3, temperature_lr=1e-3)
STATE_POLICY = GaussianPolicyConfig(hidden_dims=[32, 32])
STATE_OBS = ObsSpec({"state": ArraySpec((6,), "float32")})


def build(recipe: str = "default") -> SAC:
    torch.manual_seed(0)
    if recipe == "state":
        algo = SAC(STATE_CFG, GaussianPolicy(STATE_POLICY, STATE_OBS, ACT), STATE_OBS, ACT, "cpu")
        assert algo.handwritten_fallback is None
        return algo
    policy = GaussianPolicy(POLICY, OBS, ACT)
    return SAC(CFG, policy, OBS, ACT, "cpu")


def batches(recipe: str = "default") -> list[Batch]:
    if recipe == "state":  # the same rows without the images, no demo rows
        return [dataclasses.replace(b, obs={"state": b.obs["state"]}, next_obs={"state": b.next_obs["state"]},
                                    from_demo=None) for b in batches()]
    rng = np.random.default_rng(1)
    out = []
    for _ in range(UPDATES):
        n = GLOBAL_BATCH
        t = lambda a: torch.as_tensor(a)  # noqa: E731
        images = lambda: t(rng.integers(0, 256, (n, IMAGE, IMAGE, 3), dtype=np.uint8))  # noqa: E731
        action = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        action[:, 3] = np.sign(action[:, 3])  # gripper commands are -1 / +1
        out.append(Batch(obs={"state": t(rng.normal(size=(n, 6)).astype(np.float32)), "images/top": images()},
                         next_obs={"state": t(rng.normal(size=(n, 6)).astype(np.float32)), "images/top": images()},
                         action=t(action), reward=t((rng.random(n) < 0.2).astype(np.float32)),
                         terminated=t(rng.random(n) < 0.1), truncated=t(np.zeros(n, bool)),
                         intervened=t(np.zeros(n, bool)), policy_action=t(action),
                         episode_id=t(np.zeros(n, np.int64)), step=t(np.arange(n)),
                         from_demo=t(np.arange(n) < DEMO_ROWS)))
    return out


def params(algo: SAC) -> dict[str, torch.Tensor]:
    state = {f"policy.{k}": v for k, v in algo.policy.state_dict().items()}
    state.update({f"critic.{k}": v for k, v in algo.critic.state_dict().items()})
    state.update({f"target.{k}": v for k, v in algo.target_critic.state_dict().items()})
    if algo._grasp:
        state.update({f"target_grasp.{k}": v for k, v in algo.target_grasp.state_dict().items()})
    state["log_alpha"] = algo.log_alpha.detach()
    return {k: v.detach().clone() for k, v in state.items()}


def _worker(rank: int, world: int, port: int, out_dir: str, recipe: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from robot_rl.distributed import DataParallelAlgorithm, shutdown

    try:
        algo = build(recipe)
        if rank != 0:  # a different init on the follower: the initial broadcast must overwrite it
            with torch.no_grad():
                for p in algo.critic.parameters():
                    p.add_(1.0)
        wrapped = DataParallelAlgorithm(algo)
        metrics: dict[str, float] = {}
        if rank == 0:
            torch.manual_seed(123)  # the learner's generator state drives every rank's random draws
            for batch in batches(recipe):
                metrics = wrapped.update(batch)
            wrapped.stop()
        else:
            assert wrapped.follow() == UPDATES
        torch.save({"params": params(algo), "metrics": metrics}, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:
        shutdown()
        raise  # torch's spawn wrapper reports it to the parent
    shutdown()
    # Saved and out of the process group: skip interpreter finalization, as `python -m robot_rl.distributed`
    # does (gloo's threads torn down by C++ static destructors at exit aborted a rank once: "terminate called
    # without an active exception", SIGABRT, in a fresh-clone run of the whole suite).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("recipe", ["default", "state"])
def test_two_gloo_ranks_equal_one_process(tmp_path: Path, recipe: str) -> None:
    initial = params(build(recipe))
    mp.start_processes(_worker, args=(2, free_ports(1)[0], str(tmp_path), recipe), nprocs=2, join=True,
                       start_method="spawn")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))

    reference = build(recipe)  # one process, the full global batch, the same generator state
    torch.manual_seed(123)
    for batch in batches(recipe):
        ref_metrics = reference.update(batch)
    expected = params(reference)

    for name, value in expected.items():
        moved = (value - initial[name]).abs().max().item()
        assert moved > 1e-4 or name.startswith("policy.encoder"), f"{name} did not train ({moved})"
        torch.testing.assert_close(rank0["params"][name], value, atol=2e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(rank1["params"][name], rank0["params"][name], atol=0, rtol=0, msg=name)
    # bc_loss and grasp_loss are means over demo rows: with every demo row on rank 0 they came out halved
    keys = ["critic_loss", "actor_loss", "q_mean", "entropy", "bc_loss"]
    keys += ["grasp_loss"] if recipe == "default" else []
    for key in keys:
        assert rank0["metrics"][key] == pytest.approx(ref_metrics[key], rel=1e-4, abs=1e-5), key


def test_uneven_global_batch_is_refused(tmp_path: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_ports(1)[0]))
    dist.init_process_group("gloo", rank=0, world_size=1)
    from robot_rl.distributed import DataParallelAlgorithm

    try:
        wrapped = DataParallelAlgorithm(build())
        with pytest.raises(ValueError, match="multiple of 2"):
            wrapped.update(dataclasses.replace(batches()[0], action=torch.zeros(63, 4)))
        stray = wrapped.inner.critic_optimizer
        with pytest.raises(RuntimeError, match="outside a data-parallel update"):
            stray.step()
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(240)
def test_torchrun_entry_point_trains_with_a_real_actor(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2 -m robot_rl.distributed``: rank 0 is the learner (transport, replay,
    checkpoints), rank 1 takes part in every update; an ordinary actor process feeds it over loopback."""
    p1, p2 = free_ports(2)
    run_dir = tmp_path / "run"
    common = ["env=point_reach", "algo=sac", f"run_dir={run_dir}", f"transport.transitions_port={p1}",
              f"transport.weights_port={p2}", "logger.wandb=disabled", "logger.progress=false"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    learner = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                "-m", "robot_rl.distributed", *common, "learner.max_env_steps=600", "learner.utd=0.5",
                                "learner.warmup_transitions=64", "algo.batch_size=32", "replay.prefetch=0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        actor = run_cli("actor", *common, "actor.max_env_steps=800", timeout=180, env=env)
        out, _ = learner.communicate(timeout=120)
    finally:
        if learner.poll() is None:
            learner.kill()
    assert actor.returncode == 0, actor.stderr[-3000:]
    assert learner.returncode == 0, out[-4000:]
    assert "data-parallel learner: 2 ranks, global batch 32" in out, out[-3000:]
    finished = re.search(r"learner finished: .*'updates': ([0-9.]+), 'env_steps': ([0-9.]+)", out)
    followed = re.search(r"rank 1: took part in (\d+) updates", out)
    assert finished and followed, out[-3000:]
    updates, env_steps = float(finished.group(1)), float(finished.group(2))
    assert env_steps >= 600 and updates >= 0.5 * 600 and int(followed.group(1)) == int(updates)
    assert (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
