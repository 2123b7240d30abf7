"""evaluate and the n-gram baseline: same tokens, sane numbers, probabilities that add up."""

import json
import shutil

import numpy as np
import pytest
from conftest import TINY, TOK, make_dataset, run_cli, tiny_model, write_midi_tunes

from melody.data import TokenData, load_dataset
from melody.ngram import NGram, bits_per_token, fit_best


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny", pieces=80, seed=1)


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    code, result, err = run_cli("train", "--data", dataset, "--out", out, *TINY,
                                "--epochs", 2, "--steps-per-epoch", 30, "--json")
    assert code == 0, err
    return out, result


@pytest.fixture(scope="module")
def evaluated(model, dataset):
    code, result, err = run_cli("evaluate", "--model", model[0], "--data", dataset,
                                "--samples", 0, "--json")
    assert code == 0, err
    return result


# -- the command ----------------------------------------------------------------------------
def test_json_keys(evaluated):
    rates = {"bits_per_token", "bits_per_note", "pitch_bits_per_note"}
    assert rates <= set(evaluated["model"])
    assert rates | {"order"} <= set(evaluated["baseline"])
    assert {"notes", "pieces"} <= set(evaluated)


def test_counts_are_the_validation_split(evaluated, dataset):
    ds = load_dataset(dataset)
    val = ds.split("val")
    assert evaluated["pieces"] == len(val)
    assert evaluated["notes"] == int(ds.tokenizer.is_pitch(np.asarray(val.tokens)).sum())
    assert evaluated["tokens"] == len(val.tokens) - len(val)  # each piece's BOS is given


def test_rates_agree_with_each_other_and_with_training(evaluated, model):
    for side in ("model", "baseline"):
        r = evaluated[side]
        per_note = r["bits_per_token"] * evaluated["tokens"] / evaluated["notes"]
        assert r["bits_per_note"] == pytest.approx(per_note)
        assert 0 < r["pitch_bits_per_note"] < r["bits_per_note"]
    assert evaluated["model"]["bits_per_note"] == pytest.approx(model[1]["val_bits_per_note"],
                                                                rel=1e-4)


def test_ngram_learns_the_repetitive_corpus(evaluated, dataset):
    # The tunes repeat motifs: a long context predicts them well.
    assert evaluated["baseline"]["order"] >= 3
    assert evaluated["baseline"]["bits_per_token"] < 1.0


def test_music_files_are_all_scored(model, tmp_path):
    folder = tmp_path / "midi"
    write_midi_tunes(folder, 3)
    code, result, err = run_cli("evaluate", "--model", model[0], "--data", folder,
                                "--samples", 0, "--json")
    assert code == 0, err
    assert result["pieces"] == 3
    assert result["notes"] > 3 * 10
    assert result["baseline"]["bits_per_note"] > 0


def test_missing_training_data_means_no_baseline(model, dataset, tmp_path):
    folder = tmp_path / "moved"
    shutil.copytree(model[0], folder)
    config = json.loads((folder / "config.json").read_text())
    config["data"]["folder"] = str(tmp_path / "gone")
    (folder / "config.json").write_text(json.dumps(config))
    code, result, err = run_cli("evaluate", "--model", folder, "--data", dataset,
                                "--samples", 0, "--json")
    assert code == 0, err
    assert result["baseline"] is None and "not available" in result["baseline_note"]
    assert result["model"]["bits_per_note"] > 0


def test_missing_model_is_one_line(tmp_path):
    code, _, err = run_cli("evaluate", "--model", tmp_path / "nothing", "--samples", 0)
    assert code == 2 and "model folder not found" in err
    assert len(err.strip().splitlines()) == 1


def test_padding_never_changes_a_score(model, dataset):
    from melody.modelfolder import ModelFolder
    from melody.scoring import ModelScorer

    folder = ModelFolder(model[0])
    keras_model, lookback = folder.keras_model(), folder.model_config.lookback
    ds = load_dataset(dataset)
    val = ds.split("val")
    together = ModelScorer(keras_model, ds.tokenizer, lookback).score(val)
    alone = ModelScorer(keras_model, ds.tokenizer, lookback, max_batch=1).score(val)
    assert together.pieces == alone.pieces == len(val)
    assert together.nll_bits == pytest.approx(alone.nll_bits, rel=1e-5)
    assert together.pitch_nll_bits == pytest.approx(alone.pitch_nll_bits, rel=1e-5)


