"""The actor's policy inference through ONNX Runtime (``actor.inference=onnxruntime``).

Why: a robot's actor runs the policy once per control tick (10 Hz), and between ticks its thread sleeps. PyTorch's
eager dispatch is a few hundred small C++/Python calls per forward pass; after 100 ms of sleep, with a safety node,
camera drivers and a learner sharing the cores, their code and data are out of the caches and one inference costs
2-4x its back-to-back time (README, ``benchmarks/ros2_loop.py``). ONNX Runtime runs the same graph as one call into
pre-planned kernels. The PyTorch module stays the source of truth: it is exported once, and the exported graph
reads its weights as *overridable initializers*, so each set of weights the learner publishes is bound into the
running session (no re-export, no new session) and the graph is never stale.

Only stateless, single-step policies export (``Policy.onnx_exportable``): a chunked or recurrent policy keeps
per-episode state in Python, and is refused with a clear error instead of acting differently from PyTorch.
Stochastic acting runs the policy's own sampling inside the graph (``RandomNormalLike`` / ``RandomUniformLike``).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger("robot_rl.policies.onnx_runtime")

_PREFIX = "policy."  # the export wrapper's attribute name: graph initializer "policy.<name>" is state_dict "<name>"


class _ActGraph(nn.Module):
    """``forward_act`` with the observation keys as positional inputs (ONNX inputs are positional)."""

    def __init__(self, policy: nn.Module, keys: list[str], deterministic: bool) -> None:
        super().__init__()
        self.policy, self.keys, self.deterministic = policy, keys, deterministic

    def forward(self, *values: torch.Tensor) -> torch.Tensor:
        return self.policy.forward_act(dict(zip(self.keys, values)), self.deterministic)


def export_onnx(policy: Any, path: str | Path, *, deterministic: bool = True) -> Path:
    """Write ``policy.forward_act`` as an ONNX graph: inputs named by the policy's observation keys (batch dim
    dynamic, dtypes of its spec), output ``action`` ``(N, A)``; weights as overridable initializers named
    ``policy.<state_dict name>``. Raises for a policy that cannot run outside PyTorch (``onnx_exportable``)."""
    if not getattr(policy, "onnx_exportable", False):
        raise ValueError(f"{type(policy).__name__} cannot be exported to ONNX: it keeps per-episode state "
                         "(action chunks, recurrence) in Python; use actor.inference=torch")
    path = Path(path)
    keys = list(policy.obs_spec.keys())
    example = tuple(torch.zeros((1, *policy.obs_spec.fields[k].shape), dtype=getattr(torch, policy.obs_spec.fields[k].dtype))
                    for k in keys)
    was_training = policy.training
    policy.eval()
    try:
        # do_constant_folding=False keeps every weight a named initializer (folding would rename the transposed
        # ones); ONNX Runtime still plans the kernels once, at session creation.
        torch.onnx.export(_ActGraph(policy, keys, deterministic), example, str(path), input_names=keys,
                          output_names=["action"], dynamic_axes={**{k: {0: "batch"} for k in keys},
                                                                 "action": {0: "batch"}},
                          opset_version=17, dynamo=False, do_constant_folding=False,
                          keep_initializers_as_inputs=True)
    finally:
        policy.train(was_training)
    return path


class OnnxRuntimePolicy:
    """Acts like ``policy`` (``reset``, ``act``, ``load_state_dict``, ``eval``) with ONNX Runtime doing the
    forward passes. ``threads``: ONNX Runtime's intra-op threads (1 on a robot PC, where the cores belong to the
    safety node and the drivers)."""

    def __init__(self, policy: Any, threads: int = 1, directory: str | Path | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # an optional dependency: say how to get it
            raise ImportError("actor.inference=onnxruntime needs onnxruntime: pip install 'robot_rl[onnx]'") from e
        self.policy = policy
        self.keys = list(policy.obs_spec.keys())
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="robot_rl_onnx_")
        out = Path(directory if directory is not None else self._tmp.name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = max(1, int(threads))
        options.log_severity_level = 3  # initializers that are graph inputs are intended here: no warning per one
        self.sessions = {}
        for deterministic in (True, False):
            graph = export_onnx(policy, out / f"policy_{'act' if deterministic else 'explore'}.onnx",
                                deterministic=deterministic)
            self.sessions[deterministic] = ort.InferenceSession(str(graph), options,
                                                                providers=["CPUExecutionProvider"])
        self._outputs = ["action"]
        self._weights: dict[str, dict[str, np.ndarray]] = {}  # per session: graph initializer name -> array
        self._bind_weights()

    # ------------------------------------------------------------------------------------------- weights
    def _bind_weights(self) -> None:
        """The PyTorch module's current weights as each session's initializer feeds (fed with every run)."""
        state = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in self.policy.state_dict().items()}
        for deterministic, session in self.sessions.items():
            names = [i.name for i in session.get_overridable_initializers()]
            missing = [n for n in names if n.removeprefix(_PREFIX) not in state]
            if missing:  # the graph reads a tensor the module no longer has: never act with stale values
                raise RuntimeError(f"the exported policy reads {missing}, absent from the policy's state_dict")
            self._weights[deterministic] = {n: state[n.removeprefix(_PREFIX)] for n in names}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> Any:
        """New weights (the learner's): into the PyTorch module (names and shapes checked there), then bound into
        both sessions."""
        result = self.policy.load_state_dict(state, strict=strict)
        self._bind_weights()
        return result

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.policy.state_dict()

    # ------------------------------------------------------------------------------------------- acting
    def eval(self) -> "OnnxRuntimePolicy":
        self.policy.eval()
        return self

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs: dict[str, np.ndarray], *, deterministic: bool = False) -> np.ndarray:
        """As :meth:`robot_rl.policies.base.Policy.act`: numpy obs, unbatched or batched ``(N, …)`` -> float32
        action ``(A,)`` or ``(N, A)``."""
        first = obs[self.keys[0]]
        batched = first.ndim == len(self.policy.obs_spec.fields[self.keys[0]].shape) + 1
        feed = dict(self._weights[bool(deterministic)])
        for key in self.keys:
            value = np.ascontiguousarray(obs[key], dtype=self.policy.obs_spec.fields[key].dtype)
            feed[key] = value if batched else value[None]
        action = self.sessions[bool(deterministic)].run(self._outputs, feed)[0].astype(np.float32, copy=False)
        return action if batched else action[0]

    def __getattr__(self, name: str) -> Any:  # obs_spec, action_spec, chunk_size, ... of the PyTorch policy
        if name == "policy":
            raise AttributeError(name)
        return getattr(self.policy, name)
