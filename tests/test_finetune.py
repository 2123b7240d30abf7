"""train --from: a small collection of one's own, starting from a model that already knows music."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, make_dataset, run_cli, tiny_model

from melody.config import FINE_TUNE_LEARNING_RATE, FINE_TUNE_WINDOWS, MIN_WINDOWS, TrainConfig
from melody.data import load_dataset
from melody.modelfolder import ModelFolder
from melody.scoring import ModelScorer

STEPS = ["--seq-len", "32", "--batch-size", "16", "--steps-per-epoch", "8"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny model with random weights (as if trained elsewhere)."""
    folder = tiny_model(tmp_path_factory.mktemp("parent") / "m", units=24, lookback=(1, 2))
    return folder


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "mine", pieces=30, seed=5)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def tuned(parent, mine, tmp_path_factory):
    before = snapshot(parent)
    out = tmp_path_factory.mktemp("tuned") / "m"
    code, result, err = run_cli("train", "--data", mine, "--out", out, "--from", parent,
                                "--epochs", 2, *STEPS, "--json")
    assert code == 0, err
    return out, result, err, before


def test_the_parent_weights_are_where_it_starts(tuned, parent, mine):
    out, result, err, _ = tuned
    history = json.loads((out / "config.json").read_text())["history"]
    folder = ModelFolder(parent)
    scorer = ModelScorer(folder.keras_model(), folder.tokenizer, folder.model_config.lookback)
    expected = scorer.score(load_dataset(mine).split("val")).report()["bits_per_note"]
    assert history[0]["epoch"] == 0 and history[0]["val_bits_per_note"] == pytest.approx(expected)
    assert f"parent {parent}: val bits/note" in err
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_the_architecture_and_tokenizer_are_kept_and_the_parent_named(tuned, parent):
    out = tuned[0]
    child, mother = ModelFolder(out), ModelFolder(parent)
    assert child.model_config == mother.model_config
    assert child.tokenizer == mother.tokenizer
    config = json.loads((out / "config.json").read_text())
    assert config["parent"] == {"folder": str(parent), "weights_digest": mother.weights_digest}
    assert config["train"]["learning_rate"] == FINE_TUNE_LEARNING_RATE  # lower than from scratch
    assert FINE_TUNE_LEARNING_RATE < TrainConfig().learning_rate


def test_fine_tuning_epochs_are_shorter_so_early_stopping_can_catch_it(parent, mine, tmp_path):
    # a model that already knows music overfits 30 tunes within an epoch of 3,200 windows
    from melody.training import Trainer

    ds, folder = load_dataset(mine), ModelFolder(parent)
    cfg = TrainConfig(seq_len=32)
    tuned = Trainer(ds, tmp_path, folder.model_config, cfg, folder)
    scratch = Trainer(ds, tmp_path, folder.model_config, cfg)
    assert tuned.steps == FINE_TUNE_WINDOWS // cfg.batch_size < scratch.steps == MIN_WINDOWS // 32
    assert tuned.cfg.transpose_prob == scratch.cfg.transpose_prob == 1.0  # as much transposed


def test_the_parent_folder_is_never_modified(tuned, parent):
    assert snapshot(parent) == tuned[3]


def test_key_prior_and_originality_come_from_the_new_collection(tuned, mine):
    out = tuned[0]
    config = json.loads((out / "config.json").read_text())
    train = load_dataset(mine).split("train")
    keys = {ModelFolder(out).tokenizer.names[int(train.piece(i)[1])] for i in range(len(train))}
    assert set(config["key_prior"]) == keys
    from melody.musicality.form import bar_plan
    from melody.sample.form import read_forms

    tunes = [ModelFolder(out).tokenizer.decode(p) for p in train.pieces()]
    forms = [(m.n_notes, tuple(plan)) for m in tunes if (plan := bar_plan(m))]
    assert forms and read_forms(config["form_prior"]) == forms  # theirs, not the parent's
    from melody.musicality import load_originality

    index = load_originality(out / "originality.npz")
    melodies = [ModelFolder(out).tokenizer.decode(p) for p in train.pieces()]
    assert int(index.longest_runs(melodies[:1])[0]) == melodies[0].n_notes  # a copy is caught


@pytest.mark.parametrize("flag,value", [("--units", "99"), ("--lookback", "none"),
                                        ("--reset-after", "false")])
def test_flags_that_change_the_architecture_are_refused(parent, mine, tmp_path, flag, value):
    code, _, err = run_cli("train", "--data", mine, "--out", tmp_path / "m", "--from", parent,
                           flag, value, *STEPS)
    assert code == 2 and err.count("\n") == 1 and flag in err and "--from keeps" in err, err
    assert not (tmp_path / "m").exists()


def test_flags_that_keep_the_architecture_are_fine(parent, mine, tmp_path):
    code, result, err = run_cli("train", "--data", mine, "--out", tmp_path / "m", "--from", parent,
                                "--units", "24", "--epochs", 1, *STEPS, "--json")
    assert code == 0, err


def test_fine_tuning_never_ends_worse_than_its_parent(mine, tmp_path):
    """A parent already good on this data, and a learning rate that wrecks the
    weights: the saved model is the parent's."""
    parent = tmp_path / "parent"
    code, _, err = run_cli("train", "--data", mine, "--out", parent, *TINY, "--epochs", 2,
                           "--steps-per-epoch", 30, "--json")
    assert code == 0, err
    out = tmp_path / "m"
    code, result, err = run_cli("train", "--data", mine, "--out", out, "--from", parent,
                                "--learning-rate", "1", "--epochs", 2, "--patience", 2, *STEPS,
                                "--json")
    assert code == 0, err
    history = json.loads((out / "config.json").read_text())["history"]
    assert all(h["val_bits_per_note"] > history[0]["val_bits_per_note"] for h in history[1:])
    assert result["best_epoch"] == 0
    saved = ModelFolder(out).keras_model().get_weights()
    original = ModelFolder(parent).keras_model().get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(saved, original))


def test_from_the_shipped_model(mine, tmp_path):
    code, result, err = run_cli("train", "--data", mine, "--out", tmp_path / "m", "--from",
                                "pretrained", "--epochs", 1, "--seq-len", "16", "--batch-size", "4",
                                "--steps-per-epoch", "2", "--json")
    assert code == 0, err
    assert ModelFolder(tmp_path / "m").model_config == ModelFolder().model_config
    assert len(ModelFolder(tmp_path / "m").generate(2, bars=2, seed=1)) == 2


def test_from_and_resume_together_are_refused(parent, mine, tmp_path):
    code, _, err = run_cli("train", "--data", mine, "--out", tmp_path, "--from", parent, "--resume",
                           *TINY)
    assert code == 2 and "give one of them" in err


def test_a_missing_parent_is_one_line(mine, tmp_path):
    code, _, err = run_cli("train", "--data", mine, "--out", tmp_path / "m", "--from",
                           tmp_path / "nothing")
    assert code == 2 and err.count("\n") == 1 and "model folder not found" in err