# -- the rates, computed here without melody.scoring --------------------------------------------
def rates_by_hand(pieces, nll_bits_of) -> dict:
    """The three rates from per-token NLL in bits (``nll_bits_of(piece)``: one per token
    after BOS), counting tokens and notes here."""
    total = pitch = tokens = notes = 0.0
    for piece in pieces:
        nll = nll_bits_of(piece)
        assert len(nll) == len(piece) - 1  # every token but the given BOS is predicted
        is_pitch = np.array([TOK.names[t].startswith("PITCH_") for t in piece[1:]])
        total, pitch = total + nll.sum(), pitch + nll[is_pitch].sum()
        tokens, notes = tokens + len(nll), notes + is_pitch.sum()
    return {"bits_per_token": total / tokens, "bits_per_note": total / notes,
            "pitch_bits_per_note": pitch / notes, "tokens": tokens, "notes": notes}


def assert_rates(result: dict, expected: dict) -> None:
    for rate in ("bits_per_token", "bits_per_note", "pitch_bits_per_note"):
        assert result[rate] == pytest.approx(expected[rate], rel=1e-5), rate


def test_a_model_of_known_probabilities_scores_what_they_say(dataset, tmp_path):
    """All GRU weights zero keep the state at 0, so the logits are the output bias:
    every token has probability softmax(bias), whatever came before."""
    from melody.model import ModelConfig, build_model

    model = build_model(ModelConfig(vocab_size=TOK.vocab_size, embedding=8, units=16, layers=1,
                                    lookback=()))  # tokens alone: a closed form
    rng = np.random.default_rng(4)
    log_p = rng.normal(scale=2.0, size=TOK.vocab_size)
    log_p -= np.logaddexp.reduce(log_p)
    for layer in model.layers:
        for w in layer.weights:
            zero = layer.name.startswith("gru") or (layer.name == "logits" and w.ndim == 1)
            w.assign(np.zeros(w.shape, np.float32) if zero else
                     rng.normal(size=w.shape).astype(np.float32))
    model.get_layer("logits").weights[1].assign(log_p.astype(np.float32))
    folder = tiny_model(tmp_path / "known", model=model, lookback=())
    code, result, err = run_cli("evaluate", "--model", folder, "--data", dataset,
                                "--samples", 0, "--json")
    assert code == 0, err
    val = list(load_dataset(dataset).split("val").pieces())
    expected = rates_by_hand(val, lambda piece: -log_p[piece[1:]] / np.log(2))
    assert_rates(result["model"], expected)
    assert (result["tokens"], result["notes"], result["pieces"]) == (
        expected["tokens"], expected["notes"], len(val))


def test_rates_are_the_models_predictions_summed_by_hand(evaluated, model, dataset):
    """Each validation piece scored on its own from model.predict, then summed here."""
    from melody.context import piece_context
    from melody.modelfolder import ModelFolder

    folder = ModelFolder(model[0])
    keras_model, lookback = folder.keras_model(), folder.model_config.lookback
    assert lookback  # the model reads its form context: built here from each piece

    def nll_bits(piece):
        tokens = piece[None, :-1].astype(np.int32)
        back, position, bar = (c[None] for c in piece_context(piece[:-1], TOK, lookback))
        inputs = {"tokens": tokens, "lookback": back, "position": position, "bar": bar}
        logits = keras_model.predict(inputs, verbose=0)[0]
        log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return -log_p[np.arange(len(piece) - 1), piece[1:]] / np.log(2)

    val = list(load_dataset(dataset).split("val").pieces())
    expected = rates_by_hand(val, nll_bits)
    assert_rates(evaluated["model"], expected)
    assert (evaluated["tokens"], evaluated["notes"]) == (expected["tokens"], expected["notes"])


# -- the n-gram --------------------------------------------------------------------------------
CORPUS = [np.array([1, 5, 6, 7, 5, 6, 7, 5, 6, 2]), np.array([1, 5, 6, 7, 8, 2])] * 5


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("context", [[], [1], [1, 5], [5, 6], [9, 9, 9], [8, 2, 1]])
def test_kneser_ney_probabilities_sum_to_one(order, context):
    lm = NGram.fit(CORPUS, vocab_size=12, max_order=4)
    p = lm.distribution(context, order)
    assert p.shape == (12,)
    assert p.sum() == pytest.approx(1.0)
    assert (p > 0).all()  # never certain: unseen tokens keep some probability


