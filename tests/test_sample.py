"""The NumPy sampler: Keras equivalence, the logits filter, and every constraint it promises."""

from pathlib import Path

import numpy as np
import pytest
from conftest import randomised

from melody.model import ModelConfig, build_model
from melody.modelfolder import ModelFolder, save_model_folder
from melody.notes import Key, Melody
from melody.sample import SampleConfig, draw, key_prior, next_token_probs, sample
from melody.tokenizer import BAR, BOS, EOS, Tokenizer

TOK = Tokenizer()


def random_model_folder(folder, reset_after: bool, layers: int, seed: int = 0, lookback=()):
    """(keras model, folder) of a tiny GRU with random weights, saved as a model folder."""
    cfg = ModelConfig(vocab_size=TOK.vocab_size, embedding=8, units=16, layers=layers,
                      reset_after=reset_after, lookback=lookback, lookback_embedding=4,
                      position_embedding=3)
    model = randomised(build_model(cfg), seed)
    save_model_folder(folder, model, TOK, {"model": cfg.to_dict()})
    return model, folder


@pytest.fixture(scope="module", params=[(True, ()), (False, ()), (True, (1, 2, 4, 8)),
                                        (False, (1, 4))],
                ids=["reset_after", "textbook", "reset_after-context", "textbook-context"])
def tiny(request, tmp_path_factory):
    """(keras model, folder) of a tiny 2-layer GRU with random weights."""
    reset_after, lookback = request.param
    return random_model_folder(tmp_path_factory.mktemp("model"), reset_after, layers=2,
                               lookback=lookback)


@pytest.fixture(scope="module")
def gru(tiny):
    return ModelFolder(tiny[1]).network


def random_context(gru, rng, shape):
    """Any ids the context inputs take (None for a model without form context)."""
    if not gru.lookback:
        return None
    return (rng.integers(0, TOK.vocab_size + 1, shape + (gru.lookback,)),
            rng.integers(0, 97, shape), rng.integers(0, 17, shape))


@pytest.mark.parametrize("lookback", [(), (1, 2, 4, 8)], ids=["tokens", "context"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "textbook"])
def test_numpy_logits_equal_keras_for_a_whole_sequence(reset_after, layers, lookback, tmp_path):
    """The weights read from model.keras, run one step at a time with the state
    carried, give Keras's logits: every kernel and every bias in its place."""
    model, folder = random_model_folder(tmp_path, reset_after, layers, seed=layers,
                                        lookback=lookback)
    gru = ModelFolder(folder).network
    assert len(gru.layers) == layers and all(g.reset_after == reset_after for g in gru.layers)
    # Every bias is non-zero, so one read from the wrong place changes the logits.
    biases = [g.bias for g in gru.layers] + [gru.logits_bias]
    biases += [g.recurrent_bias for g in gru.layers if reset_after]
    assert all(np.abs(b).min() > 0 for b in biases)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, TOK.vocab_size, size=(3, 40))
    context = random_context(gru, rng, (3, 40))
    inputs = tokens if context is None else dict(zip(("tokens", "lookback", "position", "bar"),
                                                     (tokens, *context)))
    expected = model.predict(inputs, verbose=0)
    got, _ = gru.run(tokens, context=context)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_state_carries_across_calls(gru):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, TOK.vocab_size, size=(2, 12))
    context = random_context(gru, rng, (2, 12))

    def part(c, s):
        return None if c is None else tuple(a[:, s] for a in c)

    whole, _ = gru.run(tokens, context=context)
    first, state = gru.run(tokens[:, :5], context=part(context, slice(0, 5)))
    rest, _ = gru.run(tokens[:, 5:], state, context=part(context, slice(5, None)))
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), whole, atol=1e-6)


# -- the one place logits become probabilities ---------------------------------------


def test_masked_tokens_get_zero_probability():
    logits = np.array([[5.0, 1.0, 0.0, -1.0]])
    allowed = np.array([[False, True, True, False]])
    probs = next_token_probs(logits, allowed)
    assert probs[0, 0] == 0 and probs[0, 3] == 0
    np.testing.assert_allclose(probs.sum(), 1.0)


