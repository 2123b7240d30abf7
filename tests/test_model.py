"""The model: Keras's GRU is the textbook GRU, and the config round-trips."""

import numpy as np
import pytest

from melody.model import ModelConfig, build_model, flops_per_token


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def textbook_gru(x, W, U, b, reset_after, b_rh=None):
    """The GRU equations, run step by step over x [batch, time, in].

    z = σ(W_z x + U_z h + b_z), r = σ(W_r x + U_r h + b_r),
    ĥ = tanh(W_h x + U_h (r ⊙ h) + b_h)            (reset_after=False)
    ĥ = tanh(W_h x + b_h + r ⊙ (U_h h + b_rh))      (reset_after=True)
    h' = (1 − z) ⊙ h + z ⊙ ĥ
    """
    batch, time, _ = x.shape
    h = np.zeros((batch, U["z"].shape[0]))
    out = []
    for t in range(time):
        xt = x[:, t]
        z = sigmoid(xt @ W["z"] + h @ U["z"] + b["z"])
        r = sigmoid(xt @ W["r"] + h @ U["r"] + b["r"])
        if reset_after:
            candidate = np.tanh(xt @ W["h"] + b["h"] + r * (h @ U["h"] + b_rh))
        else:
            candidate = np.tanh(xt @ W["h"] + (r * h) @ U["h"] + b["h"])
        h = (1 - z) * h + z * candidate
        out.append(h)
    return np.stack(out, axis=1)


def textbook_weights(layer, reset_after):
    """Keras's GRU weights in textbook form (see ``textbook_form``)."""
    return textbook_form(*(w.numpy() for w in layer.weights), reset_after)


def textbook_form(kernel, recurrent, bias, reset_after):
    """GRU weights in Keras's layout (gates update, reset, candidate; with
    reset_after a bias of shape [2, 3 units]: input, recurrent) as the
    textbook's W, U, b (and the recurrent candidate bias b_rh).

    Keras keeps the old state with its gate z (h' = z ⊙ h + (1 − z) ⊙ ĥ), so
    the textbook update gate is Keras's with its pre-activation negated:
    1 − σ(a) = σ(−a).
    """
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in (kernel, recurrent, bias))
    n = recurrent.shape[0]
    split = lambda m: dict(zip("zrh", (m[..., i * n:(i + 1) * n] for i in range(3))))  # noqa: E731
    W, U = split(kernel), split(recurrent)
    if reset_after:
        b, b_recurrent = split(bias[0]), split(bias[1])
        # z and r add the two biases; only ĥ keeps the recurrent one inside r ⊙ (...).
        b = {"z": b["z"] + b_recurrent["z"], "r": b["r"] + b_recurrent["r"], "h": b["h"]}
        b_rh = b_recurrent["h"]
    else:
        b, b_rh = split(bias), None
    W["z"], U["z"], b["z"] = -W["z"], -U["z"], -b["z"]
    return W, U, b, b_rh


@pytest.mark.parametrize("reset_after", [True, False])
def test_keras_gru_is_the_textbook_gru(reset_after):
    from melody.backend import keras

    k = keras()
    rng = np.random.default_rng(1)
    layer = k.layers.GRU(6, return_sequences=True, reset_after=reset_after)
    x = rng.normal(size=(3, 7, 4)).astype(np.float32)
    layer.build(x.shape)
    # Random biases too: Keras starts them at zero, which would hide a bias mix-up.
    layer.weights[2].assign(rng.normal(size=layer.weights[2].shape).astype(np.float32))
    keras_out = np.asarray(layer(x))
    W, U, b, b_rh = textbook_weights(layer, reset_after)
    ours = textbook_gru(x.astype(np.float64), W, U, b, reset_after, b_rh)
    np.testing.assert_allclose(keras_out, ours, atol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_whole_model_matches_numpy_forward_pass(reset_after):
    """Embedding -> GRUs -> logits, by layer name, as the NumPy sampler reads them."""
    cfg = ModelConfig(vocab_size=11, embedding=5, units=7, layers=2, dropout=0.1,
                      reset_after=reset_after, lookback=())
    model = build_model(cfg)
    rng = np.random.default_rng(2)
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape).astype(np.float32))
    ids = rng.integers(0, 11, size=(2, 9)).astype(np.int32)
    keras_logits = np.asarray(model(ids, training=False))

    x = model.get_layer("embedding").weights[0].numpy()[ids].astype(np.float64)
    for i in range(cfg.layers):
        W, U, b, b_rh = textbook_weights(model.get_layer(f"gru_{i}"), reset_after)
        x = textbook_gru(x, W, U, b, reset_after, b_rh)
    kernel, bias = (w.numpy() for w in model.get_layer("logits").weights)
    np.testing.assert_allclose(keras_logits, x @ kernel + bias, atol=1e-4)


