"""Interpolated Kneser-Ney n-gram over token ids: the baseline a model must beat.

NumPy only. Every piece is counted from BOS with ``max_order - 1`` PAD tokens
before it, so every position has a context of every length and the first token
of a piece is given, not predicted (as for the GRU).

Contexts get integer ids level by level: the id of the context of length k
ending before position i is the id of the pair (context of length k-1, the
token k places back), so the context one level down is always a suffix.

The probability of token w after context c at order n (context length n-1)::

    p_k(w | c) = max(count_k(c, w) - D_k, 0) / total_k(c)
                 + D_k * distinct_k(c) / total_k(c) * p_{k-1}(w | suffix of c)

from p_{-1} = 1/vocab up to k = n-1. The top level counts occurrences; lower
levels count distinct left extensions (the Kneser-Ney continuation counts).
A context never seen in training passes the lower order's probability on.

>>> import numpy as np
>>> lm = NGram.fit([np.array([1, 5, 6, 5, 6, 2])] * 3, vocab_size=8, max_order=3)
>>> bool(np.isclose(lm.distribution([5], order=2).sum(), 1.0))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PAD = 0


@dataclass
class Level:
    """Counts for contexts of one length."""

    context_keys: np.ndarray  # sorted (parent context id * vocab + token); index = context id
    gram_keys: np.ndarray  # sorted (context id * vocab + next token)
    raw: np.ndarray  # occurrences of each gram
    continuation: np.ndarray  # distinct left extensions of each gram


def _stream(pieces, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """All pieces end to end, each after ``pad`` PADs; and the positions to predict."""
    chunks, targets, at = [], [], 0
    for piece in pieces:
        piece = np.asarray(piece, dtype=np.int64)
        chunks.append(np.full(pad, PAD, dtype=np.int64))
        chunks.append(piece)
        targets.append(np.arange(at + pad + 1, at + pad + len(piece)))
        at += pad + len(piece)
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(chunks), np.concatenate(targets)


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index of each key in ``sorted_keys``, or -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(keys.shape, -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, at, -1)


class NGram:
    """An interpolated Kneser-Ney model usable at any order up to ``max_order``."""

    def __init__(self, vocab_size: int, max_order: int, levels: list[Level]):
        self.vocab_size = vocab_size
        self.max_order = max_order
        self.levels = levels
        self._stats = {}

    @classmethod
    def fit(cls, pieces, vocab_size: int, max_order: int) -> "NGram":
        if max_order < 1:
            raise ValueError(f"max_order must be at least 1, got {max_order}")
        V = vocab_size
        seq, pos = _stream(pieces, max_order - 1)
        target = seq[pos]
        levels, ctx = [], np.zeros(len(pos), dtype=np.int64)
        for k in range(max_order):
            if k == 0:
                context_keys = np.zeros(1, dtype=np.int64)
            else:
                context_keys, ctx = np.unique(ctx * V + seq[pos - k], return_inverse=True)
            gram_keys, raw = np.unique(ctx * V + target, return_counts=True)
            levels.append(Level(context_keys, gram_keys, raw, raw))
        for k in range(max_order - 1):
            # Each distinct gram one level up is one left extension of its suffix gram.
            upper = levels[k + 1]
            parent = upper.context_keys[upper.gram_keys // V] // V
            keys, counts = np.unique(parent * V + upper.gram_keys % V, return_counts=True)
            cont = np.zeros(len(levels[k].gram_keys), dtype=np.int64)
            cont[_lookup(levels[k].gram_keys, keys)] = counts
            levels[k].continuation = cont
        return cls(V, max_order, levels)

    # -- probabilities -----------------------------------------------------------------
    def _level_stats(self, k: int, top: bool):
        """(counts, totals per context, distinct per context, discount) of level k."""
        if (k, top) not in self._stats:
            level = self.levels[k]
            counts = level.raw if top else level.continuation
            ctx_of_gram = level.gram_keys // self.vocab_size
            n_ctx = len(level.context_keys)
            totals = np.bincount(ctx_of_gram, weights=counts, minlength=n_ctx)
            distinct = np.bincount(ctx_of_gram, weights=counts > 0, minlength=n_ctx)
            n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
            discount = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
            self._stats[(k, top)] = (counts, totals, distinct, float(np.clip(discount, 0.05, 0.95)))
        return self._stats[(k, top)]

    def _contexts(self, seq: np.ndarray, pos: np.ndarray, order: int) -> list[np.ndarray]:
        """Context ids of each position at levels 0..order-1 (-1: unseen in training)."""
        V = self.vocab_size
        ids = [np.zeros(len(pos), dtype=np.int64)]
        for k in range(1, order):
            prev = ids[-1]
            found = _lookup(self.levels[k].context_keys, np.maximum(prev, 0) * V + seq[pos - k])
            ids.append(np.where(prev >= 0, found, -1))
        return ids

    def _probabilities(self, contexts: list[np.ndarray], targets: np.ndarray, order: int):
        p = np.full(len(targets), 1.0 / self.vocab_size)
        for k in range(order):
            counts, totals, distinct, d = self._level_stats(k, top=k == order - 1)
            ctx = contexts[k]
            seen = ctx >= 0
            c = np.maximum(ctx, 0)
            at = _lookup(self.levels[k].gram_keys, c * self.vocab_size + targets)
            count = np.where(at >= 0, counts[np.maximum(at, 0)], 0)
            total = np.where(seen, totals[c], 0.0)
            safe = np.maximum(total, 1e-12)
            mixed = np.maximum(count - d, 0) / safe + d * distinct[c] / safe * p
            p = np.where(total > 0, mixed, p)
        return p

    def nll_bits(self, pieces, order: int) -> tuple[np.ndarray, np.ndarray]:
        """NLL in bits of every token after each piece's first, and those tokens."""
        self._check_order(order)
        seq, pos = _stream(pieces, self.max_order - 1)
        targets = seq[pos]
        p = self._probabilities(self._contexts(seq, pos, order), targets, order)
        return -np.log2(p), targets

    def distribution(self, context, order: int) -> np.ndarray:
        """Probabilities of every token after ``context`` (a list of token ids)."""
        self._check_order(order)
        context = [PAD] * (self.max_order - 1) + list(context)
        seq = np.array(context + [0], dtype=np.int64)
        pos = np.full(self.vocab_size, len(context))
        targets = np.arange(self.vocab_size)
        return self._probabilities(self._contexts(seq, pos, order), targets, order)

    def _check_order(self, order: int) -> None:
        if not 1 <= order <= self.max_order:
            raise ValueError(f"order must be in range 1..{self.max_order}, got {order}")


def bits_per_token(lm: NGram, pieces, order: int) -> float:
    nll, _ = lm.nll_bits(pieces, order)
    return float(nll.mean()) if len(nll) else math.inf


def fit_best(pieces: list, vocab_size: int, max_order: int = 8, held_out: float = 0.1):
    """Choose the order on the last ``held_out`` share of ``pieces``, then refit on all.

    Returns (model, order, {order: held-out bits per token}).
    """
    n_held = max(1, int(round(len(pieces) * held_out))) if len(pieces) > 1 else 0
    fit_part, check_part = pieces[: len(pieces) - n_held], pieces[len(pieces) - n_held:]
    scores = {}
    if check_part:
        lm = NGram.fit(fit_part, vocab_size, max_order)
        scores = {n: bits_per_token(lm, check_part, n) for n in range(1, max_order + 1)}
        order = min(scores, key=scores.get)
    else:
        order = min(3, max_order)
    return NGram.fit(pieces, vocab_size, order), order, scores