def test_temperature_sharpens_and_flattens():
    logits = np.array([[2.0, 1.0, 0.0]])
    allowed = np.ones_like(logits, bool)
    cold = next_token_probs(logits, allowed, temperature=0.1)
    hot = next_token_probs(logits, allowed, temperature=10.0)
    assert cold[0, 0] > 0.99
    assert hot.max() - hot.min() < 0.1


def test_top_k_keeps_the_k_most_likely_allowed():
    logits = np.array([[9.0, 4.0, 3.0, 2.0, 1.0]])
    allowed = np.array([[False, True, True, True, True]])
    probs = next_token_probs(logits, allowed, top_k=2)
    assert (probs[0] > 0).tolist() == [False, True, True, False, False]


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    allowed = np.ones_like(logits, bool)
    assert (next_token_probs(logits, allowed, top_p=0.7)[0] > 0).sum() == 2
    assert (next_token_probs(logits, allowed, top_p=0.75)[0] > 0).sum() == 2
    assert (next_token_probs(logits, allowed, top_p=0.85)[0] > 0).sum() == 3
    assert (next_token_probs(logits, allowed, top_p=0.1)[0] > 0).sum() == 1


def test_draw_never_picks_a_zero_probability_token():
    probs = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]] * 1000)
    picks = draw(probs, np.random.default_rng(0).random(1000))
    assert set(picks.tolist()) == {1, 3}


# -- sampling ---------------------------------------------------------------------------


def _position_at_bars(tokens):
    """Time position of each BAR token."""
    steps = np.cumsum(TOK.steps_of(tokens))
    return [int(steps[i]) for i, t in enumerate(tokens) if t == BAR]


def _canonical(tokens):
    """Tokens without the closing rests and bar lines before EOS."""
    tokens = list(tokens)[:-1]
    while tokens and (tokens[-1] == BAR or TOK.is_rest(tokens[-1])):
        tokens.pop()
    return tokens


CONFIGS = [
    SampleConfig(n=6, seed=1),
    SampleConfig(n=6, notes=12, seed=2, temperature=0.7),
    SampleConfig(n=6, bars=3, seed=3, top_k=20),
    SampleConfig(n=6, bars=2, seed=4, top_p=0.9, key="Bbm", lowest=55, highest=79),
    SampleConfig(n=6, notes=20, seed=5, key="E", temperature=1.5),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"seed{c.seed}")
def test_every_sampled_sequence_is_what_the_tokenizer_writes(gru, config):
    for tokens in sample(gru, TOK, config):
        assert tokens[0] == BOS and tokens[-1] == EOS
        assert TOK.is_valid(tokens)
        # Re-encoding the decoded melody gives the same tokens: BAR exactly on
        # bar lines, rests split as the tokenizer splits them.
        assert _canonical(TOK.encode(TOK.decode(tokens))) == _canonical(tokens)


def test_bars_end_exactly_on_the_bar_line(gru):
    for bars in (1, 4):
        for tokens in sample(gru, TOK, SampleConfig(n=6, bars=bars, seed=bars)):
            melody = TOK.decode(tokens)
            bar = melody.bar_steps
            assert bar is not None, "--bars needs a meter"
            phase = melody.bar_phase
            assert 0 <= phase < bar  # a pickup is shorter than a bar
            end = int(TOK.steps_of(tokens).sum())
            assert end == phase + bars * bar
            assert melody.end <= end
            lines = _position_at_bars(tokens)
            assert lines[-1] == end and tokens[-2] == BAR
            assert len(lines) == bars + 1


def test_notes_count_is_respected(gru):
    counts = [TOK.decode(t).n_notes for t in sample(gru, TOK, SampleConfig(n=8, notes=7, seed=9))]
    assert max(counts) == 7 and min(counts) >= 1


def test_default_length_is_64_notes(gru):
    counts = [TOK.decode(t).n_notes for t in sample(gru, TOK, SampleConfig(n=3, seed=3))]
    assert max(counts) == 64


