"""Data-parallel learner on ``torch.distributed``: several GPUs (or CPU processes) share every update.

Launch with torchrun (one process per GPU; rank 0 is the ordinary learner, the others only compute)::

    torchrun --standalone --nproc_per_node=4 -m robot_rl.distributed env=panda_pick_cube algo=rlpd ...

Design:

- **Replay lives on rank 0, batches are scattered.** Rank 0 is the :class:`robot_rl.learner.Learner`: it owns the
  transport (exactly-once ingest, acks, commits), replay, checkpoints, evaluation and weight publishing, so
  none of that changes with the number of GPUs. Per update it samples the *global* batch (``algo.batch_size``
  stays the global batch, so results do not depend on the GPU count) and deals its rows out to the ranks
  (:func:`rank_rows`): within every critic minibatch (rows ``i::k``, see SAC) consecutive rows go to
  consecutive ranks. The sampler stacks demo rows first; a contiguous block per rank gave rank 0 every demo
  row, and the masked-mean BC and grasp-margin terms (means over each rank's demo rows, then averaged over
  ranks) got half their weight with 2 ranks. Dealt out, every rank holds its share of demo rows in every
  minibatch, and each rank's local minibatch ``i`` is a share of the global minibatch ``i``. Sharding replay instead would need one transport endpoint and one checkpoint per rank, for a
  saving of one batch copy per update (a few MB over NVLink/PCIe, far below an update's compute).
- **Gradients are averaged at each optimizer step** (a pre-step hook does one flat all-reduce per optimizer),
  which is DDP's arithmetic: every rank's loss is a mean over its equal share of rows, so the averaged
  gradient is the full-batch gradient. We do not wrap modules in ``DistributedDataParallel``: SAC has three
  optimizers, target networks and losses that call the critic's weights functionally (detached for the
  actor), which DDP's forward-hook reducer cannot follow. The price is no overlap of communication with the
  backward pass.
- **The same random numbers as one process.** Rank 0 sends its generator state with every batch, and
  random draws over batch rows (``torch.randn_like/rand_like/randint_like`` of a batch-shaped tensor: the
  policy's sampling noise; ``torch.rand/randn/randint`` of a batch-shaped size: the pixel shift, the grasp
  critic's epsilon-greedy) are drawn for the global minibatch on every rank and sliced to the rank's rows
  (:class:`ShardedNoise`). So N ranks compute what one process computes
  on the whole batch, up to float summation order (``tests/test_distributed_ddp.py``), and replicas never
  drift apart.
- Only rank 0 publishes weights: the followers' parameters are identical copies.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from robot_rl.algorithms.base import Algorithm
from robot_rl.types import Batch

log = logging.getLogger("robot_rl.distributed")

_TENSOR_FIELDS = ("action", "reward", "terminated", "truncated", "intervened", "policy_action", "episode_id", "step")
_LIKE_RANDOM = {torch.randn_like, torch.rand_like, torch.randint_like}
_SIZED_RANDOM = {torch.rand, torch.randn, torch.randint}


def rank_rows(value: torch.Tensor, world: int, minibatches: int) -> list[torch.Tensor]:
    """Split a global batch field ``(N, ...)`` into ``world`` local fields ``(N / world, ...)``.

    Global row ``g`` belongs to critic minibatch ``i = g % k`` at position ``p = g // k`` (SAC's strided
    minibatches, ``k = minibatches``); it goes to rank ``p % world`` as its local row ``(p // world) * k + i``.
    So local minibatch ``i`` (local rows ``i::k``) is rows ``p = r, r + world, ...`` of global minibatch ``i``,
    which is how :class:`ShardedNoise` slices the global draws."""
    n = value.shape[0]
    grouped = value.reshape(n // (world * minibatches), world, minibatches, *value.shape[1:])  # (J, W, k, ...)
    return [grouped[:, r].reshape(n // world, *value.shape[1:]) for r in range(world)]


def _size_argument(func: Any, args: tuple, kwargs: dict) -> tuple[str | int, tuple[int, ...]] | None:
    """Where the ``size`` of a ``torch.rand/randn/randint`` call is (kwarg name or position) and its value."""
    if "size" in kwargs:
        return "size", tuple(kwargs["size"])
    if func is torch.randint:  # randint(high, size) or randint(low, high, size)
        for i, a in enumerate(args):
            if isinstance(a, (tuple, list, torch.Size)):
                return i, tuple(a)
        return None
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return 0, tuple(args[0])
    if args and all(isinstance(a, int) for a in args):
        return -1, tuple(args)  # rand(n, d): the whole positional tuple is the size
    return None


class ShardedNoise(TorchFunctionMode):
    """Inside an update, a random draw over batch rows returns this rank's rows of what one process would draw
    for the global minibatch. A draw is over batch rows when its leading dimension ``n`` is one of
    ``batch_rows`` (the local batch and local critic minibatch sizes): ``torch.randn_like/rand_like/
    randint_like(x)`` of ``x (n, ...)`` and ``torch.rand/randn/randint`` of size ``(n, ...)``. It draws
    ``(world * n, ...)`` numbers and returns rows ``rank::world`` (see :func:`rank_rows`). Every rank consumes
    the generator identically. Other draws (REDQ's ``randperm`` of critic members) are the same on all ranks."""

    def __init__(self, rank: int, world: int, batch_rows: set[int]) -> None:
        super().__init__()
        self.rank, self.world, self.batch_rows = rank, world, batch_rows

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _LIKE_RANDOM and args and isinstance(args[0], torch.Tensor) and args[0].ndim >= 1 \
                and args[0].shape[0] in self.batch_rows:
            x = args[0]
            full = x.new_empty((self.world * x.shape[0], *x.shape[1:]))  # (world * n, ...)
            return func(full, *args[1:], **kwargs)[self.rank::self.world]
        if func in _SIZED_RANDOM:
            where = _size_argument(func, args, kwargs)
            if where is not None and where[1] and where[1][0] in self.batch_rows:
                pos, size = where
                full = (self.world * size[0], *size[1:])
                if pos == "size":
                    kwargs = {**kwargs, "size": full}
                elif pos == -1:
                    args = full
                else:
                    args = (*args[:pos], full, *args[pos + 1:])
                return func(*args, **kwargs)[self.rank::self.world]
        return func(*args, **kwargs)


def _to_cpu(obj: Any) -> Any:
    """Tensors -> CPU copies, recursively (broadcast states unpickle on the right device on every rank)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _batch_fields(batch: Batch) -> dict[str, torch.Tensor]:
    """Flat name -> tensor ``(N, ...)`` view of a batch (obs keys prefixed); ``actor_id`` is not sent."""
    fields = {f"obs/{k}": v for k, v in batch.obs.items()}
    fields.update({f"next_obs/{k}": v for k, v in batch.next_obs.items()})
    fields.update({name: getattr(batch, name) for name in _TENSOR_FIELDS})
    if batch.from_demo is not None:
        fields["from_demo"] = batch.from_demo
    return fields


def _batch_from_fields(fields: dict[str, torch.Tensor]) -> Batch:
    return Batch(obs={k[4:]: v for k, v in fields.items() if k.startswith("obs/")},
                 next_obs={k[9:]: v for k, v in fields.items() if k.startswith("next_obs/")},
                 **{name: fields[name] for name in _TENSOR_FIELDS}, from_demo=fields.get("from_demo"))


def _rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class DataParallelAlgorithm(Algorithm):
    """Wraps an algorithm (SAC/RLPD) so that every :meth:`update` is shared by all ranks of the process group.

    Rank ``src`` calls :meth:`update` with the global batch (and everything else the learner calls); the other
    ranks sit in :meth:`follow` until :meth:`stop`. Construction is collective: all ranks wrap at once, and
    rank ``src``'s full state (networks, targets, optimizers, counters) is broadcast to the others.
    """

    def __init__(self, algo: Algorithm, src: int = 0, group: Any = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("DataParallelAlgorithm needs torch.distributed.init_process_group() first")
        self.inner, self.src, self.group = algo, src, group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.cfg, self.device = algo.cfg, algo.device
        self.policy = getattr(algo, "policy", None)
        self._critic_steps = int(getattr(algo.cfg, "critic_updates_per_actor_update", 1))
        self._in_update = False
        self._optimizers = [v for v in vars(algo).values() if isinstance(v, torch.optim.Optimizer)]
        if not self._optimizers:
            raise TypeError(f"{type(algo).__name__} has no torch optimizer attributes to synchronise")
        for optimizer in self._optimizers:
            optimizer.register_step_pre_hook(self._average_gradients)
        self._sync_state()

    # ------------------------------------------------------------------ collectives
    def _broadcast(self, obj: Any) -> Any:
        box = [obj if self.rank == self.src else None]
        dist.broadcast_object_list(box, src=self.src, group=self.group,
                                   device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def _average_gradients(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """Optimizer pre-step hook: replace every gradient by its mean over ranks (one flat all-reduce)."""
        if not self._in_update:
            raise RuntimeError("an optimizer stepped outside a data-parallel update: the replicas would diverge")
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # (total parameters,)
        dist.all_reduce(flat, group=self.group)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _sync_state(self) -> None:
        state = self._broadcast(_to_cpu(self.inner.state_dict()) if self.rank == self.src else None)
        if self.rank != self.src:
            self.inner.load_state_dict(state)

    def _local_update(self, local: Batch, bc_only: bool, rng: torch.Tensor) -> dict[str, float]:
        _set_rng_state(rng, self.device)
        self._in_update = True
        rows = {len(local), len(local) // self._critic_steps}
        try:
            with ShardedNoise(self.rank, self.world, rows):
                metrics = self.inner.update(local, bc_only=True) if bc_only else self.inner.update(local)
        finally:
            self._in_update = False
        names = sorted(metrics)
        values = torch.tensor([metrics[k] for k in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, group=self.group)  # mean over ranks = the full-batch value of mean metrics
        return dict(zip(names, (values / self.world).tolist()))

    def _scatter(self, layout: dict[str, tuple[tuple[int, ...], str]],
                 fields: dict[str, torch.Tensor] | None) -> Batch:
        """This rank's rows (:func:`rank_rows`) of every field ``(N, ...)`` -> local ``(N / world, ...)`` tensors."""
        local = {}
        for name, (shape, dtype) in layout.items():
            wire_dtype = torch.uint8 if dtype == "torch.bool" else getattr(torch, dtype.removeprefix("torch."))
            out = torch.empty((shape[0] // self.world, *shape[1:]), dtype=wire_dtype, device=self.device)
            chunks = None
            if self.rank == self.src:
                value = fields[name].to(self.device)
                value = value.to(torch.uint8) if value.dtype == torch.bool else value
                chunks = [c.contiguous() for c in rank_rows(value, self.world, self._critic_steps)]
            dist.scatter(out, chunks, src=self.src, group=self.group)
            local[name] = out.bool() if dtype == "torch.bool" else out
        return _batch_from_fields(local)

    # ------------------------------------------------------------------ rank src: the Algorithm interface
    @property
    def batch_size_per_update(self) -> int:
        return self.inner.batch_size_per_update

    def update(self, batch: Batch, bc_only: bool = False) -> dict[str, float]:
        """Rank ``src`` only: one update on the global ``batch``, split over all ranks."""
        if self.rank != self.src:
            raise RuntimeError(f"rank {self.rank} follows; only rank {self.src} drives updates")
        n, unit = len(batch), self.world * self._critic_steps
        if n % unit:
            raise ValueError(f"global batch of {n} must split into {self.world} ranks x {self._critic_steps} "
                             f"critic minibatches: make it a multiple of {unit}")
        fields = _batch_fields(batch)
        for name, value in fields.items():
            if value.shape[0] != n:
                raise ValueError(f"batch field {name} has {value.shape[0]} rows, expected {n}")
        layout = {name: (tuple(v.shape), str(v.dtype)) for name, v in fields.items()}
        rng = _rng_state(self.device)
        self._broadcast({"cmd": "update", "bc_only": bc_only, "layout": layout, "rng": rng})
        return self._local_update(self._scatter(layout, fields), bc_only, rng)

    def pretrain_offline(self, sample_demo_batch: Callable[[], Batch], num_updates: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for _ in range(num_updates):
            metrics = self.update(sample_demo_batch(), bc_only=True)
        return metrics

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return self.inner.policy_weights()

    def q_values(self, batch: Batch) -> Any:
        """Rank ``src``'s critic on ``batch`` (the learner's critic check): local, no collective, since every
        replica holds the same weights."""
        return self.inner.q_values(batch)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rank ``src`` only: load, then push the loaded state to every rank."""
        self.inner.load_state_dict(state)
        self._broadcast({"cmd": "sync"})
        self._sync_state()

    def stop(self) -> None:
        """Rank ``src``: release the followers (their :meth:`follow` returns)."""
        if self.rank == self.src:
            self._broadcast({"cmd": "stop"})

    # ------------------------------------------------------------------ other ranks
    def follow(self) -> int:
        """Non-source ranks: take part in every update rank ``src`` drives, until it calls :meth:`stop`.
        Returns the number of updates taken part in."""
        if self.rank == self.src:
            raise RuntimeError("the source rank drives updates; it does not follow")
        updates = 0
        while True:
            header = self._broadcast(None)
            if header["cmd"] == "stop":
                return updates
            if header["cmd"] == "sync":
                self._sync_state()
            elif header["cmd"] == "update":
                self._local_update(self._scatter(header["layout"], None), header["bc_only"], header["rng"])
                updates += 1
            else:
                raise RuntimeError(f"unknown command from rank {self.src}: {header['cmd']!r}")


def init_from_env(backend: str | None = None) -> torch.device:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); returns this
    rank's device: ``cuda:LOCAL_RANK`` with NCCL where CUDA is present, else CPU with gloo."""
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    return torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def shutdown() -> None:
    """Leave the process group together: a barrier, then ``destroy_process_group``. Without the barrier, rank 0
    could tear down its gloo pairs while a follower was still finishing the last broadcast (the "stop"), and the
    follower's gloo thread aborted the process at exit ("terminate called without an active exception")."""
    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError as exc:  # a rank already died: nothing left to synchronise with
        log.warning("barrier before leaving the process group failed: %s", exc)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m robot_rl.distributed [overrides]``: rank 0 runs the learner, the others follow."""
    from robot_rl.config import load_config
    from robot_rl.learner import Learner
    from robot_rl.registry import ALGORITHMS, env_specs, make_policy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = init_from_env()
    overrides = list(sys.argv[1:] if argv is None else argv)
    if not any(o.startswith("learner.device=") for o in overrides):
        overrides.append(f"learner.device={device}")  # each rank on its own GPU
    cfg = load_config(overrides)
    rank = dist.get_rank()
    try:
        if rank == 0:
            learner = Learner(cfg)
            learner.algo = DataParallelAlgorithm(learner.algo)
            try:
                log.info("data-parallel learner: %d ranks, global batch %d", dist.get_world_size(),
                         learner.algo.batch_size_per_update)
                result = learner.run()
                log.info("learner finished: %s", result)
            finally:
                learner.algo.stop()
                learner.close()
        else:
            torch.manual_seed(cfg.seed)
            obs_spec, action_spec = env_specs(cfg)
            policy = make_policy(cfg, obs_spec, action_spec).to(device)
            algo = ALGORITHMS.make(cfg.algo.name, cfg.algo, policy, policy.obs_spec, action_spec, device)
            updates = DataParallelAlgorithm(algo).follow()
            log.info("rank %d: took part in %d updates", rank, updates)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is saved, closed and the process group destroyed; skip interpreter finalization. Gloo's worker
    # threads can otherwise still be torn down by C++ static destructors at exit and abort the rank ("terminate
    # called without an active exception", seen once on a follower in CI), which torchrun reports as a failure.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
