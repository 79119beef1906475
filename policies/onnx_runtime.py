"""The actor's policy inference through ONNX Runtime (``actor.inference=onnxruntime``).

Why: a robot's actor runs the policy once per control tick (10 Hz), and between ticks its thread sleeps. PyTorch's
eager dispatch is a few hundred small C++/Python calls per forward pass; after 100 ms of sleep, with a safety node,
camera drivers and a learner sharing the cores, their code and data are out of the caches and one inference costs
2-4x its back-to-back time (README, ``benchmarks/ros2_loop.py``). ONNX Runtime runs the same graph as one call into
pre-planned kernels. The PyTorch module stays the source of truth: it is exported once, and each set of weights
the learner publishes becomes a new session over the same graph, its weights handed in as the session's
initializers (``SessionOptions.add_initializer``), so ONNX Runtime pre-packs them as constants (feeding them
with every run instead doubled the inference time after an idle period here). A new session costs ~12 ms; the
actor swaps weights in the slack after a command is out (``RosRobotEnv.slack_tasks``), not before an inference.

Only stateless, single-step policies export (``Policy.onnx_exportable``): a chunked or recurrent policy keeps
per-episode state in Python, and the discrete gripper's epsilon draw has no ONNX operator; they are refused with a
clear error (``auto`` runs them in torch) instead of acting differently from PyTorch.
Stochastic acting runs the policy's own sampling inside the graph (``RandomNormalLike`` / ``RandomUniformLike``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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
    dynamic, dtypes of its spec), output ``action`` ``(N, A)``; weights as initializers named
    ``policy.<state_dict name>``. Raises for a policy that cannot run outside PyTorch (``onnx_exportable``)."""
    if not getattr(policy, "onnx_exportable", False):
        raise ValueError(f"{type(policy).__name__} cannot run in ONNX Runtime (onnx_exportable is false: per-episode "
                         "state such as action chunks, or an operator ONNX lacks); use actor.inference=torch")
    path = Path(path)
    keys = list(policy.obs_spec.keys())
    fields = policy.obs_spec.fields
    example = tuple(torch.zeros((1, *fields[k].shape), dtype=getattr(torch, fields[k].dtype)) for k in keys)
    was_training = policy.training
    policy.eval()
    try:
        # do_constant_folding=False keeps every weight a named initializer (folding would rename the transposed
        # ones), so new weights can replace them by name; ONNX Runtime folds and pre-packs at session creation.
        torch.onnx.export(_ActGraph(policy, keys, deterministic), example, str(path), input_names=keys,
                          output_names=["action"], dynamic_axes={**{k: {0: "batch"} for k in keys},
                                                                 "action": {0: "batch"}},
                          opset_version=17, dynamo=False, do_constant_folding=False)
    finally:
        policy.train(was_training)
    return path


def _initializer_names(path: Path) -> list[str]:
    """Names of the graph's initializers that are the policy's tensors (``policy.<state_dict name>``)."""
    import onnx

    return [init.name for init in onnx.load(str(path), load_external_data=False).graph.initializer
            if init.name.startswith(_PREFIX)]


class OnnxRuntimePolicy:
    """Acts like ``policy`` (``reset``, ``act``, ``load_state_dict``, ``eval``) with ONNX Runtime doing the
    forward passes. ``threads``: ONNX Runtime's intra-op threads (1 on a robot PC, where the cores belong to the
    safety node and the drivers)."""

    def __init__(self, policy: Any, threads: int = 1, directory: str | Path | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # an optional dependency: say how to get it
            raise ImportError("actor.inference=onnxruntime needs onnxruntime: pip install 'robot_rl[onnx]'") from e
        self._ort = ort
        self.policy = policy
        self.keys = list(policy.obs_spec.keys())
        self.threads = max(1, int(threads))
        tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="robot_rl_onnx_")
        out = Path(directory if directory is not None else tmp.name)
        self._graphs: dict[bool, bytes] = {}  # deterministic? -> the serialised graph (exported once)
        self._names: dict[bool, list[str]] = {}  # its initializer names, "policy.<state_dict name>"
        for deterministic in (True, False):
            path = export_onnx(policy, out / f"policy_{'act' if deterministic else 'explore'}.onnx",
                               deterministic=deterministic)
            self._graphs[deterministic] = path.read_bytes()
            self._names[deterministic] = _initializer_names(path)
        if tmp is not None:
            tmp.cleanup()
        self._sessions: dict[bool, Any] = {}  # built on first use, rebuilt with each set of weights after that
        self._values: dict[bool, list[Any]] = {}  # the OrtValues a session was built on (it does not copy them)
        self._outputs = ["action"]

    # ------------------------------------------------------------------------------------------- weights
    def _build(self, deterministic: bool) -> Any:
        """A session over the exported graph with the PyTorch module's current weights as its initializers."""
        state = {**dict(self.policy.named_buffers()), **dict(self.policy.named_parameters())}  # non-persistent too
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = self.threads
        values = []
        for name in self._names[deterministic]:
            key = name.removeprefix(_PREFIX)
            if key not in state:  # the graph reads a tensor the module no longer has: never act with stale values
                raise RuntimeError(f"the exported policy reads {name}, which the policy no longer has")
            value = self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(state[key].detach().cpu().numpy()))
            options.add_initializer(name, value)
            values.append(value)
        session = self._ort.InferenceSession(self._graphs[deterministic], options,
                                             providers=["CPUExecutionProvider"])
        self._sessions[deterministic], self._values[deterministic] = session, values
        return session

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> Any:
        """New weights (the learner's): into the PyTorch module (names and shapes checked there), then a new
        session for each way of acting used so far (the others are built when first asked for)."""
        result = self.policy.load_state_dict(state, strict=strict)
        for deterministic in list(self._sessions):
            self._build(deterministic)
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
        deterministic = bool(deterministic)
        session = self._sessions.get(deterministic) or self._build(deterministic)
        feed = {}
        for key in self.keys:
            value = np.ascontiguousarray(obs[key], dtype=self.policy.obs_spec.fields[key].dtype)
            feed[key] = value if batched else value[None]
        action = session.run(self._outputs, feed)[0].astype(np.float32, copy=False)
        return action if batched else action[0]

    def __getattr__(self, name: str) -> Any:  # obs_spec, action_spec, chunk_size, ... of the PyTorch policy
        if name == "policy":
            raise AttributeError(name)
        return getattr(self.policy, name)
