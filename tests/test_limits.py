"""Absurd numbers, as a new user types them or a file holds them: every one is refused
before any work starts, in one line naming the flag (or setting), the bound and the
value; every positive temperature samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import TOK, run

from melody import config
from melody.config import ModelConfig, PrepareConfig, SampleConfig, TrainConfig
from melody.errors import UsageError
from melody.generation import generate
from melody.modelfolder import ModelFolder
from melody.notes import Key, Melody
from melody.sample.sampler import next_token_probs

ABSURD = [
    ("generate", ["-n", "1000000000"], "-n/--count", "at most 1000"),
    ("generate", ["--notes", "1000000"], "--notes", "at most 2000"),
    ("generate", ["--bars", "1000000"], "--bars", "at most 500"),
    ("generate", ["-n", "100", "--notes", "2000"], "--notes", "at most 100000 per call"),
    ("generate", ["-n", "1000", "--bars", "26"], "--bars", "at most 25000 per call"),
    ("generate", ["--tempo", "3"], "--tempo", "[10, 1000]"),
    ("generate", ["--tempo", "1e9"], "--tempo", "[10, 1000]"),
    ("generate", ["--seed", str(2**32)], "--seed", "at most 4294967295"),
    ("generate", ["--seed", "9" * 40], "--seed", "at most 4294967295"),
    ("generate", ["--temperature", "1e999"], "--temperature", "finite"),
    ("generate", ["--name", "x" * 121], "--name", "at most 120 bytes"),
    ("generate", ["--name", "tab\there"], "--name", "control characters"),
    ("generate", ["--program", "-1"], "--program", "0..127"),
    ("train", ["--units", "5000"], "--units", "at most 4096"),
    ("train", ["--layers", "17"], "--layers", "at most 16"),
    ("train", ["--epochs", "1000000"], "--epochs", "at most 10000"),
    ("train", ["--seq-len", "100000"], "--seq-len", "at most 8192"),
    ("train", ["--batch-size", "100000"], "--batch-size", "at most 8192"),
    ("train", ["--steps-per-epoch", "10000000"], "--steps-per-epoch", "at most 1000000"),
    ("train", ["--learning-rate", "1e300"], "--learning-rate", "(0, 1]"),
    ("train", ["--seed", str(2**40)], "--seed", "at most 4294967295"),
    ("train", ["--allow-data-change"], "--allow-data-change", "only applies with --resume"),
    ("prepare", ["--jobs", "1000"], "--jobs", "at most 64"),
    ("prepare", ["--timeout", "1e9"], "--timeout", "[0.1, 3600]"),
    ("prepare", ["--seed", "-5"], "--seed", "at least 0"),
    ("evaluate", ["--samples", "1000000"], "--samples", "at most 1000"),
    ("evaluate", ["--seed", str(2**33)], "--seed", "at most 4294967295"),
    ("render", ["a.mid", "--timeout", "0"], "--timeout", "[0.1, 3600]"),
]


@pytest.mark.parametrize("command, argv, flag, bound", ABSURD,
                         ids=[f"{c} {' '.join(a)[:30]}" for c, a, _, _ in ABSURD])
def test_absurd_values_are_one_line_naming_flag_bound_and_value(command, argv, flag, bound,
                                                                capsys, tmp_path):
    code, out, err = run(capsys, command, *argv, "--out", tmp_path / "out")
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert flag in err and bound in err, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_help_says_every_ceiling_that_protects_the_machine(capsys):
    _, out, _ = run(capsys, "generate", "--help")
    text = " ".join(out.split())
    for ceiling in ("1..1000", "1..2000", "1..500", "10..1000", "0..4294967295",
                    "-n x --notes at most 100000", "-n x --bars at most 25000"):
        assert ceiling in text, ceiling
    _, out, _ = run(capsys, "train", "--help")
    assert "50,000,000 weights" in " ".join(out.split()) and "1..4096" in out


@pytest.mark.parametrize("make, message", [
    (lambda: SampleConfig(n=10**9), "n must be at most 1000"),
    (lambda: SampleConfig(n=100, notes=2000), "n x notes must be at most 100000"),
    (lambda: SampleConfig(seed=-1), "seed must be at least 0"),
    (lambda: SampleConfig(temperature=math.inf), "temperature must be a finite number"),
    (lambda: SampleConfig(temperature=math.nan), "temperature must be a finite number"),
    (lambda: SampleConfig(lowest=80, highest=70), "lowest 80 is above highest 70"),
    (lambda: SampleConfig(key_balance=-1.0), "key_balance must be in range"),
    (lambda: TrainConfig(batch_size=0), "batch_size must be at least 1"),
    (lambda: TrainConfig(strategy="tpu"), "strategy must be one of"),
    (lambda: TrainConfig(transpose_low=-100), "transpose_low must be at least -12"),
    (lambda: ModelConfig(vocab_size=364, units=4096, layers=16), "at most 50,000,000"),
    (lambda: PrepareConfig(jobs=10**6), "jobs must be at most 64"),
    (lambda: PrepareConfig(timeout=math.inf), "timeout must be in range"),
])
def test_the_python_api_shares_the_ranges(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        make()


def test_the_api_refuses_wrong_types_too():
    with pytest.raises(TypeError, match="n must be a whole number"):
        SampleConfig(n=2.5)
    with pytest.raises(TypeError, match="epochs must be a whole number"):
        TrainConfig(epochs=True)


def test_generate_api_refuses_tempo_program_and_name_before_opening_the_model(tmp_path):
    missing = tmp_path / "no-model"  # opening it would fail: the range check comes first
    for kwargs, says in ((dict(tempo=3.0), "tempo must be in range [10, 1000]"),
                         (dict(tempo=1e9), "tempo must be in range [10, 1000]"),
                         (dict(program=128), "program must be at most 127"),
                         (dict(name="a/b"), "without folders"),
                         (dict(seed=2**63), "seed must be at most 4294967295")):
        with pytest.raises(UsageError, match=says.replace("[", r"\[")):
            generate(missing, tmp_path / "out", n=1, **kwargs)
    assert not (tmp_path / "out").exists()


# -- the temperature ------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [5e-324, 1e-320, 1e-300, 1e-12, 0.5, 1e12, 1e300,
                                         1.7976931348623157e308])
def test_every_positive_temperature_gives_probabilities(temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 30, (3, TOK.vocab_size)).astype(np.float32)
    allowed = rng.random((3, TOK.vocab_size)) < 0.3
    allowed[:, 5] = True
    bias = np.where(rng.random(TOK.vocab_size) < 0.5, -np.inf, rng.normal(0, 2, TOK.vocab_size))
    for top_k, top_p, b in ((None, None, None), (3, None, bias), (None, 0.5, bias)):
        probs = next_token_probs(logits, allowed, temperature, top_k, top_p, b)
        assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0)
        assert (probs[~allowed] == 0).all()


def test_near_zero_temperature_is_greedy_and_ruled_out_tokens_are_a_last_resort():
    logits = np.array([[1.0, 3.0, 2.0, 9.0]])
    allowed = np.array([[True, True, True, False]])
    assert next_token_probs(logits, allowed, 1e-320).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    # A key prior that rules out every allowed token (-inf) cannot give NaN either.
    bias = np.array([-np.inf, -np.inf, -np.inf, 0.0])
    assert np.allclose(next_token_probs(logits, allowed, 1e-320, bias=bias), [[0, 1, 0, 0]])
    nothing = np.full((1, 4), -np.inf)  # the network itself gone wrong
    assert np.allclose(next_token_probs(nothing, allowed, 1.0), [[1 / 3, 1 / 3, 1 / 3, 0]])


def test_the_shipped_model_samples_at_a_vanishing_temperature():
    tunes = ModelFolder().generate(2, notes=12, seed=1, temperature=1e-320, key="D")
    assert [t.n_notes for t in tunes] == [12, 12]
    assert tunes[0].pitches.tolist() == tunes[1].pitches.tolist()  # greedy: the same melody


# -- numbers a file gives ----------------------------------------------------------------


def test_a_primer_out_of_range_is_one_line(capsys, tmp_path, model_folder):
    slow = Melody([60, 62, 64, 65, 67, 65, 64, 62], range(0, 96, 12), [12] * 8,
                  key=Key.parse("C"), tempo=4.0)
    slow.write_midi(tmp_path / "slow.mid")
    code, _, err = run(capsys, "generate", "--model", model_folder, "--primer", tmp_path / "slow.mid",
                       "--out", tmp_path / "out", "-n", 1, "--notes", 6)
    assert code == 2 and err.count("\n") == 1
    assert "its tempo, 4 BPM, is outside 10..1000; give --tempo" in err
    code, _, err = run(capsys, "generate", "--model", model_folder, "--primer", tmp_path / "slow.mid",
                       "--tempo", 90, "--out", tmp_path / "out", "-n", 1, "--notes", 6)
    assert code == 0, err
    n = config.MAX_NOTES + 1
    Melody(np.full(n, 60), np.arange(n) * 3, [3] * n).write_midi(tmp_path / "long.mid")
    code, _, err = run(capsys, "generate", "--model", model_folder, "--primer", tmp_path / "long.mid",
                       "--out", tmp_path / "out2")
    assert code == 2 and f"{n} notes; a primer may have at most {config.MAX_NOTES}" in err


def test_a_wav_too_long_to_make_is_refused_before_anything_is_written(capsys, tmp_path,
                                                                       model_folder, monkeypatch):
    import melody.generation

    monkeypatch.setattr(melody.generation, "MAX_WAV_SECONDS", 0.5)
    code, _, err = run(capsys, "generate", "--model", model_folder, "-n", 2, "--notes", 6,
                       "--wav", "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "--wav writes at most" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_training_settings_that_cannot_fit_in_memory_are_refused_at_once(capsys, tmp_path):
    from conftest import make_dataset

    data = make_dataset(tmp_path / "ds", pieces=20)
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "m",
                       "--batch-size", 8192, "--seq-len", 8192)
    assert code == 2 and err.count("\n") == 1
    assert "needs about" in err and "lower --batch-size or --seq-len" in err
    assert not (tmp_path / "m").exists()
