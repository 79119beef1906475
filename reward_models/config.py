"""Typed configs of the reward models (hydra group ``reward``) and of reward-model training.

``reward=none`` (the default) keeps the environment's reward. ``reward=prm`` labels every sampled transition
with a trained progress reward model (:mod:`robot_rl.reward_models.progress`), ``reward=classifier`` with a
HIL-SERL-style success classifier (:mod:`robot_rl.reward_models.classifier`). Light: no torch import here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robot_rl.config import ConfigNode, RewardConfig, store


@dataclass
class LearnedRewardConfig(RewardConfig):
    """How the learner turns a trained reward model into the reward it trains on (labelled at sample time)."""

    name: str = "prm"
    checkpoint: str = ""
    """Reward-model checkpoint file written by ``robot-rl reward train`` (required)."""
    task: str = ""
    """Task text the reward is computed for; empty = the task the model was trained on (its first task)."""
    base: str = "env"
    """Sparse part of the reward: ``env`` (the reward the env/robot recorded), ``done`` (1 when the model's
    done/success probability of ``next_obs`` reaches ``done_threshold``), or ``zero``."""
    done_threshold: float = 0.5
    """Probability above which the done head (or the classifier) calls a state a success."""
    shaping: str = "potential"
    """``potential``: r + lam * (gamma * Phi(s') * (1 - terminated) - Phi(s)), which leaves the optimal policy
    unchanged (gamma is ``algo.gamma``; Phi(terminal) = 0; truncation still bootstraps). ``naive_delta``:
    r + lam * (Phi(s') - Phi(s)), NOT policy-invariant (the "semantic trap"; for comparisons only).
    ``none``: no dense term (only ``base``)."""
    scale: float = 1.0
    """lambda: weight of the dense shaping term."""
    device: str = "auto"
    """torch device of the reward model on the learner (``auto``: the learner's device)."""
    train_steps: int = 600
    """With ``checkpoint`` empty: train a model on the learner's demos for this many steps first (cached as
    ``run_dir/reward_<name>.pt``)."""
    views: tuple[str, ...] = ()
    """With ``checkpoint`` empty: the observation keys that model reads (empty = every key of the demos).
    ``[images/front,images/wrist]`` is the real-robot setting: cameras only, no privileged cube pose, also
    when the policy reads ``state`` (``env.obs=state+pixels policy.obs_keys=[state]``). Images are read at
    the demos' resolution."""
    # --- remedies (issue 16): each one a switch, all off by default so old runs reproduce ---
    success_terminal_potential: bool = False
    """Success-gated terminal (Robo-Dopamine): a terminated transition whose base reward is > 0 (a success)
    gets ``Phi(s') = 1`` instead of 0, so the last step keeps ``r + lam * (gamma - Phi(s))`` (about +1) rather
    than ``r - lam * Phi(s)`` (about 0 when the model rates the pre-success state ~1, which cancels the
    success reward). Still policy-invariant: every success terminal has the same potential."""
    phi_cap: float = 1.0
    """Clip Phi to [0, phi_cap] for states the model does not also call done (P(done) < done_threshold):
    no unfinished state may look fully finished. 1.0 = off."""
    scale_final: float = -1.0
    """Conservative shaping schedule: lam goes linearly from ``scale`` to ``scale_final`` over
    ``scale_anneal_steps`` online env steps (the learner ends on the plain base reward with 0). < 0 = off."""
    scale_anneal_steps: int = 4000
    """Online env steps of the ``scale_final`` schedule."""
    refresh_every_episodes: int = 0
    """Refresh the reward model on online episodes labelled by success (the env's success reward, or the
    operator's label through HIL): every this many finished online episodes, continue training the model for
    ``refresh_steps`` on the demos + the last ``refresh_keep`` online episodes (successes get progress labels,
    failures "never done"), on the labelling thread, and label with it from then on. 0 = off."""
    refresh_steps: int = 200
    """Gradient steps of one refresh."""
    refresh_keep: int = 60
    """Online episodes kept for refreshing (the newest)."""
    # --- trust tools ---
    monitor: bool = True
    """Run the reward-hacking monitor on finished online episodes (learned progress vs success labels) and the
    probe-set drift check; alarms are logged as warnings and served by ``labeller.alarms()``."""
    hack_progress: float = 0.8
    """A failed episode whose final learned progress is at least this is counted as hacked."""
    hack_window: int = 20
    """Running window (episodes) of the hacking rate and of the progress-vs-success trend alarm."""
    max_hack_rate: float = 0.3
    """Alarm when more than this fraction of the window's episodes is hacked."""
    probe_size: int = 256
    """Demo observations kept as the fixed probe set of the drift check (first labelled batch)."""
    max_probe_drift: float = 0.1
    """Alarm when the mean |Phi - Phi at start| on the probe set exceeds this (e.g. after ``load``)."""


@dataclass
class ProgressModelConfig(ConfigNode):
    """Architecture of the progress reward model (saved inside its checkpoint)."""

    views: tuple[str, ...] = ()
    """Observation keys the model reads (``images/<cam>`` through a CNN, ``state`` through an MLP); empty =
    every key of the training episodes (multi-view fusion of all cameras + proprioception)."""
    image_size: int = 64
    """Images are resized (area interpolation) to this square size before the CNN."""
    channels: tuple[int, ...] = (16, 32, 64, 64)
    """CNN channels; each conv halves the resolution."""
    feature_dim: int = 128
    """Per-frame feature size after multi-view fusion."""
    hidden_dim: int = 256
    """Width of the heads' MLPs."""
    text_dim: int = 384
    """Sentence-embedding size (all-MiniLM-L6-v2: 384)."""


@dataclass
class RewardTrainConfig(ConfigNode):
    """``robot-rl reward train``: data, labels, negatives and optimisation of the progress model."""

    model: ProgressModelConfig = field(default_factory=ProgressModelConfig)
    """Architecture."""
    kind: str = "prm"
    """``prm`` (progress + delta + done heads) or ``classifier`` (success classifier baseline)."""
    steps: int = 1500
    """Gradient steps."""
    episodes_per_batch: int = 8
    """Episodes drawn per step; each contributes ``frames_per_episode`` frames and all their ordered pairs."""
    frames_per_episode: int = 8
    """Frames drawn per episode (frame 0, the last frame and random others): k frames give k*k pairs."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    mismatch_prob: float = 0.2
    """Probability an episode group is shown with another task's text (labels: no progress, not done)."""
    failure_prob: float = 0.25
    """Probability an episode group is drawn from the failed episodes (when there are any)."""
    augment_shift: int = 2
    """Random-shift augmentation of images (pixels of padding before a random crop); 0 = off."""
    done_pos_weight: float = 10.0
    """Weight of done=1 frames in the done head's BCE (one success frame per episode)."""
    distractor_tasks: tuple[str, ...] = (
        "open the top drawer", "push the green button", "stack the blue block on the yellow block",
        "pour water into the cup", "wipe the table with the sponge", "close the laptop lid")
    """Other tasks' texts used as mismatched-text negatives."""
    seed: int = 0
    """Torch/numpy seed."""
    device: str = "cpu"
    """Training device (``auto`` picks CUDA when present)."""
    threads: int = 0
    """``robot-rl reward train``: torch CPU threads (0 = torch's default; 1 is much faster on a busy machine)."""


store("reward", "none", RewardConfig)
store("reward", "prm", LearnedRewardConfig)
store("reward", "classifier", LearnedRewardConfig(name="classifier", shaping="none", base="done"))
