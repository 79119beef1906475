"""FastAdam takes exactly the steps ``torch.optim.Adam(fused=True).step()`` takes, through learning-rate changes,
two param groups and a state reload, and leaves hooked optimizers (data-parallel all-reduce) to torch."""
from __future__ import annotations

import copy

import pytest
import torch

from robot_rl.algorithms.fast_adam import FastAdam, make_adam

pytestmark = pytest.mark.usefixtures("single_thread")


def make_params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(3, 5, 7), (3, 1, 7), (4,), ()]]


def set_grads(params: list[torch.nn.Parameter], step: int) -> None:
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 10.0 ** (step % 3 - 2)


def test_fast_adam_matches_torch_adam_step_for_step() -> None:
    ours, ref = make_params(0), make_params(0)
    groups = lambda ps: [{"params": ps[:3], "lr": 1e-2}, {"params": ps[3:], "lr": 3e-3}]  # noqa: E731
    fast, torch_opt = FastAdam(make_adam(groups(ours), 1e-2)), make_adam(groups(ref), 1e-2)
    for step in range(6):
        if step == 3:  # a scheduler-style learning-rate change is honoured
            for opt in (fast.optimizer, torch_opt):
                opt.param_groups[0]["lr"] = 5e-4
        set_grads(ours, step)
        set_grads(ref, step)
        fast.step()
        torch_opt.step()
    for a, b, start in zip(ours, ref, make_params(0)):
        assert torch.equal(a, b)
        assert not torch.equal(a, start)  # it really moved
    for a, b in zip(fast.optimizer.state.values(), torch_opt.state.values()):
        assert torch.equal(a["step"], b["step"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])

    # A reloaded state (new state objects) is picked up, not the stale cached lists.
    saved = copy.deepcopy(torch_opt.state_dict())
    fast.optimizer.load_state_dict(saved)
    with torch.no_grad():
        for a, b in zip(ours, ref):
            a.copy_(b)
    set_grads(ours, 7)
    set_grads(ref, 7)
    fast.step()
    torch_opt.step()
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_hooked_optimizer_steps_through_torch() -> None:
    params = make_params(1)
    fast = FastAdam(make_adam(params, 1e-2))
    calls = []
    fast.optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(1))
    for step in range(3):
        set_grads(params, step)
        fast.step()
    assert len(calls) == 3  # every step ran the hook (e.g. the data-parallel gradient all-reduce)
