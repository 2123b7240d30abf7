"""The input pipeline: random, randomly transposed windows of the training tokens."""

from __future__ import annotations

import numpy as np

from melody.config import TrainConfig


class WindowSampler:
    """Random windows of ``seq_len + 1`` tokens from a token array, randomly transposed.

    Each batch is gathered with one fancy index into the memory-mapped array,
    so the collection is never loaded as Python objects. With ``context`` (the
    form context of every token, ``melody.context.data_context``) the inputs
    are a dict of tokens and context, the lookback tokens transposed with their
    window; the context of a window's first token reaches back before the
    window, to the start of its piece.

    >>> tables = np.arange(6, dtype=np.int32)[None]
    >>> x, y = next(WindowSampler(np.arange(6), 3, 2, tables).batches(seed=0))
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
    ((2, 3), True)
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, tables: np.ndarray,
                 context=None, transpose_prob: float = 1.0, identity: int = 0):
        if len(tokens) < seq_len + 1:
            raise ValueError(f"need at least {seq_len + 1} tokens, got {len(tokens)}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.tables = tables
        self.context = context
        self.transpose_prob = transpose_prob  # the others take table ``identity``
        self.identity = identity
        if context is not None:  # lookback ids also hold NONE (= vocabulary size): kept as it is
            none = np.full((len(tables), 1), tables.shape[1], tables.dtype)
            self.lookback_tables = np.concatenate([tables, none], axis=1)

    def batches(self, seed):
        """Endless (inputs, targets) int32 batches of shape [batch, seq_len]."""
        rng = np.random.default_rng(seed)
        span = np.arange(self.seq_len + 1)
        last_start = len(self.tokens) - self.seq_len - 1
        while True:
            starts = rng.integers(0, last_start + 1, size=self.batch_size)
            at = starts[:, None] + span
            windows = np.asarray(self.tokens[at], dtype=np.int32)
            shifts = rng.integers(0, len(self.tables), size=self.batch_size)
            if self.transpose_prob < 1.0:
                keep = rng.random(self.batch_size) >= self.transpose_prob
                shifts[keep] = self.identity
            windows = self.tables[shifts[:, None], windows]
            if self.context is None:
                yield windows[:, :-1], windows[:, 1:]
                continue
            lookback, position, bar = self.context
            at = at[:, :-1]
            back = self.lookback_tables[shifts[:, None, None], lookback[at].astype(np.int32)]
            yield ({"tokens": windows[:, :-1], "lookback": back,
                    "position": position[at].astype(np.int32), "bar": bar[at].astype(np.int32)},
                   windows[:, 1:])

    def dataset(self, seed):
        """What ``fit`` reads: a prefetching tf.data pipeline under TensorFlow,
        the plain generator under other Keras backends."""
        from melody.backend import backend_name, tensorflow

        if backend_name() != "tensorflow":
            return self.batches(seed)
        tf = tensorflow()
        spec = tf.TensorSpec((self.batch_size, self.seq_len), tf.int32)
        inputs = spec
        if self.context is not None:
            distances = self.context[0].shape[1]
            inputs = {"tokens": spec, "position": spec, "bar": spec,
                      "lookback": tf.TensorSpec((self.batch_size, self.seq_len, distances), tf.int32)}
        ds = tf.data.Dataset.from_generator(
            lambda: self.batches(seed), output_signature=(inputs, spec)
        )
        return ds.prefetch(4)


def transpose_tables(tokenizer, cfg: TrainConfig) -> np.ndarray:
    """One table per transposition from ``transpose_low`` to ``transpose_high``
    semitones: row ``-transpose_low`` keeps the key."""
    return np.stack([
        tokenizer.transpose_table(s) for s in range(cfg.transpose_low, cfg.transpose_high + 1)
    ])


def transpose_share(passes: float) -> float:
    """The share of windows transposed when the default epoch (``MIN_WINDOWS``
    windows) passes ``passes`` times over the training tokens: a quarter at one
    pass or less (a collection of a thousand tunes or more is in many keys already,
    and each window in its own key teaches more), all of them from four passes (a
    small collection seen again and again learns more from new keys than from the
    same windows), and between, in proportion. The measure is the default epoch's
    and not the run's, so that fine-tuning's shorter epochs transpose as much.

    >>> transpose_share(1.0), transpose_share(2.0), transpose_share(9.0)
    (0.25, 0.5, 1.0)
    """
    return min(1.0, max(0.25, passes / 4))
