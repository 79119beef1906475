"""Pretrained VLAC-style (vision-language-action-critic) reward models through ``transformers``.

A VLAC-style model is a VLM prompted with the task and two frames; it answers with the progress made
between them (e.g. ``"+12.5%"``, ``"-3"``, ``"progress: 0.4"``). :func:`parse_progress` turns such an answer
into a float in [-1, 1]; :class:`PretrainedProgressModel` loads the weights from a local directory
(``local_files_only``: nothing is downloaded) and chains pairwise answers into per-frame progress like
the incremental perspective of :mod:`.evaluate`.

No pretrained VLAC weights ship with this project or can be fetched here; the loader is exercised by the
``gpu``-marked test when ``ROBOT_RL_VLAC_WEIGHTS`` points at a local checkpoint.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_NUMBER = re.compile(r"([+-]?\s*\d+(?:\.\d+)?)\s*(%?)")

PROMPT = ("Task: {task}\nImage 1 is the robot's view before, image 2 after. How much of the task's remaining "
          "progress was made from image 1 to image 2? Answer with a signed percentage, e.g. +25% or -10%.")


def parse_progress(text: str) -> float:
    """Progress in [-1, 1] from a model's answer: the first signed number; ``%`` (or a magnitude above 1)
    means percent. Raises ``ValueError`` when there is no number (never guesses)."""
    if not isinstance(text, str):
        raise TypeError(f"expected the model's decoded text, got {type(text).__name__}")
    m = _NUMBER.search(text)
    if m is None:
        raise ValueError(f"no progress value in model output {text!r}")
    value = float(m.group(1).replace(" ", ""))
    if m.group(2) == "%" or abs(value) > 1.0:
        value /= 100.0
    if not np.isfinite(value) or abs(value) > 1.0 + 1e-9:
        raise ValueError(f"progress {value} out of range in model output {text!r}")
    return float(np.clip(value, -1.0, 1.0))


def build_messages(task: str, n_images: int = 2) -> list[dict[str, Any]]:
    """Chat-template messages: ``n_images`` image slots then the prompt (the processor fills the images)."""
    if not task.strip():
        raise ValueError("task text is empty")
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": PROMPT.format(task=task)})
    return [{"role": "user", "content": content}]


def chain_progress(pair_deltas: Sequence[float]) -> np.ndarray:
    """Per-frame progress (K + 1,) from K consecutive pair answers (each inverted as in training labels:
    forward ``p + (1 - p) d``, backward ``(p + d) / (1 + d)``)."""
    from robot_rl.reward_models.data import apply_pair_label

    p = np.zeros(len(pair_deltas) + 1)
    for k, d in enumerate(pair_deltas):
        p[k + 1] = apply_pair_label(p[k], d)
    return p


class PretrainedProgressModel:
    """Local pretrained VLM critic (``AutoModelForImageTextToText`` + ``AutoProcessor``)."""

    def __init__(self, path: str | Path, device: str = "cuda", dtype: str = "bfloat16", max_new_tokens: int = 12,
                 trust_remote_code: bool = False) -> None:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no pretrained weights at {path} (a local directory with config.json)")
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(device)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True,
                                                       trust_remote_code=trust_remote_code)
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code,
            dtype=getattr(torch, dtype)).to(self.device).eval()
        self.max_new_tokens = int(max_new_tokens)

    def pair_progress(self, task: str, before: np.ndarray, after: np.ndarray) -> float:
        """Progress from frame ``before`` to ``after`` (uint8 (H, W, 3) each) for ``task``."""
        import torch

        for name, img in (("before", before), ("after", after)):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
                raise ValueError(f"{name} must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        prompt = self.processor.apply_chat_template(build_messages(task), add_generation_prompt=True)
        inputs = self.processor(text=[prompt], images=[[before, after]], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        answer = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        return parse_progress(answer)

    def episode_progress(self, task: str, frames: np.ndarray, stride: int = 4) -> np.ndarray:
        """Per-frame progress (T + 1,) of uint8 frames (T + 1, H, W, 3), asking about every ``stride`` frames."""
        n = len(frames)
        knots = np.unique(np.concatenate([np.arange(0, n, max(1, stride)), [n - 1]]))
        deltas = [self.pair_progress(task, frames[a], frames[b]) for a, b in zip(knots[:-1], knots[1:])]
        return np.interp(np.arange(n), knots, chain_progress(deltas))
