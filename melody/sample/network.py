"""The GRU in NumPy, one token at a time for a whole batch, its state carried.

The same network as ``melody.model.build_model`` (Keras), read from its weights
(``melody.sample.weights``), so generation never imports TensorFlow and a
prefix is never run twice.

Keras's GRU with ``reset_after=False`` is the textbook cell: update gate
z = σ(W_z x + U_z h + b_z), reset gate r = σ(W_r x + U_r h + b_r), candidate
ĥ = tanh(W_h x + U_h (r ⊙ h) + b_h), new state h' = z ⊙ h + (1 − z) ⊙ ĥ
(Keras's z is the textbook's 1 − z). ``reset_after=True``, the variant cuDNN
runs, applies r after U_h: ĥ = tanh(W_h x + b_h + r ⊙ (U_h h + b'_h)), with a
second bias on the recurrent side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GRULayer:
    """One Keras GRU cell's weights; gate order is update, reset, candidate."""

    kernel: np.ndarray  # [inputs, 3 units]
    recurrent: np.ndarray  # [units, 3 units]
    bias: np.ndarray  # [3 units], the input bias
    recurrent_bias: np.ndarray | None  # [3 units]; only with reset_after
    reset_after: bool

    @property
    def units(self) -> int:
        return self.recurrent.shape[0]

    def step(self, x_proj: np.ndarray, h: np.ndarray) -> np.ndarray:
        """New state from the projected input ``x @ kernel + bias`` and state ``h``."""
        u = self.units
        if self.reset_after:
            hr = h @ self.recurrent + self.recurrent_bias
            z = _sigmoid(x_proj[:, :u] + hr[:, :u])
            r = _sigmoid(x_proj[:, u:2 * u] + hr[:, u:2 * u])
            candidate = np.tanh(x_proj[:, 2 * u:] + r * hr[:, 2 * u:])
        else:
            hr = h @ self.recurrent[:, :2 * u]
            z = _sigmoid(x_proj[:, :u] + hr[:, :u])
            r = _sigmoid(x_proj[:, u:2 * u] + hr[:, u:])
            candidate = np.tanh(x_proj[:, 2 * u:] + (r * h) @ self.recurrent[:, 2 * u:])
        return z * h + (1.0 - z) * candidate


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


@dataclass(frozen=True)
class ContextTables:
    """The form context's embeddings (``melody.context``): lookback [vocab + 1, width]
    (shared by every distance), position [positions, width] and bar [bars, width]."""

    lookback: np.ndarray
    position: np.ndarray
    bar: np.ndarray
    gate_kernel: np.ndarray | None = None  # the copy gate [units, 1 + distances], if any
    gate_bias: np.ndarray | None = None


class NumpyGRU:
    """embedding (and form context) -> GRU layers -> logits, one step at a time, in NumPy.

    Args:
        embedding: [vocab, embedding] table.
        layers: the GRU layers, first to last.
        logits_kernel, logits_bias: the output Dense layer.
        context: the context embeddings of a model with form context, else None;
            the first layer's kernel then reads, after the token's embedding, each
            distance's lookback embedding, then the position's and the bar's.
        lookback: with ``context``, the distances in bars (``ModelConfig.lookback``).
    """

    def __init__(self, embedding, layers, logits_kernel, logits_bias,
                 context: ContextTables | None = None, lookback: tuple[int, ...] = ()):
        self.layers = list(layers)
        self.logits_kernel = logits_kernel
        self.logits_bias = logits_bias
        first = self.layers[0]
        # The first layer's input projection is linear in each input's embedding:
        # per input, a table of its projections, so a step only looks up and adds.
        width = embedding.shape[1]
        self.input_table = embedding @ first.kernel[:width] + first.bias
        self.lookback_bars = tuple(lookback)  # the distances, in bars, of the form context
        self.lookback = len(self.lookback_bars)
        self.gate_kernel = None if context is None else context.gate_kernel
        self.gate_bias = None if context is None else context.gate_bias
        if context is not None:
            rows, wide = first.kernel[width:], context.lookback.shape[1]
            at = self.lookback * wide
            self.lookback_tables = np.stack([context.lookback @ rows[k * wide:(k + 1) * wide]
                                             for k in range(self.lookback)])
            self.position_table = context.position @ rows[at:at + context.position.shape[1]]
            self.bar_table = context.bar @ rows[at + context.position.shape[1]:]

    @property
    def vocab_size(self) -> int:
        return self.logits_bias.shape[0]

    def initial_state(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, layer.units), np.float32) for layer in self.layers]

    def step(self, tokens, state, context=None):
        """Logits [batch, vocab] for the next token after ``tokens`` [batch], and the
        new state. A model with form context needs ``context``: (lookback ids
        [batch, distances], position ids [batch], bar ids [batch])."""
        x_proj = self.input_table[np.asarray(tokens, dtype=np.int64)]
        if self.lookback:
            back, position, bar = context
            back = np.asarray(back, np.int64)
            for k in range(self.lookback):
                x_proj = x_proj + self.lookback_tables[k][back[:, k]]
            x_proj = x_proj + self.position_table[position] + self.bar_table[bar]
        new_state = []
        for i, (layer, h) in enumerate(zip(self.layers, state)):
            if i:
                x_proj = new_state[-1] @ layer.kernel + layer.bias
            new_state.append(layer.step(x_proj, h))
        logits = new_state[-1] @ self.logits_kernel + self.logits_bias
        if self.gate_kernel is not None:
            logits = self._copy_mixture(logits, new_state[-1], back)
        return logits, new_state

    def _copy_mixture(self, logits, h, back) -> np.ndarray:
        """Log-probabilities of the copy mixture (``melody.model``'s CopyMixture): the
        network's distribution or a lookback token, as the gate chooses."""
        gate = h @ self.gate_kernel + self.gate_bias
        gate[:, 1:] = np.where(back < self.vocab_size, gate[:, 1:], -np.inf)  # nothing there
        weights = _softmax(gate)
        probs = weights[:, :1] * _softmax(logits)
        rows = np.repeat(np.arange(len(back)), back.shape[1])
        there = back.reshape(-1) < self.vocab_size
        np.add.at(probs, (rows[there], back.reshape(-1)[there]), weights[:, 1:].reshape(-1)[there])
        return np.log(np.maximum(probs, 1e-30))

    def run(self, tokens, state=None, context=None):
        """Feed [batch, time] tokens step by step: logits [batch, time, vocab] and the
        state; ``context`` as ``step`` takes it, with a time axis after the batch."""
        tokens = np.asarray(tokens)
        state = state if state is not None else self.initial_state(tokens.shape[0])
        out = []
        for t in range(tokens.shape[1]):
            at = None if context is None else tuple(np.asarray(c)[:, t] for c in context)
            logits, state = self.step(tokens[:, t], state, at)
            out.append(logits)
        return np.stack(out, axis=1), state