@pytest.mark.parametrize("reset_after", [True, False])
def test_form_context_is_read_beside_each_token(reset_after):
    """The GRU reads the token's embedding, then each lookback distance's, the
    position's and the bar's, side by side."""
    cfg = ModelConfig(vocab_size=11, embedding=5, units=7, layers=1, reset_after=reset_after,
                      lookback=(1, 4), lookback_embedding=3, position_embedding=2, copy=False)
    model = build_model(cfg)
    rng = np.random.default_rng(3)
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape).astype(np.float32))
    inputs = {"tokens": rng.integers(0, 11, (2, 6)), "lookback": rng.integers(0, 12, (2, 6, 2)),
              "position": rng.integers(0, 97, (2, 6)), "bar": rng.integers(0, 17, (2, 6))}
    inputs = {k: v.astype(np.int32) for k, v in inputs.items()}
    keras_logits = np.asarray(model(inputs, training=False))

    def table(name):
        return model.get_layer(name).weights[0].numpy().astype(np.float64)

    back = table("lookback_embedding")[inputs["lookback"]]  # [batch, time, distances, 3]
    x = np.concatenate([table("embedding")[inputs["tokens"]], back[:, :, 0], back[:, :, 1],
                        table("position_embedding")[inputs["position"]],
                        table("bar_embedding")[inputs["bar"]]], axis=-1)
    assert x.shape[-1] == 5 + 2 * 3 + 2 * 2
    W, U, b, b_rh = textbook_weights(model.get_layer("gru_0"), reset_after)
    kernel, bias = (w.numpy() for w in model.get_layer("logits").weights)
    np.testing.assert_allclose(keras_logits, textbook_gru(x, W, U, b, reset_after, b_rh) @ kernel
                               + bias, atol=1e-4)


@pytest.mark.parametrize("reset_after", [True, False])
def test_numpy_cell_is_the_textbook_gru(reset_after):
    """The sampler's cell (melody.sample.network) against the equations themselves, no Keras."""
    from melody.sample.network import GRULayer

    rng = np.random.default_rng(3)
    inputs, units = 5, 6
    kernel = rng.normal(size=(inputs, 3 * units)).astype(np.float32)
    recurrent = rng.normal(size=(units, 3 * units)).astype(np.float32)
    bias = rng.normal(size=(2, 3 * units) if reset_after else 3 * units).astype(np.float32)
    cell = GRULayer(kernel, recurrent, bias[0] if reset_after else bias,
                    bias[1] if reset_after else None, reset_after)
    x = rng.normal(size=(3, 8, inputs)).astype(np.float32)
    h, ours = np.zeros((3, units), np.float32), []
    for t in range(x.shape[1]):
        h = cell.step(x[:, t] @ cell.kernel + cell.bias, h)
        ours.append(h)
    W, U, b, b_rh = textbook_form(kernel, recurrent, bias, reset_after)
    expected = textbook_gru(x.astype(np.float64), W, U, b, reset_after, b_rh)
    np.testing.assert_allclose(np.stack(ours, axis=1), expected, atol=1e-5)


def test_the_copy_gate_mixes_the_network_with_the_tokens_bars_back():
    """Output: log of g0 * softmax(logits) + the sum over distances k of g_k * [token is
    the one k bars back], g the softmax of the gate with distances that hold nothing shut."""
    cfg = ModelConfig(vocab_size=11, embedding=5, units=7, layers=1, lookback=(1, 4),
                      lookback_embedding=3, position_embedding=2, dropout=0.0)
    model = build_model(cfg)
    rng = np.random.default_rng(5)
    for w in model.weights:
        w.assign(rng.normal(scale=0.5, size=w.shape).astype(np.float32))
    lookback = np.array([[[3, 11], [11, 11], [4, 4]]], np.int32)  # 11: nothing there
    inputs = {"tokens": np.array([[1, 2, 3]], np.int32), "lookback": lookback,
              "position": np.zeros((1, 3), np.int32), "bar": np.zeros((1, 3), np.int32)}
    out = np.exp(np.asarray(model(inputs, training=False))[0])
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    hidden = __import__("keras").Model(model.inputs, model.get_layer("gru_0").output)(inputs)[0]
    hidden = np.asarray(hidden, np.float64)
    kernel, bias = (w.numpy() for w in model.get_layer("logits").weights)
    gate_kernel, gate_bias = (w.numpy() for w in model.get_layer("copy_gate").weights)
    for t in range(3):
        gate = hidden[t] @ gate_kernel + gate_bias
        gate[1:][lookback[0, t] == 11] = -np.inf
        g = np.exp(gate - gate.max())
        g /= g.sum()
        logits = hidden[t] @ kernel + bias
        expected = g[0] * np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        for k in range(2):
            if lookback[0, t, k] < 11:
                expected[lookback[0, t, k]] += g[1 + k]
        np.testing.assert_allclose(out[t], expected, atol=1e-5)
    assert out[1].max() < 0.99  # with nothing to copy, the network's own distribution


def test_config_round_trip():
    cfg = ModelConfig(vocab_size=364, embedding=8, units=16, layers=3, dropout=0.0,
                      reset_after=False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_config_refuses_unknown_key():
    data = dict(ModelConfig(vocab_size=10).to_dict(), attention=True)
    with pytest.raises(ValueError, match="unknown model settings: attention"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize("field,value,message", [
    ("units", 0, "units must be at least 1, got 0"),
    ("dropout", 1.0, r"dropout must be in range \[0, 1\), got 1.0"),
])
def test_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{"vocab_size": 10, field: value})


def test_flops_counts_every_matmul():
    cfg = ModelConfig(vocab_size=10, embedding=4, units=8, layers=2, lookback=())
    gru_0 = 2 * 3 * (4 + 8) * 8
    gru_1 = 2 * 3 * (8 + 8) * 8
    assert flops_per_token(cfg) == gru_0 + gru_1 + 2 * 8 * 10
    params = build_model(cfg).count_params()
    assert flops_per_token(cfg) < 2 * params  # the embedding lookup costs nothing
    with_context = ModelConfig(vocab_size=10, embedding=4, units=8, layers=2, lookback=(1, 2),
                               lookback_embedding=3, position_embedding=2)
    wider = 2 * 3 * (4 + 2 * 3 + 2 * 2 + 8) * 8
    gate = 2 * 8 * 3 + 4 * 10  # three gates from the last state; mixing in the copies
    assert flops_per_token(with_context) == wider + gru_1 + 2 * 8 * 10 + gate