def test_scoring_uses_the_same_probabilities_as_distribution():
    lm = NGram.fit(CORPUS, vocab_size=12, max_order=3)
    piece = np.array([1, 5, 6, 8, 2])
    nll, targets = lm.nll_bits([piece], order=3)
    np.testing.assert_array_equal(targets, piece[1:])
    for i, target in enumerate(piece[1:], start=1):
        expected = -np.log2(lm.distribution(piece[:i].tolist(), 3)[target])
        assert nll[i - 1] == pytest.approx(expected)


P, D, R = TOK.ids["PITCH_60"], TOK.ids["DUR_12"], TOK.ids["REST_7"]
V = TOK.vocab_size


def test_kneser_ney_by_hand():
    """One training piece BOS P D P D EOS, order 2, counted by hand.

    Unigram level, continuation counts (distinct tokens seen before each
    target): P 2 (BOS, D), D 1 (P; twice, but after the same token), EOS 1;
    total 4, 3 distinct, counts of 1 twice and of 2 once: discount
    2 / (2 + 2 * 1) = 1/2. Bigram level, raw counts: BOS P 1, P D 2, D P 1,
    D EOS 1: discount 3 / (3 + 2 * 1) = 0.6.
    """
    from melody.scoring import score_ngram

    lm = NGram.fit([np.array([1, P, D, P, D, 2])], vocab_size=V, max_order=2)
    uni = {P: 1.5 / 4 + 0.375 / V, D: 0.5 / 4 + 0.375 / V, 2: 0.5 / 4 + 0.375 / V, R: 0.375 / V}
    p = [0.6 * uni[R],  # BOS -> R: BOS seen once (1 follower), R never after it
         uni[P],  # R -> P: a context never seen passes the unigram on
         1.4 / 2 + 0.6 * 1 / 2 * uni[D],  # P -> D: P seen twice, one distinct follower
         0.4 / 2 + 0.6 * 2 / 2 * uni[P],  # D -> P: D seen twice, two distinct followers
         0.6 * 1 / 2 * uni[2]]  # P -> EOS: never seen after P
    piece = np.array([1, R, P, D, P, 2])
    nll, targets = lm.nll_bits([piece], order=2)
    np.testing.assert_array_equal(targets, piece[1:])
    by_hand = -np.log2(p)
    np.testing.assert_allclose(nll, by_hand, rtol=1e-12)
    report = score_ngram(lm, 2, TokenData.from_pieces([piece]), TOK).report()
    assert report["bits_per_token"] == pytest.approx(by_hand.sum() / 5, rel=1e-12)
    assert report["bits_per_note"] == pytest.approx(by_hand.sum() / 2, rel=1e-12)
    assert report["pitch_bits_per_note"] == pytest.approx((by_hand[1] + by_hand[3]) / 2, rel=1e-12)


def test_evaluate_baseline_is_the_ngram_of_the_training_split_on_the_scored_tokens(
        evaluated, dataset):
    ds = load_dataset(dataset)
    order = evaluated["baseline"]["order"]
    lm = NGram.fit(list(ds.split("train").pieces()), ds.tokenizer.vocab_size, order)
    val = list(ds.split("val").pieces())
    assert_rates(evaluated["baseline"], rates_by_hand(val, lambda p: lm.nll_bits([p], order)[0]))


def test_longer_context_beats_unigram_on_a_repetitive_corpus():
    rng = np.random.default_rng(0)
    motif = [10, 12, 14, 12, 10, 7]
    pieces = [np.array([1] + motif * int(rng.integers(2, 6)) + [2]) for _ in range(40)]
    lm, order, held_out = fit_best(pieces, vocab_size=20, max_order=6)
    assert order > 1
    assert held_out[order] < 0.5 * held_out[1]
    assert bits_per_token(lm, pieces[:5], order) < bits_per_token(
        NGram.fit(pieces, 20, 1), pieces[:5], 1)


def test_order_out_of_range_is_refused():
    lm = NGram.fit(CORPUS, vocab_size=12, max_order=2)
    with pytest.raises(ValueError, match="order must be in range 1..2, got 3"):
        lm.distribution([5], 3)


