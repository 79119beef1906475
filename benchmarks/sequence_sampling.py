"""Sequence sampling (n-step TD targets, action-sequence critics): ms per batch against the replay buffer's size.

``sample_sequences`` follows each window's steps through ``ReplayBuffer.following_slots``, an O(1) lookup per
step kept up to date as transitions are added. Baseline, measured in the same run on the same buffers: the search
it replaced, which scanned every stored transition for valid start slots and sorted every stored frame id at every
batch to find each next step (O(size log size) per batch).
Both run the whole ``sample_sequences`` on the same data and draw the same windows (same seed; checked before
timing). Setting: the pick-cube state route (28 floats, 4-d actions), episodes of 100 steps, batch 256, horizon 3
(``algo.n_step=3``); the buffer is filled to its capacity and then a quarter over, so both rings have wrapped.

    python benchmarks/sequence_sampling.py [--sizes 10000 200000 1000000] [--repeats 15]

Prints a table and one JSON line: ``ms_per_batch`` and ``baseline_ms_per_batch`` per size (medians over
interleaved repeats), ``ratio_vs_search`` (baseline / ours) per size, ``load_avg_1m`` before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from robot_rl.replay import ReplayBuffer
from robot_rl.sequence_replay import sample_sequences
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.types import Batch

STATE_DIM, ACTION_DIM, EPISODE, BATCH, HORIZON, CHUNK = 28, 4, 100, 256, 3, 1000


def filled_buffer(cls: type[ReplayBuffer], capacity: int, rng: np.random.Generator) -> ReplayBuffer:
    spec = ObsSpec({"state": ArraySpec((STATE_DIM,), "float32")})
    buf = cls(spec, ActionSpec((ACTION_DIM,), (-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM), capacity)
    for start in range(0, capacity + capacity // 4, CHUNK):
        t = np.arange(start, start + CHUNK)
        step = t % EPISODE
        states = rng.standard_normal((CHUNK + 1, STATE_DIM), dtype=np.float32)  # row i+1 is step i's next_obs
        states[1:][step == EPISODE - 1] = rng.standard_normal(STATE_DIM, dtype=np.float32)  # episode ends
        zeros = np.zeros(CHUNK, bool)
        buf.add_batch(Batch(obs={"state": states[:-1]}, action=np.zeros((CHUNK, ACTION_DIM), np.float32),
                            reward=np.zeros(CHUNK, np.float32), next_obs={"state": states[1:]}, terminated=zeros,
                            truncated=step == EPISODE - 1, intervened=zeros,
                            policy_action=np.zeros((CHUNK, ACTION_DIM), np.float32),
                            episode_id=(t // EPISODE).astype(np.int64), step=step.astype(np.int64)))
    return buf


class SearchingBuffer(ReplayBuffer):
    """The baseline: the same buffer, sampled as ``sample_sequences`` did before ``following_slots``: start slots
    drawn from a scan of every stored transition, every stored obs frame id sorted once per batch, then a binary
    search per step."""

    def draw_slots(self, n: int, rng: np.random.Generator) -> np.ndarray:
        size = len(self)  # a batch starts here: the start slots drawn among all valid ones (a full scan) ...
        valid_start = np.flatnonzero(self._valid(np.arange(size)))
        idx = rng.choice(valid_start, n)
        # ... and every stored obs frame id sorted for the batch's searches (O(size log size))
        self._order = np.argsort(self.obs_fid[:size], kind="stable")
        self._sorted_fids = self.obs_fid[:size][self._order]
        return idx

    def following_slots(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = self.next_fid[slots]
        pos = np.clip(np.searchsorted(self._sorted_fids, want), 0, len(self) - 1)
        nxt = self._order[pos]
        return nxt, (self._sorted_fids[pos] == want) & self._valid(nxt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    result: dict[str, dict[str, float]] = {"ms_per_batch": {}, "baseline_ms_per_batch": {}, "ratio_vs_search": {}}
    print(f"{'replay size':>12} {'ours ms':>9} {'search ms':>10} {'ratio':>7}")
    for size in args.sizes:
        bufs = {"ours": filled_buffer(ReplayBuffer, size, np.random.default_rng(0)),
                "search": filled_buffer(SearchingBuffer, size, np.random.default_rng(0))}
        # same data and seed -> the same windows, or the comparison means nothing
        x, y = (sample_sequences(b, BATCH, HORIZON, np.random.default_rng(1)) for b in bufs.values())
        for field in ("action", "reward", "valid", "terminated", "length"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        np.testing.assert_array_equal(x.next_obs["state"], y.next_obs["state"])
        if x.length.min() < 1 or (x.length == 1).all():
            raise AssertionError("no multi-step windows: the benchmark data is broken")
        times: dict[str, list[float]] = {"ours": [], "search": []}
        for r in range(args.repeats):  # interleaved, so machine noise hits both alike
            for name, buf in bufs.items():
                rng = np.random.default_rng(100 + r)
                t0 = time.perf_counter()
                for _ in range(5):
                    sample_sequences(buf, BATCH, HORIZON, rng)
                times[name].append((time.perf_counter() - t0) / 5 * 1e3)
        ours_ms, search_ms = statistics.median(times["ours"]), statistics.median(times["search"])
        result["ms_per_batch"][str(size)] = round(ours_ms, 4)
        result["baseline_ms_per_batch"][str(size)] = round(search_ms, 4)
        result["ratio_vs_search"][str(size)] = round(search_ms / ours_ms, 2)
        print(f"{size:>12,} {ours_ms:>9.3f} {search_ms:>10.3f} {search_ms / ours_ms:>6.1f}x")
    print(json.dumps({**result, "batch": BATCH, "horizon": HORIZON,
                      "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
