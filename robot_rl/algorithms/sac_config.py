"""The configs of SAC and RLPD (:mod:`robot_rl.algorithms.sac`): one typed dataclass each, a docstring per field,
registered as the ``algo`` configs ``sac`` and ``rlpd``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from robot_rl.config import AlgoConfig, store


@dataclass
class SACConfig(AlgoConfig):
    name: str = "sac"
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (policy MLP; the encoder is trained by the critic)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critic ensemble and the shared pixel encoder."""
    temperature_lr: float = 3e-4
    """Adam learning rate of ``log_alpha``."""
    tau: float = 0.005
    """Polyak factor of the target critic (and target encoder) update, applied after every critic step."""
    num_critics: int = 2
    """Q-functions in the critic ensemble (2 = clipped double Q; RLPD uses 10)."""
    target_subset_size: int = 2
    """Target critics drawn at random for the min in the TD target (REDQ); ``num_critics`` uses all."""
    critic_hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer widths of every critic."""
    critic_layer_norm: bool = False
    """LayerNorm after each hidden critic layer (RLPD: curbs Q over-estimation on out-of-distribution actions)."""
    critic_updates_per_actor_update: int = 1
    """Critic-only steps per ``update()`` call (the batch is split into this many minibatches): critic UTD."""
    actor_q_reduction: str = "min"
    """How the actor loss reduces the ensemble: ``min`` (classic SAC) or ``mean`` (RLPD/REDQ)."""
    init_temperature: float = 0.1
    """Initial entropy temperature alpha (0.1 as in DrQ; a large alpha slows sparse-reward learning)."""
    target_entropy_per_action_dim: float = -1.0
    """Target entropy = this x action dimension (SAC: -1, RLPD: -0.5)."""
    backup_entropy: bool = False
    """Subtract ``alpha * log_prob(next action)`` in the TD target (soft backup). Off by default, as in
    RLPD/SERL: with sparse success rewards that terminate the episode, the entropy bonus of staying alive
    outweighs the success reward and the agent learns to avoid the goal."""
    critic_warmup_updates: int = 0
    """WSRL-style warm-up: the first N ``update()`` calls train only the critic (actor and alpha frozen)."""
    bc_weight: float = 0.0
    """Weight of a behaviour-cloning term in the actor loss: mean squared error between the deterministic
    action and the recorded action on the batch's demo-buffer rows (demonstrations and human interventions),
    as in HIL-SERL's intervention BC / TD3+BC. Keeps a demo-initialised actor near the demonstrations while
    the critic is still wrong about everything else; 0 turns it off (plain RLPD)."""
    offline_pretrain_updates: int = 0
    """Offline-to-online warm start: updates on demo-buffer batches alone before the first weights go out.
    The critic takes its usual TD steps; the actor is trained by behaviour cloning only (no Q term yet, the
    critic has seen no failures). 0 = start online from the randomly initialised actor."""
    critic: str = "mlp"
    """Critic network: ``mlp`` (the batched MLP ensemble below) or ``simbav2`` (SimbaV2, Lee et al. 2025:
    hyperspherical normalisation of weights and features, ``robot_rl.algorithms.simbav2``; width
    ``critic_hidden_dims[0]``, ``len(critic_hidden_dims) - 1`` residual blocks, at least one)."""
    simbav2_mlp_ratio: int = 4
    """SimbaV2 only: width multiplier of each block's inner layer (the paper uses 4)."""
    value_loss: str = "mse"
    """Critic loss: ``mse`` (regression onto the TD target) or ``hl_gauss`` (HL-Gauss classification over bins,
    "Stop Regressing", Farebrother et al. 2024; ``robot_rl.algorithms.value_heads``)."""
    value_bins: int = 51
    """HL-Gauss: number of bins on ``[value_min, value_max]``."""
    value_sigma: float = 0.0
    """HL-Gauss: std of the Gaussian smoothing the target; 0 = 0.75 bin widths (the paper's recommendation)."""
    value_min: float = -1.0
    """HL-Gauss: lowest representable Q (targets are clipped into the support). 0/1 success rewards: Q in [0, 1]."""
    value_max: float = 1.0
    """HL-Gauss: highest representable Q."""
    n_step: int = 1
    """TD target over up to ``n_step`` consecutive replay steps (n-step returns, as in DrQ-v2 and CQN-AS):
    ``sum_k gamma^k r_{t+k} + gamma^L (1 - terminated) V(s_{t+L})`` with ``L <= n_step`` (shorter where the
    episode ends). The learner then samples executed sequences (``robot_rl.sequence_replay``). On demos the
    success propagates n steps per backup whatever the actor does; on failed online episodes Q falls n times
    faster. The intermediate actions are the behaviour's (no off-policy correction). 1 = one-step TD."""
    td_target_min: float = -math.inf
    """Lower bound of every TD target (``-inf``: none). Returns of rewards in ``[r_min, r_max]`` lie in
    ``[r_min / (1 - gamma), r_max / (1 - gamma)]``, so a target outside that range is pure bootstrapping error;
    for a 0/1 success reward that ends the episode (our twins) every return lies in ``[0, 1]``. Clipping the
    target there stops extrapolated next-state values from pushing Q beyond what any policy can earn (the
    value-bound argument of Cal-QL's floor, applied as a box)."""
    td_target_max: float = math.inf
    """Upper bound of every TD target (``inf``: none); ``td_target_max=1`` for a 0/1 success reward."""
    bf16_matmuls: bool = False
    """Run the loss computations under bfloat16 autocast (fp32 weights, optimizer and losses; matmul
    inputs in bf16). About 1.8x faster matmuls on CPUs with AVX512-BF16/AMX and on GPUs; off by default
    because it lowers the precision of Q-values."""
    handwritten_update: bool = True
    """Take the hand-written update (forward and backward without autograd, ``sac_handwritten.py``; the same
    maths, ~2x faster on CPU) where the configuration allows it (state-only MLP SAC, UTD 1, ...); false forces
    autograd. Other configurations always use autograd (``SAC.handwritten_fallback`` says why)."""


@dataclass
class RLPDConfig(SACConfig):
    """RLPD defaults (Ball et al. 2023). Pair with ``replay.demo_ratio=0.5`` (symmetric sampling)."""

    name: str = "rlpd"
    num_critics: int = 10
    """Large LayerNorm ensemble (RLPD: 10)."""
    target_subset_size: int = 2
    """REDQ-style min over 2 random target critics."""
    critic_layer_norm: bool = True
    """LayerNorm in the critics: RLPD's key ingredient against over-estimation on offline data."""
    critic_updates_per_actor_update: int = 20
    """RLPD's UTD ratio of 20 critic steps per actor step."""
    actor_q_reduction: str = "mean"
    """The actor maximises the ensemble mean (REDQ/RLPD)."""
    init_temperature: float = 1.0
    """RLPD's initial temperature."""
    target_entropy_per_action_dim: float = -0.5
    """RLPD's target entropy of -A/2."""
    backup_entropy: bool = False
    """RLPD drops the entropy term from the TD target."""


store("algo", "sac", SACConfig)
store("algo", "rlpd", RLPDConfig)