def test_metered_melodies_end_on_a_bar_line(gru):
    melodies = [(t, TOK.decode(t)) for t in sample(gru, TOK, SampleConfig(n=8, notes=5, seed=11))]
    metered = [(tokens, m) for tokens, m in melodies if m.bar_steps]
    assert metered, "no melody with a meter was sampled"
    for tokens, melody in metered:
        end = int(TOK.steps_of(tokens).sum())
        assert tokens[-2] == BAR
        assert (end - melody.bar_phase) % melody.bar_steps == 0


def test_key_forces_the_key_token_scale_and_final_tonic(gru):
    for key_name in ("D", "F#m", "Bb"):
        key = Key.parse(key_name)
        for bars in (None, 2):
            config = SampleConfig(n=6, seed=7, key=key_name, bars=bars, notes=None if bars else 16)
            for tokens in sample(gru, TOK, config):
                assert tokens[1] == TOK.key_id(key)
                melody = TOK.decode(tokens)
                assert set((melody.pitches % 12).tolist()) <= key.scale_pitch_classes()
                assert melody.pitches[-1] % 12 == key.tonic


def test_range_holds(gru):
    config = SampleConfig(n=8, notes=30, seed=4, lowest=60, highest=67)
    for tokens in sample(gru, TOK, config):
        pitches = TOK.decode(tokens).pitches
        assert pitches.min() >= 60 and pitches.max() <= 67


def test_impossible_range_and_key_is_an_error(gru):
    with pytest.raises(ValueError, match="no pitch in D between lowest 60 and highest 60"):
        sample(gru, TOK, SampleConfig(n=1, key="D", lowest=60, highest=60))


def test_same_seed_same_tokens_different_seed_different(gru):
    a = sample(gru, TOK, SampleConfig(n=3, notes=16, seed=42))
    b = sample(gru, TOK, SampleConfig(n=3, notes=16, seed=42))
    c = sample(gru, TOK, SampleConfig(n=3, notes=16, seed=43))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_primer_is_kept_and_continued(gru):
    primer_melody = Melody([60, 62, 64, 65], [0, 12, 24, 36], [12, 12, 12, 12],
                           time_signature=(3, 4), key=Key.parse("C"))
    primer = TOK.encode(primer_melody)[:-1]

    def continued(config):
        for tokens in sample(gru, TOK, config, primer=primer):
            assert np.array_equal(tokens[:len(primer)], primer)
            melody = TOK.decode(tokens)
            assert melody.time_signature == (3, 4)
            assert melody.pitches[:4].tolist() == [60, 62, 64, 65]
            assert melody.onsets[:4].tolist() == [0, 12, 24, 36]
            assert melody.n_notes >= 5
            yield tokens, melody

    for _, melody in continued(SampleConfig(n=4, seed=1, notes=8)):
        assert melody.n_notes <= 12
    # the primer ends mid-bar (48; bars of 36): that bar counts as one of the two
    for tokens, _ in continued(SampleConfig(n=4, seed=1, bars=2)):
        assert int(TOK.steps_of(tokens).sum()) == 72 + 36


@pytest.mark.parametrize("key_name", ["D", "Gm"])
def test_key_forces_its_token_and_scale(tiny, key_name):
    """Key and scale masks hold (music21's analysis of the shipped model: test_pretrained.py)."""
    folder = tiny[1]
    tok = Tokenizer.load(Path(folder) / "tokenizer.json")
    key = Key.parse(key_name)
    melodies = [tok.decode(t) for t in sample(ModelFolder(folder).network, tok,
                                              SampleConfig(n=10, seed=0, key=key_name))]
    for m in melodies:
        assert m.key == key
        assert set((m.pitches % 12).tolist()) <= key.scale_pitch_classes()


def test_key_prior_replaces_the_models_choice_of_key(gru):
    """Without --key, melodies take the keys of the training collection (stored with the model)."""
    prior = key_prior({"key_prior": {"KEY_G": 0.75, "KEY_Em": 0.25}}, TOK)
    keys = [TOK.decode(t).key.name for t in sample(gru, TOK, SampleConfig(n=40, notes=4, seed=0),
                                                  key_logp=prior)]
    assert set(keys) == {"G", "Em"}
    assert 20 <= keys.count("G") <= 38
    assert key_prior({}, TOK) is None
