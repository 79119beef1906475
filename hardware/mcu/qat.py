"""Quantization-aware fine-tuning, used when the PTQ student fails the error gate.

A copy of the folded float student is trained *through* the int8 grid it will be deployed on: the same
per-dimension input grid, per-channel symmetric weight fake-quantization (scales from the current weights),
and per-tensor activation fake-quantization with the ranges PTQ calibrated (kept fixed, so the final PTQ pass
lands on the grid that was trained against). Rounding uses the straight-through estimator. The target is the
*original* float student's clipped output on visited states, which is exactly the gated error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_rl.hardware.mcu.quantize import QuantConfig, QuantizedModel, quantize
from robot_rl.hardware.mcu.student import FloatModel


@dataclass
class QATConfig:
    """Quantization-aware fine-tuning schedule."""

    steps: int = 2000
    """Adam steps."""
    lr: float = 1e-4
    """Adam learning rate (small: the float student is already good, only the grid error is trained out)."""
    batch_size: int = 256
    """Minibatch of visited states."""
    jitter: float = 0.1
    """Gaussian noise added to every minibatch state, as a fraction of each dimension's std: the visited
    states are few (hundreds), and without it the fine-tuning overfits them and the held-out error grows."""
    seed: int = 0
    """Minibatch sampling and jitter seed."""


def _round_ste(x):
    return x + (x.round() - x).detach()


def quantization_aware_finetune(model: FloatModel, qm: QuantizedModel, states: np.ndarray, cfg: QATConfig,
                                quant: QuantConfig) -> QuantizedModel:
    """Fine-tune a copy of ``model`` against ``qm``'s grid; return its PTQ on the same grid."""
    import torch

    x_all = torch.as_tensor(np.asarray(states, np.float32))  # (N, D) visited states
    center = torch.as_tensor(qm.in_center)
    step = torch.as_tensor(qm.in_step)
    ws = [torch.nn.Parameter(torch.as_tensor(w.copy())) for w in model.weights]
    bs = [torch.nn.Parameter(torch.as_tensor(b.copy())) for b in model.biases]
    grids = []
    for lo, hi in qm.ranges:
        scale = (hi - lo) / 255.0
        grids.append((scale, float(np.clip(np.floor(-128.0 - lo / scale + 0.5), -128, 127))))

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = torch.clamp(_round_ste((x - center) / step), -128, 127)  # (N, D) input grid, in q units
        for i, (w, b) in enumerate(zip(ws, bs)):
            if i == 0:  # layer 0 acts on q: W_e = W diag(s), b_e = b + W c (see quantize.quantize)
                w_e, b_e = w * step[None, :], b + w @ center
            else:
                w_e, b_e = w, b
            s_w = (w_e.detach().abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
            h = h @ (torch.clamp(_round_ste(w_e / s_w), -127, 127) * s_w).T + b_e
            if i < len(ws) - 1:
                h = torch.relu(h)
            scale, zp = grids[i]
            h = (torch.clamp(_round_ste(h / scale) + zp, -128, 127) - zp) * scale
        return h.clamp(-1.0, 1.0)

    opt = torch.optim.Adam([*ws, *bs], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    noise_std = cfg.jitter * x_all.std(dim=0)  # (D,)
    reference = torch.nn.ModuleList()  # the original float student in torch, to label jittered states
    for w, b in zip(model.weights, model.biases):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data, lin.bias.data = torch.as_tensor(w.copy()), torch.as_tensor(b.copy())
        reference.append(lin.requires_grad_(False))

    def target(x: torch.Tensor) -> torch.Tensor:
        for i, lin in enumerate(reference):
            x = lin(x)
            if i < len(reference) - 1:
                x = torch.relu(x)
        return x.clamp(-1.0, 1.0)

    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x_all), (min(cfg.batch_size, len(x_all)),), generator=gen)
        x = x_all[idx] + noise_std * torch.randn(len(idx), x_all.shape[1], generator=gen)
        loss = torch.nn.functional.mse_loss(forward(x), target(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tuned = FloatModel([w.detach().numpy().copy() for w in ws], [b.detach().numpy().copy() for b in bs],
                       model.action_low, model.action_high)
    return quantize(tuned, states, quant, ranges=qm.ranges, input_grid=(qm.in_center, qm.in_step))
