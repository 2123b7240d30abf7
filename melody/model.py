"""The GRU language model over event tokens, in Keras.

token ids -> Embedding -> GRU x layers (dropout between) -> Dense logits.

With form context (``ModelConfig.lookback``, see ``melody.context``) the GRU
reads, beside each token's embedding, embeddings of the tokens that came at
the same place 1, 2, 4 and 8 bars back and of the place in the bar and in the
phrase: inputs ``tokens`` [batch, time], ``lookback`` [batch, time, distances],
``position`` and ``bar`` [batch, time]. Its output can also say "as N bars
ago" (``ModelConfig.copy``): a gate mixes the network's distribution with the
lookback tokens themselves, so bringing a phrase back is one confident choice
carried on token by token; the model then outputs log-probabilities (still
logits to everything downstream: their softmax is the mixture).

``reset_after=True`` (the default) is the variant cuDNN runs, so the same model
trains fast on a GPU; ``reset_after=False`` is the textbook cell. The NumPy
sampler (``melody.sample.network``) runs the same network from its weights.
"""

from __future__ import annotations

import functools

from melody.config import ModelConfig
from melody.context import BAR_IDS, POSITIONS


def build_model(config: ModelConfig):
    """The Keras model for ``config``: ids [batch, time] (and the form context) ->
    logits [batch, time, vocab].

    Layer names are fixed (``embedding``, ``lookback_embedding``, ``gru_0``...,
    ``logits``) so that the NumPy sampler can find each weight.
    """
    from melody.backend import keras

    k = keras()
    tokens = k.Input(shape=(None,), dtype="int32", name="tokens")
    x = k.layers.Embedding(config.vocab_size, config.embedding, name="embedding")(tokens)
    inputs = tokens
    if config.lookback:
        inputs, x = _context_inputs(k, config, tokens, x)
    for i in range(config.layers):
        x = k.layers.GRU(
            config.units,
            return_sequences=True,
            reset_after=config.reset_after,
            name=f"gru_{i}",
        )(x)
        if config.dropout:
            x = k.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    logits = k.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    if config.lookback and config.copy:
        gate = k.layers.Dense(1 + len(config.lookback), name="copy_gate", dtype="float32")(x)
        logits = copy_mixture_class()(config.vocab_size, name="log_probs")(
            [logits, gate, inputs["lookback"]])
    return k.Model(inputs, logits, name="melody_gru")


@functools.lru_cache(maxsize=None)
def copy_mixture_class():
    """The Keras layer of the copy mixture, registered (``melody>CopyMixture``) so that
    a saved model loads in safe mode; made once, when Keras is first needed."""
    from melody.backend import keras

    k = keras()

    @k.saving.register_keras_serializable(package="melody", name="CopyMixture")
    class CopyMixture(k.layers.Layer):
        """Log-probabilities of a mixture: the network's own distribution, or the token
        that came at the same place N bars back, as a gate chooses; the gate of a
        distance with nothing there is shut.

        Inputs: logits [batch, time, vocab], gate logits [batch, time, 1 + distances]
        (the first for the network's own), lookback ids [batch, time, distances].
        """

        def __init__(self, vocab_size: int, **kwargs):
            super().__init__(**kwargs)
            self.vocab_size = vocab_size

        def call(self, inputs):
            ops = k.ops
            logits, gate, lookback = inputs
            there = ops.cast(lookback < self.vocab_size, gate.dtype)
            shut = ops.concatenate([ops.zeros_like(there[..., :1]), 1.0 - there], axis=-1)
            weights = ops.softmax(gate - 1e9 * shut, axis=-1)
            probs = weights[..., :1] * ops.softmax(logits, axis=-1)
            copies = ops.one_hot(lookback, self.vocab_size + 1)[..., :self.vocab_size]
            probs = probs + ops.sum(weights[..., 1:, None] * copies, axis=-2)
            return ops.log(ops.maximum(probs, 1e-30))

        def get_config(self):
            return dict(super().get_config(), vocab_size=self.vocab_size)

    return CopyMixture


def _context_inputs(k, config: ModelConfig, tokens, x):
    """The context inputs and the GRU's input: the token's embedding, then each
    distance's lookback embedding, then the position's and the bar's."""
    distances = len(config.lookback)
    lookback = k.Input(shape=(None, distances), dtype="int32", name="lookback")
    position = k.Input(shape=(None,), dtype="int32", name="position")
    bar = k.Input(shape=(None,), dtype="int32", name="bar")
    back = k.layers.Embedding(config.vocab_size + 1, config.lookback_embedding,
                              name="lookback_embedding")(lookback)
    back = k.layers.Reshape((-1, distances * config.lookback_embedding), name="lookback_flat")(back)
    where = k.layers.Embedding(POSITIONS, config.position_embedding, name="position_embedding")(position)
    phrase = k.layers.Embedding(BAR_IDS, config.position_embedding, name="bar_embedding")(bar)
    x = k.layers.Concatenate(name="gru_input")([x, back, where, phrase])
    return {"tokens": tokens, "lookback": lookback, "position": position, "bar": bar}, x


def input_width(config: ModelConfig) -> int:
    """How many numbers the first GRU layer reads per step."""
    if not config.lookback:
        return config.embedding
    return (config.embedding + len(config.lookback) * config.lookback_embedding
            + 2 * config.position_embedding)


def flops_per_token(config: ModelConfig) -> int:
    """Forward multiply-adds x2 per token (the embedding lookup counts as zero).

    >>> flops_per_token(ModelConfig(vocab_size=10, embedding=4, units=8, layers=1, lookback=()))
    736
    """
    flops = 0
    inp = input_width(config)
    for _ in range(config.layers):
        flops += 2 * 3 * (inp + config.units) * config.units
        inp = config.units
    flops += 2 * config.units * config.vocab_size
    if config.lookback and config.copy:  # the gate, and the mixture's few adds
        flops += 2 * config.units * (1 + len(config.lookback)) + 4 * config.vocab_size
    return flops
