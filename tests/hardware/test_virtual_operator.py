"""The virtual operator judges where the arm is going, not each exploration sample: a good but noisy policy keeps
control, a policy heading the wrong way is taken over (the pick-cube twin and its scripted expert)."""
import numpy as np
import pytest

from robot_rl.config import load_config
from robot_rl.hardware.teleop.virtual import VirtualOperator
from robot_rl.registry import ENVS


def _takeover_fraction(policy, episodes: int = 4) -> tuple[float, dict[str, int]]:
    cfg = load_config(["env=panda_pick_cube", "hil=virtual"])
    env = ENVS.make(cfg.env.name, cfg.env, seed=0)
    rng = np.random.default_rng(0)
    operator = VirtualOperator(env, cfg.hil.virtual, env.action_spec, rng)
    expert = env.expert()
    steps = active = 0
    triggers: dict[str, int] = {}
    for episode in range(episodes):
        obs = env.reset(seed=episode)
        operator.reset()
        expert.reset()
        while True:
            proposal = policy(np.asarray(expert.act(obs), np.float32), rng)
            before = operator.takeovers
            command = operator.command(obs, proposal, None)
            if operator.takeovers > before:
                triggers[operator.last_trigger] = triggers.get(operator.last_trigger, 0) + 1
            steps, active = steps + 1, active + int(command.active)
            result = env.step(command.action if command.active else proposal)
            obs = result.obs
            if result.terminated or result.truncated:
                break
    env.close()
    return active / steps, triggers


def test_noisy_good_policy_mostly_keeps_control():
    # the expert plus exploration noise of std 0.3 (a tanh-Gaussian policy early in fine-tuning)
    fraction, triggers = _takeover_fraction(
        lambda expert, rng: np.clip(expert + 0.3 * rng.standard_normal(expert.shape), -1, 1).astype(np.float32))
    assert fraction < 0.25, (fraction, triggers)
    assert triggers.get("disagreement", 0) == 0, triggers


@pytest.mark.parametrize("kind", ["reversed", "random"])
def test_policy_heading_the_wrong_way_is_taken_over(kind):
    def policy(expert, rng):
        if kind == "random":
            return rng.uniform(-1, 1, expert.shape).astype(np.float32)
        out = expert.copy()
        out[:3] = -out[:3]  # moves away from where the expert goes
        return out

    fraction, triggers = _takeover_fraction(policy)
    assert fraction > 0.4 and triggers.get("disagreement", 0) >= 4, (fraction, triggers)
