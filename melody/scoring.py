"""Scoring pieces: bits per token and per note, by a Keras model or the n-gram baseline.

Every piece is scored from BOS: the first token is given, every later token is
predicted from all the tokens before it. The n-gram baseline scores exactly the
same tokens.

- bits per token: total negative log2-likelihood / scored tokens;
- bits per note: the same total / notes (PITCH tokens), comparable across
  tokenisations;
- pitch bits per note: the NLL of the PITCH tokens alone / notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from melody.context import BAR_IDS, POSITIONS, piece_context
from melody.data import TokenData

LOG2 = math.log(2.0)


@dataclass
class Totals:
    """Sums over scored tokens, from which the reported rates follow."""

    nll_bits: float = 0.0
    pitch_nll_bits: float = 0.0
    tokens: int = 0
    notes: int = 0
    pieces: int = 0

    def add(self, nll_bits: np.ndarray, targets: np.ndarray, is_pitch: np.ndarray) -> None:
        """Add scored positions: per-token NLL in bits, their targets, pitch flags."""
        self.nll_bits += float(nll_bits.sum())
        self.pitch_nll_bits += float(nll_bits[is_pitch].sum())
        self.tokens += int(nll_bits.size)
        self.notes += int(is_pitch.sum())

    def report(self) -> dict:
        notes = max(self.notes, 1)
        return {
            "bits_per_token": self.nll_bits / max(self.tokens, 1),
            "bits_per_note": self.nll_bits / notes,
            "pitch_bits_per_note": self.pitch_nll_bits / notes,
        }


# -- the model ------------------------------------------------------------------
class ModelScorer:
    """Scores whole pieces with a Keras model, in padded batches of similar length.

    The GRU is causal, so padding after a piece's end never changes the
    predictions inside it; padded positions are left out of the sums.
    """

    def __init__(self, model, tokenizer, lookback: tuple[int, ...] = (), token_budget: int = 32768,
                 max_batch: int = 64):
        from melody.backend import backend_name

        self.tokenizer = tokenizer
        self.lookback = tuple(lookback)  # the model's form context (ModelConfig.lookback)
        self.token_budget = token_budget
        self.max_batch = max_batch
        make = _tf_nll if backend_name() == "tensorflow" else _keras_nll
        self._nll = make(model, bool(self.lookback))

    def batches(self, data: TokenData):
        """Lists of piece indices, shortest pieces first, within the token budget."""
        lengths = np.diff(data.offsets)
        batch, longest = [], 0
        for i in np.argsort(lengths, kind="stable"):
            n = int(lengths[i])
            full = len(batch) == self.max_batch
            if batch and (full or (len(batch) + 1) * max(longest, n) > self.token_budget):
                yield batch
                batch, longest = [], 0
            batch.append(int(i))
            longest = max(longest, n)
        if batch:
            yield batch

    def score(self, data: TokenData) -> Totals:
        totals = Totals()
        for batch in self.batches(data):
            pieces = [data.piece(i) for i in batch]
            width = max(len(p) for p in pieces)
            padded = np.zeros((len(pieces), width), dtype=np.int32)
            for row, piece in enumerate(pieces):
                padded[row, : len(piece)] = piece
            nll = self._nll(self._inputs(pieces, padded[:, :-1]), padded[:, 1:]) / LOG2
            targets = padded[:, 1:]
            mask = np.arange(width - 1)[None, :] < (np.array([len(p) for p in pieces]) - 1)[:, None]
            totals.add(nll[mask], targets[mask], self.tokenizer.is_pitch(targets[mask]))
            totals.pieces += len(pieces)
        return totals


    def _inputs(self, pieces: list, tokens: np.ndarray):
        """The model's inputs for padded ``tokens``: the tokens, and with form
        context a dict that adds each piece's context (padding: NONE)."""
        if not self.lookback:
            return tokens
        back = np.full(tokens.shape + (len(self.lookback),), self.tokenizer.vocab_size, np.int32)
        position = np.full(tokens.shape, POSITIONS - 1, np.int32)
        bar = np.full(tokens.shape, BAR_IDS - 1, np.int32)
        for row, piece in enumerate(pieces):
            n = len(piece) - 1
            b, p, r = piece_context(piece[:-1], self.tokenizer, self.lookback)
            back[row, :n], position[row, :n], bar[row, :n] = b, p, r
        return {"tokens": tokens, "lookback": back, "position": position, "bar": bar}


def _tf_nll(model, context: bool):
    """Per-token NLL in nats as numpy, from one traced graph for all batch shapes."""
    from melody.backend import tensorflow

    tf = tensorflow()
    spec = tf.TensorSpec([None, None], tf.int32)
    inputs = spec
    if context:
        inputs = {"tokens": spec, "position": spec, "bar": spec,
                  "lookback": tf.TensorSpec([None, None, None], tf.int32)}

    @tf.function(input_signature=[inputs, spec])
    def nll(inputs, targets):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)

    return lambda inputs, targets: nll(inputs, targets).numpy()


def _keras_nll(model, context: bool):
    """The same through keras.ops, for Keras backends other than TensorFlow."""
    from melody.backend import keras

    ops = keras().ops

    def nll(inputs, targets):
        logits = ops.cast(model(inputs, training=False), "float32")
        log_probs = ops.log_softmax(logits, axis=-1)
        picked = ops.take_along_axis(log_probs, ops.expand_dims(targets, -1), axis=-1)
        return -ops.convert_to_numpy(ops.squeeze(picked, -1))

    return nll


# -- the n-gram baseline ----------------------------------------------------------------
def score_ngram(lm, order: int, data: TokenData, tokenizer) -> Totals:
    totals = Totals(pieces=len(data))
    nll, targets = lm.nll_bits(data.pieces(), order)
    totals.add(nll, targets, tokenizer.is_pitch(targets))
    return totals


def fit_baseline(train: TokenData, vocab_size: int):
    """The n-gram on the model's training split, its order chosen on held-out pieces."""
    from melody.ngram import fit_best

    return fit_best(list(train.pieces()), vocab_size)