# -- musicality and originality of sampled melodies ------------------------------------------
@pytest.fixture(scope="module")
def with_samples(model, dataset, tmp_path_factory):
    png = tmp_path_factory.mktemp("png") / "stats.png"
    code, result, err = run_cli("evaluate", "--model", model[0], "--data", dataset,
                                "--samples", 6, "--seed", 3, "--png", png, "--json")
    assert code == 0, err
    return result, err, png


def test_samples_give_every_feature_and_originality_side_by_side(with_samples, model):
    from melody.musicality import FEATURES

    result, err, png = with_samples
    assert set(result["musicality"]) == set(FEATURES)
    for stats in result["musicality"].values():
        assert 0.0 <= stats["overlap"] <= 1.0 and stats["kl"] >= 0.0
    origin = result["originality"]
    assert origin["index"] == str(model[0] / "originality.npz")  # written by train
    for side, count in (("generated", 6), ("human", result["pieces"])):
        assert origin[side]["melodies"] == count
        assert {"mean", "median", "p95"} <= set(origin[side]["longest_run"])
        assert 0.0 <= origin[side]["flagged"] <= 1.0
    # the tiny corpus repeats three motifs, so human pieces share long runs with training
    assert origin["human"]["longest_run"]["median"] >= 8
    sets = result["musicality_sets"]
    assert (sets["generated"], sets["human"]) == (6, result["pieces"])
    assert "pitch_classes" in err and "flagged (> human p95)" in err  # the text tables


def test_png_is_written_where_asked(with_samples):
    result, _, png = with_samples
    assert result["png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_statistics(with_samples, model, dataset):
    code, again, err = run_cli("evaluate", "--model", model[0], "--data", dataset,
                               "--samples", 6, "--seed", 3, "--json")
    assert code == 0, err
    assert again["musicality"] == with_samples[0]["musicality"]
    assert "png" not in again


def test_sampled_melodies_are_as_long_as_their_drawn_pieces(model):
    from melody.modelfolder import ModelFolder
    from melody.musicality import sample_melodies
    from melody.musicality.form import bar_plan

    notes, bars = np.array([2, 5, 9, 30, 8]), np.array([0, 0, 0, 3, 2])  # 0: no meter
    melodies, cut = sample_melodies(ModelFolder(model[0]), notes, bars, seed=0)
    counts = [m.n_notes for m in melodies]
    assert all(1 <= n <= cap for n, cap in zip(counts[:3], notes))  # as many notes at most
    for m, b in zip(melodies[3:], bars[3:]):  # as many bars, with a meter, ending on its line
        assert m.time_signature is not None and 1 <= len(bar_plan(m)) <= b
    # a melody stopped at its notes has exactly that many (one may also end there by itself)
    assert cut * len(notes) <= sum(n == cap for n, cap in zip(counts[:3], notes))
    for m in melodies:  # still a melody: notes in order, never overlapping
        assert (np.diff(m.onsets) >= m.durations[:-1]).all()


def test_no_samples_no_report(model, dataset):
    from melody.modelfolder import ModelFolder
    from melody.musicality import evaluate_report

    data = load_dataset(dataset).split("val")
    assert evaluate_report(ModelFolder(model[0]), data, samples=0, seed=0) == {}


def test_originality_without_its_file(model, dataset, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(model[0], folder)
    (folder / "originality.npz").unlink()
    code, result, err = run_cli("evaluate", "--model", folder, "--data", dataset,
                                "--samples", 3, "--json")
    assert code == 0, err
    train_pieces = len(load_dataset(dataset).split("train"))
    built = f"built from {train_pieces} training pieces of {dataset}"
    assert result["originality"]["index"] == built

    config = json.loads((folder / "config.json").read_text())
    config["data"]["folder"] = str(tmp_path / "gone")
    (folder / "config.json").write_text(json.dumps(config))
    code, result, err = run_cli("evaluate", "--model", folder, "--data", dataset,
                                "--samples", 3, "--json")
    assert code == 0, err
    assert "originality" not in result and "not available" in result["originality_note"]
    assert set(result["musicality"]) and "no originality check" in err


@pytest.mark.parametrize("flags, message", [
    (["--samples", "1"], "--samples must be 0 (skip) or at least 2"),
    (["--samples", "0", "--png", "x.png"], "--png draws the musicality statistics"),
])
def test_musicality_flags_are_checked_first(model, flags, message):
    code, _, err = run_cli("evaluate", "--model", model[0], *flags)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1
