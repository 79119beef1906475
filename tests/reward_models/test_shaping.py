"""Potential-based shaping leaves optimal policies unchanged; the naive delta walks into the semantic trap."""
import numpy as np
import pytest

from robot_rl.reward_models.shaping import naive_delta, potential_shaping, shape


def solve(P: np.ndarray, R: np.ndarray, terminal: np.ndarray, gamma: float, iters: int = 3000) -> np.ndarray:
    """Exact Q* by value iteration. P, R: (S, A, S); terminal (S,) bool: entering it ends the episode."""
    S, A, _ = P.shape
    V = np.zeros(S)
    for _ in range(iters):
        Q = (P * (R + gamma * np.where(terminal, 0.0, V)[None, None, :])).sum(-1)  # (S, A)
        V_new = Q.max(1)
        if np.abs(V_new - V).max() < 1e-12:
            break
        V = V_new
    return Q


def shaped_rewards(kind: str, R: np.ndarray, phi: np.ndarray, terminal: np.ndarray, gamma: float) -> np.ndarray:
    """Apply the library's shaping to every (s, a, s') of a tabular MDP."""
    S, A, _ = R.shape
    s, _, s2 = np.meshgrid(np.arange(S), np.arange(A), np.arange(S), indexing="ij")
    out = shape(kind, R.ravel(), phi[s.ravel()], phi[s2.ravel()], terminal[s2.ravel()], gamma)
    return out.astype(np.float64).reshape(S, A, S)


@pytest.mark.parametrize("seed", range(20))
def test_potential_shaping_keeps_the_optimal_policy_on_random_mdps(seed):
    rng = np.random.default_rng(seed)
    S, A, gamma = int(rng.integers(4, 9)), int(rng.integers(2, 5)), float(rng.uniform(0.8, 0.98))
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))  # (S, A, S)
    R = rng.normal(size=(S, A, S))
    terminal = np.zeros(S, bool)
    terminal[rng.choice(S, size=int(rng.integers(1, 3)), replace=False)] = True
    phi = rng.uniform(-3, 3, S)  # an arbitrary (badly wrong) potential
    Q = solve(P, R, terminal, gamma)
    Q_shaped = solve(P, shaped_rewards("potential", R, phi, terminal, gamma), terminal, gamma)
    live = ~terminal
    # Ng et al.: Q'(s, a) = Q(s, a) - Phi(s), so the greedy policy is identical.
    np.testing.assert_allclose(Q_shaped[live], Q[live] - phi[live, None], atol=1e-6)
    assert (Q_shaped[live].argmax(1) == Q[live].argmax(1)).all()


def _chain(n: int = 20):
    """States 0..n-1 on a chain, n = goal (terminal, env reward 1), n+1 = H: a dead end the progress model
    over-rates (Phi(H) = 1, e.g. 'gripper up, cube still on the table'). Actions: 0 left, 1 right, 2 side/stay."""
    S, A = n + 2, 3
    goal, H = n, n + 1
    P = np.zeros((S, A, S))
    R = np.zeros((S, A, S))
    for s in range(n):
        P[s, 0, max(s - 1, 0)] = 1
        P[s, 1, s + 1] = 1
        P[s, 2, H if s == 0 else s] = 1
    for a in range(A):
        P[goal, a, goal] = 1  # never reached as a state to act from (terminal)
    P[H, 0, 0] = P[H, 1, H] = P[H, 2, H] = 1  # leave back to 0, or stay
    R[:, :, goal] = 1.0
    terminal = np.zeros(S, bool)
    terminal[goal] = True
    phi = np.concatenate([np.arange(n) / n, [1.0, 1.0]])  # learned progress incl. the hallucinated H
    return P, R, terminal, phi, goal


def _reaches_goal(Q: np.ndarray, P: np.ndarray, goal: int, steps: int = 200) -> bool:
    s = 0
    for _ in range(steps):
        s = int(P[s, Q[s].argmax()].argmax())
        if s == goal:
            return True
    return False


def test_chain_naive_delta_falls_into_the_semantic_trap_potential_does_not():
    P, R, terminal, phi, goal = _chain()
    gamma = 0.9
    assert _reaches_goal(solve(P, R, terminal, gamma), P, goal)  # sparse reward: go for the goal
    Q_pot = solve(P, shaped_rewards("potential", R, phi, terminal, gamma), terminal, gamma)
    assert _reaches_goal(Q_pot, P, goal)
    Q_naive = solve(P, shaped_rewards("naive_delta", R, phi, terminal, gamma), terminal, gamma)
    assert not _reaches_goal(Q_naive, P, goal)  # it parks in the over-rated dead end H forever
    assert Q_naive[0].argmax() == 2


def test_shaped_return_telescopes_and_truncation_bootstraps():
    rng = np.random.default_rng(0)
    gamma, T = 0.95, 12
    phi_path = rng.uniform(0, 1, T + 1)  # Phi(s_0..s_T)
    r = np.zeros(T)
    disc = gamma ** np.arange(T)
    terminated = np.zeros(T, bool)
    terminated[-1] = True
    f_term = potential_shaping(r, phi_path[:-1], phi_path[1:], terminated, gamma)
    assert disc @ f_term == pytest.approx(-phi_path[0], abs=1e-5)  # Phi(terminal) = 0
    f_trunc = potential_shaping(r, phi_path[:-1], phi_path[1:], np.zeros(T, bool), gamma)  # time limit
    assert disc @ f_trunc == pytest.approx(gamma ** T * phi_path[-1] - phi_path[0], abs=1e-5)
    f_naive = naive_delta(r, phi_path[:-1], phi_path[1:])
    assert f_naive.sum() == pytest.approx(phi_path[-1] - phi_path[0], abs=1e-5)  # ignores gamma


def test_shaping_rejects_bad_input():
    one = np.zeros(3)
    with pytest.raises(ValueError, match="NaN"):
        potential_shaping(one, np.array([0.0, np.nan, 0.0]), one, np.zeros(3, bool), 0.9)
    with pytest.raises(ValueError, match="entries"):
        potential_shaping(one, np.zeros(2), one, np.zeros(3, bool), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        potential_shaping(one, one, one, np.zeros(3, bool), 1.5)
    with pytest.raises(ValueError, match="unknown shaping"):
        shape("delta", one, one, one, np.zeros(3, bool), 0.9)
