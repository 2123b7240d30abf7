"""The GRU language model over event tokens, in Keras.

token ids -> Embedding -> GRU x layers (dropout between) -> Dense logits.

``reset_after=True`` (the default) is the variant cuDNN runs, so the same model
trains fast on a GPU; ``reset_after=False`` is the textbook cell. The NumPy
sampler (``melody.sample.network``) runs the same network from its weights.
"""

from __future__ import annotations

from melody.config import ModelConfig


def build_model(config: ModelConfig):
    """The Keras model for ``config``: ids [batch, time] -> logits [batch, time, vocab].

    Layer names are fixed (``embedding``, ``gru_0``..., ``logits``) so that the
    NumPy sampler can find each weight.
    """
    from melody.backend import keras

    k = keras()
    inputs = k.Input(shape=(None,), dtype="int32", name="tokens")
    x = k.layers.Embedding(config.vocab_size, config.embedding, name="embedding")(inputs)
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


def flops_per_token(config: ModelConfig) -> int:
    """Forward multiply-adds x2 per token (the embedding lookup counts as zero).

    >>> flops_per_token(ModelConfig(vocab_size=10, embedding=4, units=8, layers=1))
    736
    """
    flops = 0
    inp = config.embedding
    for _ in range(config.layers):
        flops += 2 * 3 * (inp + config.units) * config.units
        inp = config.units
    flops += 2 * config.units * config.vocab_size
    return flops
