"""The virtual operator judges where the task is going, not each exploration sample or the route: a good but noisy
policy keeps control, so does one that takes another route than the expert, and a policy heading the wrong way is
taken over (the pick-cube twin and its scripted expert)."""
import numpy as np
import pytest

from robot_rl.config import load_config
from robot_rl.hardware.teleop.virtual import VirtualOperator
from robot_rl.registry import ENVS

STATE_TCP, STATE_CUBE = slice(0, 3), slice(21, 24)  # PandaPickCube state layout (sim/panda_pick_cube.py)


def _run(policy, episodes: int = 4, overrides=()) -> tuple[float, dict[str, int], list[int]]:
    """(fraction of steps the operator drove, takeovers per trigger, step of each episode's first takeover)."""
    cfg = load_config(["env=panda_pick_cube", "hil=virtual", *overrides])
    env = ENVS.make(cfg.env.name, cfg.env, seed=0)
    rng = np.random.default_rng(0)
    operator = VirtualOperator(env, cfg.hil.virtual, env.action_spec, rng)
    expert = env.expert()
    steps = active = 0
    triggers: dict[str, int] = {}
    first: list[int] = []
    for episode in range(episodes):
        obs = env.reset(seed=episode)
        operator.reset()
        expert.reset()
        t, first_takeover = 0, -1
        while True:
            proposal = policy(obs, np.asarray(expert.act(obs), np.float32), rng)
            before = operator.takeovers
            command = operator.command(obs, proposal, None)
            if operator.takeovers > before:
                triggers[operator.last_trigger] = triggers.get(operator.last_trigger, 0) + 1
                first_takeover = t if first_takeover < 0 else first_takeover
            steps, active, t = steps + 1, active + int(command.active), t + 1
            result = env.step(command.action if command.active else proposal)
            obs = result.obs
            if result.terminated or result.truncated:
                break
        first.append(first_takeover if first_takeover >= 0 else t)
    env.close()
    return active / steps, triggers, first


def test_noisy_good_policy_keeps_control():
    # the expert plus exploration noise of std 0.15 per action dim (about 4 mm per step: more than that, and the
    # noise alone keeps the hand from lining up over the cube within the expert's 6 mm, which is no progress)
    fraction, triggers, _ = _run(
        lambda obs, expert, rng: np.clip(expert + 0.15 * rng.standard_normal(expert.shape), -1, 1).astype(np.float32))
    assert fraction < 0.1, (fraction, triggers)


def test_another_route_to_the_cube_is_left_alone():
    """Straight at the cube (no hover above it first, which the expert insists on): the action-disagreement judge
    takes over at once, the progress judge only once the policy sits at the cube and never closes the gripper."""
    def straight_at_the_cube(obs, expert, rng):
        state = obs["state"]
        return np.array([*np.clip(0.4 * (state[STATE_CUBE] - state[STATE_TCP]) / 0.025, -1, 1), -1.0], np.float32)

    _, _, first_progress = _run(straight_at_the_cube)
    _, _, first_disagreement = _run(straight_at_the_cube, overrides=["hil.virtual.disagreement=0.9"])
    assert min(first_progress) >= 10 and max(first_disagreement) < min(first_progress), \
        (first_progress, first_disagreement)


@pytest.mark.parametrize("kind", ["reversed", "random"])
def test_policy_heading_the_wrong_way_is_taken_over(kind):
    def policy(obs, expert, rng):
        if kind == "random":
            return rng.uniform(-1, 1, expert.shape).astype(np.float32)
        out = expert.copy()
        out[:3] = -out[:3]  # moves away from where the expert goes
        return out

    fraction, triggers, first = _run(policy)
    assert fraction > 0.4 and triggers.get("no_progress", 0) >= 4 and max(first) <= 16, (fraction, triggers, first)
