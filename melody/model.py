"""The GRU language model over event tokens, in Keras.

token ids -> Embedding -> GRU x layers (dropout between) -> Dense logits.

With form context (``ModelConfig.lookback``, see ``melody.context``) the GRU
reads, beside each token's embedding, embeddings of the tokens that came at
the same place 1, 2, 4 and 8 bars back and of the place in the bar and in the
phrase: inputs ``tokens`` [batch, time], ``lookback`` [batch, time, distances],
``position`` and ``bar`` [batch, time].

``reset_after=True`` (the default) is the variant cuDNN runs, so the same model
trains fast on a GPU; ``reset_after=False`` is the textbook cell. The NumPy
sampler (``melody.sample.network``) runs the same network from its weights.
"""

from __future__ import annotations

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
    return k.Model(inputs, logits, name="melody_gru")


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
    return flops
