"""train: tiny models, a few steps each; what a user relies on in the model folder."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ROOT,
    TINY,
    dataset_of,
    folk_like_tune,
    make_dataset,
    model_inputs,
    run_cli,
    write_midi_tunes,
)

import melody
from melody.backend import usable_cores
from melody.data import load_dataset
from melody.notes import Key, Melody
from melody.tokenizer import Tokenizer


def spawn(*argv, cwd) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"process ended before {prefix!r}:\n{''.join(seen)}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A tiny model trained for 3 short epochs: (folder, JSON result, stderr)."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    code, result, err = run_cli("train", "--data", dataset, "--out", out, *TINY,
                                "--epochs", 3, "--steps-per-epoch", 40, "--json")
    assert code == 0, err
    return out, result, err


def copy_run(trained, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(trained[0], target)
    return target


# -- learning and the model folder ------------------------------------------------------
def uniform_bits_per_note(dataset: Path) -> float:
    ds = load_dataset(dataset)
    val = ds.split("val")
    tokens = sum(len(p) - 1 for p in val.pieces())
    notes = int(ds.tokenizer.is_pitch(np.asarray(val.tokens)).sum())
    return np.log2(ds.tokenizer.vocab_size) * tokens / notes


def test_training_learns(trained, dataset):
    _, result, err = trained
    assert result["val_bits_per_note"] < 0.6 * uniform_bits_per_note(dataset)
    history = json.loads((trained[0] / "config.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_bits_per_note"] < history[0]["val_bits_per_note"]
    assert "epoch 3: val bits/note" in err


def test_json_result(trained):
    _, result, _ = trained
    assert {"model", "epochs", "params", "val_bits_per_note", "tokens_per_second"} <= set(result)
    assert result["epochs"] == 3
    assert result["tokens_per_second"] > 0
    # token, lookback, position and bar embeddings; a GRU reading all of them; logits;
    # the copy gate (the network's own, or one of 4 distances)
    width = 8 + 4 * 32 + 2 * 16
    embeddings = 364 * 8 + 365 * 32 + 97 * 16 + 17 * 16
    gate = (24 + 1) * 5
    assert result["params"] == embeddings + 3 * (width + 24 + 2) * 24 + 24 * 364 + 364 + gate


def test_model_folder_contents(trained, dataset):
    folder = trained[0]
    for name in ("model.keras", "tokenizer.json", "config.json"):
        assert (folder / name).is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == {"vocab_size": 364, "embedding": 8, "units": 24, "layers": 1,
                               "dropout": 0.2, "reset_after": True, "lookback": [1, 2, 4, 8],
                               "lookback_embedding": 32, "position_embedding": 16,
                               "copy": True}
    assert config["train"]["seq_len"] == 32 and config["train"]["steps_per_epoch"] == 40
    assert config["train"]["backend"] == "tensorflow"
    assert config["data"] == {"folder": str(dataset), "digest": load_dataset(dataset).digest}
    assert config["metrics"]["val_bits_per_note"] == min(
        h["val_bits_per_note"] for h in config["history"])
    assert len(list((folder / "checkpoints").glob("*.keras"))) == 2  # the last two are kept
    assert list((folder / "logs").glob("events.out.tfevents.*"))


def test_model_loads_in_safe_mode_and_scores_like_training(trained, dataset):
    from melody.modelfolder import ModelFolder
    from melody.scoring import ModelScorer

    folder = ModelFolder(trained[0])
    model = folder.keras_model()
    assert [layer.name for layer in model.layers if layer.__class__.__name__ != "InputLayer"] == [
        "lookback_embedding", "embedding", "lookback_flat", "position_embedding", "bar_embedding",
        "gru_input", "gru_0", "dropout_0", "logits", "copy_gate", "log_probs"]
    assert getattr(model, "optimizer", None) is None  # the folder keeps the weights, not the optimizer
    scorer = ModelScorer(model, folder.tokenizer, folder.model_config.lookback)
    scores = scorer.score(load_dataset(dataset).split("val")).report()
    assert scores["bits_per_note"] == pytest.approx(trained[1]["val_bits_per_note"], rel=1e-4)


def test_existing_model_is_not_overwritten(trained, dataset):
    code, _, err = run_cli("train", "--data", dataset, "--out", trained[0], *TINY)
    assert code == 2
    assert "already holds a model" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1


# -- early stopping, the plateau rule, the best weights kept -------------------------------
def unheard_tune(rng, n: int = 12) -> Melody:
    """Nothing like the training tunes: pitches below any transposition of them, notes
    of 5 steps, rests of 2, in 6/8 and minor. The more a model learns the folk-like
    tunes, the less it expects these."""
    pitches = rng.integers(36, 46, n)
    return Melody(pitches, np.arange(n) * 7, [5] * n, key=Key(int(pitches[0]) % 12, "minor"),
                  time_signature=(6, 8))


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """A run whose validation score only gets worse after its first epoch: (folder, JSON
    result, stderr, the dataset)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("diverging")
    data = dataset_of(root / "data", [folk_like_tune(rng) for _ in range(60)],
                      [unheard_tune(rng) for _ in range(6)])
    code, result, err = run_cli("train", "--data", data, "--out", root / "m", *TINY,
                                "--epochs", 8, "--steps-per-epoch", 20, "--patience", 2,
                                "--learning-rate", 0.01, "--json")
    assert code == 0, err
    return root / "m", result, err, data


def test_training_stops_after_patience_epochs_without_improvement(diverging):
    folder, result, err, _ = diverging
    history = json.loads((folder / "config.json").read_text())["history"]
    scores = [h["val_bits_per_note"] for h in history]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # of 8: epochs 2 and 3 were worse
    assert min(scores) == scores[0] < min(scores[1:])
    assert (result["epochs"], result["best_epoch"], result["ending"]) == (3, 1, "early stop")
    assert result["epochs_without_improvement"] == 2
    assert "for 3 epochs (no improvement for 2 epochs)" in err


def test_the_learning_rate_halves_after_each_epoch_without_improvement(diverging):
    folder = diverging[0]
    history = json.loads((folder / "config.json").read_text())["history"]
    assert [h["learning_rate"] for h in history] == [0.01, 0.01, 0.005]
    state = json.loads((folder / "checkpoints" / "epoch-003.json").read_text())
    assert state["progress"]["learning_rate"] == 0.0025  # what --resume would go on with


def test_the_model_folder_keeps_the_best_epochs_weights_not_the_last(diverging):
    from melody.modelfolder import ModelFolder
    from melody.scoring import ModelScorer
    from melody.training.checkpoints import load_checkpoint

    folder, result, _, data = diverging
    config = json.loads((folder / "config.json").read_text())
    history = config["history"]
    ds = load_dataset(data)

    lookback = ModelFolder(folder).model_config.lookback

    def score(model):
        scorer = ModelScorer(model, ds.tokenizer, lookback)
        return scorer.score(ds.split("val")).report()["bits_per_note"]

    kept = score(ModelFolder(folder).keras_model())
    assert kept == pytest.approx(history[0]["val_bits_per_note"], rel=1e-5)
    assert kept == pytest.approx(result["val_bits_per_note"], rel=1e-5)
    assert config["metrics"]["best_epoch"] == 1
    last, state = load_checkpoint(folder, ModelFolder(folder).model_config)  # goes on from the last epoch
    assert state["epoch"] == 3
    assert score(last) == pytest.approx(history[2]["val_bits_per_note"], rel=1e-5)
    assert kept < history[2]["val_bits_per_note"] - 1


# -- the textbook GRU (--reset-after false), end to end --------------------------------------
def test_reset_after_false_trains_generates_and_evaluates(dataset, tmp_path):
    from melody.modelfolder import ModelFolder

    out = tmp_path / "textbook"
    code, trained, err = run_cli("train", "--data", dataset, "--out", out, *TINY,
                                 "--reset-after", "false", "--epochs", 2, "--steps-per-epoch", 30,
                                 "--json")
    assert code == 0, err
    assert trained["val_bits_per_note"] < 0.6 * uniform_bits_per_note(dataset)
    folder = ModelFolder(out)
    assert folder.config["model"]["reset_after"] is False
    keras_model = folder.keras_model()
    assert keras_model.get_layer("gru_0").get_config()["reset_after"] is False
    assert keras_model.get_layer("gru_0").weights[2].shape == (3 * 24,)  # one bias, no recurrent one
    assert [layer.reset_after for layer in folder.network.layers] == [False]
    # the sampler runs the textbook cell that was trained
    piece = load_dataset(dataset).split("val").piece(0)
    inputs, context = model_inputs(piece, folder.model_config.lookback)
    numpy_logits, _ = folder.network.run(piece[None], context=context)
    np.testing.assert_allclose(numpy_logits, keras_model.predict(inputs, verbose=0), atol=1e-5)

    code, generated, err = run_cli("generate", "--model", out, "-n", 3, "--seed", 2, "--bars", 4,
                                   "--key", "D", "--out", tmp_path / "melodies", "--json")
    assert code == 0, err
    from melody.inputs import read_melody

    assert len(generated["files"]) == 3
    for f in generated["files"]:
        melody = read_melody(f["midi"])
        assert melody.n_notes == f["notes"] > 0
        assert set((melody.pitches % 12).tolist()) <= Key.parse("D").scale_pitch_classes()

    code, evaluated, err = run_cli("evaluate", "--model", out, "--data", dataset, "--samples", 0,
                                   "--json")
    assert code == 0, err
    assert evaluated["model"]["bits_per_note"] == pytest.approx(trained["val_bits_per_note"],
                                                                rel=1e-4)
    assert evaluated["baseline"]["bits_per_note"] > 0


# -- resuming -----------------------------------------------------------------------------
def test_resume_continues_epochs_and_best_score(trained, dataset, tmp_path):
    folder = copy_run(trained, tmp_path)
    before = json.loads((folder / "config.json").read_text())
    code, result, err = run_cli("train", "--data", dataset, "--out", folder, *TINY,
                                "--epochs", 4, "--steps-per-epoch", 40, "--resume", "--json")
    assert code == 0, err
    after = json.loads((folder / "config.json").read_text())
    assert [h["epoch"] for h in after["history"]] == [1, 2, 3, 4]
    assert after["history"][:3] == before["history"]
    assert result["epochs"] == 4
    assert result["val_bits_per_note"] <= before["metrics"]["val_bits_per_note"]
    assert "epoch 4: val bits/note" in err and "epoch 1:" not in err


def test_resume_refuses_other_architecture(trained, dataset, tmp_path):
    folder = copy_run(trained, tmp_path)
    flags = [f if f != "24" else "32" for f in TINY]
    code, _, err = run_cli("train", "--data", dataset, "--out", folder, *flags, "--resume")
    assert code == 2
    assert "--units 24" in err and len(err.strip().splitlines()) == 1


def test_resume_without_checkpoints_is_refused(dataset, tmp_path):
    code, _, err = run_cli("train", "--data", dataset, "--out", tmp_path / "none", *TINY, "--resume")
    assert code == 2 and "no checkpoints" in err


def test_damaged_checkpoint_is_set_aside(trained, dataset, tmp_path):
    folder = copy_run(trained, tmp_path)
    newest = folder / "checkpoints" / "epoch-003.keras"
    newest.write_bytes(b"PK\x03\x04 not really a zip")
    code, result, err = run_cli("train", "--data", dataset, "--out", folder, *TINY,
                                "--epochs", 3, "--steps-per-epoch", 40, "--resume", "--json")
    assert code == 0, err
    assert "epoch-003.keras is damaged" in err
    assert (folder / "checkpoints" / "epoch-003.keras.damaged").exists()
    # Epoch 3 is trained again from the epoch-2 checkpoint.
    assert "epoch 3: val bits/note" in err and result["epochs"] == 3


@pytest.mark.parametrize("damage", [b"PK\x03\x04 not a zip", b""], ids=["junk", "empty"])
def test_resume_with_a_damaged_model_file_is_one_line(trained, dataset, tmp_path, damage):
    folder = copy_run(trained, tmp_path)
    (folder / "model.keras").write_bytes(damage)
    code, result, err = run_cli("train", "--data", dataset, "--out", folder, *TINY,
                                "--epochs", 4, "--steps-per-epoch", 5, "--resume")
    assert code == 2 and err.count("\n") == 1, err
    assert str(folder / "model.keras") in err and "Traceback" not in err


def resume_in_subprocess(folder: Path, dataset: Path, cwd: Path) -> subprocess.Popen:
    """Resume a copy of the trained run with endless epochs; return once epoch 4 is running."""
    proc = spawn(ROOT / "app.py", "train", "--data", dataset, "--out", folder, *TINY,
                 "--epochs", 5, "--steps-per-epoch", 100000, "--resume", cwd=cwd)
    wait_for_line(proc, "Epoch 4/5")
    return proc


def test_ctrl_c_saves_and_resume_continues(trained, dataset, tmp_path):
    folder = copy_run(trained, tmp_path)
    proc = resume_in_subprocess(folder, dataset, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"--out {folder} --resume" in err
    stop = folder / "checkpoints" / "epoch-003-stop.keras"
    assert stop.exists()
    state = json.loads(stop.with_suffix(".json").read_text())
    assert state["epoch"] == 3
    assert state["progress"]["best"] == trained[1]["val_bits_per_note"]

    code, result, err = run_cli("train", "--data", dataset, "--out", folder, *TINY,
                                "--epochs", 4, "--steps-per-epoch", 20, "--resume", "--json")
    assert code == 0, err
    assert result["epochs"] == 4
    history = json.loads((folder / "config.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_resume_after_kill_mid_epoch(trained, dataset, tmp_path):
    folder = copy_run(trained, tmp_path)
    before = json.loads((folder / "config.json").read_text())["history"]
    proc = resume_in_subprocess(folder, dataset, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)

    code, result, err = run_cli("train", "--data", dataset, "--out", folder, *TINY,
                                "--epochs", 4, "--steps-per-epoch", 20, "--resume", "--json")
    assert code == 0, err
    history = json.loads((folder / "config.json").read_text())["history"]
    assert history[:3] == before
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_resume_after_a_kill_that_follows_epochs_of_the_resumed_run(trained, dataset, tmp_path):
    """The resumed run trains and saves epochs of its own, then is killed: the next
    resume starts from the epochs that run finished, not from where it began."""
    folder = copy_run(trained, tmp_path)
    proc = spawn(ROOT / "app.py", "train", "--data", dataset, "--out", folder, *TINY,
                 "--epochs", 6, "--steps-per-epoch", 40, "--resume", cwd=tmp_path)
    seen = wait_for_line(proc, "epoch 4: val bits/note")  # printed once epoch 4 is saved
    proc.kill()
    proc.communicate(timeout=60)
    assert not any(line.startswith("epoch 1:") for line in seen)  # epochs 1-3 were not redone
    killed = json.loads((folder / "config.json").read_text())["history"]
    done = len(killed)  # 4, or 5 if epoch 5 ended before the kill landed
    assert done >= 4 and [h["epoch"] for h in killed] == list(range(1, done + 1))

    code, result, err = run_cli("train", "--data", dataset, "--out", folder, *TINY,
                                "--epochs", 6, "--steps-per-epoch", 40, "--resume", "--json")
    assert code == 0, err
    history = json.loads((folder / "config.json").read_text())["history"]
    assert history[:done] == killed  # the killed run's own epochs are kept, not trained again
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert f"epoch {done}: val" not in err and f"epoch {done + 1}: val" in err
    assert result["epochs"] == 6
    assert result["val_bits_per_note"] == min(h["val_bits_per_note"] for h in history)


# -- the input pipeline --------------------------------------------------------------------
def test_windows_are_transposed_slices_of_the_stream():
    from melody.config import TrainConfig
    from melody.training import WindowSampler, transpose_tables

    tok = Tokenizer()
    rng = np.random.default_rng(3)
    tokens = np.concatenate([tok.encode(folk_like_tune(rng)) for _ in range(20)]).astype(np.uint16)
    tables = transpose_tables(tok, TrainConfig())
    x, y = next(WindowSampler(tokens, 16, 64, tables).batches(seed=1))
    assert x.shape == y.shape == (64, 16) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    windows = np.concatenate([x, y[:, -1:]], axis=1)
    slices = [{tuple(t[tokens[i:i + 17]]) for i in range(len(tokens) - 16)} for t in tables]
    shifts_seen = set()
    for row in windows:
        shifts = [s for s, found in enumerate(slices) if tuple(row) in found]
        assert shifts, "every window is a transposed slice of the training tokens"
        if tok.is_pitch(row).any():
            shifts_seen.add(shifts[0])
    assert len(shifts_seen) > 3  # several transpositions, not just the original key



def test_transpose_prob_leaves_the_other_windows_in_their_key():
    from melody.config import TrainConfig
    from melody.training import WindowSampler, transpose_tables

    tok = Tokenizer()
    # random tokens: a transposed window cannot pass for another place's slice
    tokens = np.random.default_rng(4).integers(0, tok.vocab_size, 5000).astype(np.uint16)
    cfg = TrainConfig(transpose_prob=0.25)
    tables = transpose_tables(tok, cfg)
    np.testing.assert_array_equal(tables[-cfg.transpose_low], np.arange(tables.shape[1]))
    sampler = WindowSampler(tokens, 16, 400, tables, None, cfg.transpose_prob, -cfg.transpose_low)
    x, _ = next(sampler.batches(seed=2))
    original = {tuple(tokens[i:i + 16]) for i in range(len(tokens) - 15)}
    kept = np.mean([tuple(row) in original for row in x])
    # a quarter drawn to move (one in 12 of those by 0 semitones): about 77% in their key
    assert 0.65 < kept < 0.88, kept
    x, _ = next(WindowSampler(tokens, 16, 50, tables, None, 0.0, -cfg.transpose_low).batches(seed=2))
    assert all(tuple(row) in original for row in x)


@pytest.mark.parametrize("gpu, given, expected", [
    (False, None, 32), (True, None, 64), (True, 8, 8)])
def test_the_default_batch_is_smaller_on_the_cpu_than_with_a_gpu(dataset, tmp_path, monkeypatch,
                                                                  gpu, given, expected):
    # per training token, batch 32 learns more than 64 on the CPU (bench/learning_curve.py);
    # a GPU runs 64 windows a step as fast as 32, so there 64 learns more a minute
    import melody.backend

    monkeypatch.setattr(melody.backend, "has_gpu", lambda: gpu)
    settings = {} if given is None else {"batch_size": given}
    melody.train(str(dataset), str(tmp_path / "m"), units=8, embedding=4, layers=1, seq_len=16,
                 epochs=1, steps_per_epoch=2, **settings)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train"]["batch_size"] == expected


def test_a_small_collection_gets_every_window_transposed_a_large_one_a_quarter(dataset, tmp_path,
                                                                                monkeypatch):
    import melody.training.trainer as trainer_module
    from melody.config import TrainConfig
    from melody.model import ModelConfig
    from melody.training import Trainer

    ds = load_dataset(dataset)
    model_cfg = ModelConfig(vocab_size=ds.tokenizer.vocab_size)
    tokens = len(ds.split("train").tokens)

    def share(**settings):
        trainer = Trainer(ds, tmp_path, model_cfg, TrainConfig(seq_len=32, **settings))
        assert trainer.sampler.transpose_prob == trainer.cfg.transpose_prob  # and saved so
        return trainer.cfg.transpose_prob

    assert share() == 1.0  # 3,200 windows an epoch pass over these few tunes many times
    assert share(steps_per_epoch=1) == 1.0  # the collection's size decides, not the epoch's
    assert share(transpose_prob=0.1) == 0.1  # as given
    # as if the default epoch were shorter: the same tunes are then a larger collection
    monkeypatch.setattr(trainer_module, "MIN_WINDOWS", 1)
    assert share() == 0.25  # an epoch sees a sliver of them
    monkeypatch.setattr(trainer_module, "MIN_WINDOWS", round(2 * tokens / 32))
    assert share() == pytest.approx(0.5, abs=0.01)  # two passes: half the windows


def test_cosine_schedule_warms_up_then_falls_whatever_the_scores(dataset, tmp_path):
    from melody.config import TrainConfig
    from melody.training.schedule import cosine_rate

    out = tmp_path / "cos"
    result = melody.train(str(dataset), str(out), units=24, embedding=8, layers=1, seq_len=32,
                          batch_size=16, epochs=4, steps_per_epoch=10, patience=4,
                          schedule="cosine", warmup_steps=5, learning_rate=0.01)
    assert result["epochs"] == 4
    rates = [h["learning_rate"] for h in json.loads((out / "config.json").read_text())["history"]]
    cfg = TrainConfig(learning_rate=0.01, schedule="cosine", warmup_steps=5, epochs=4)
    # logged at each epoch's start: the rate the last batch of the epoch before was given
    expected = [0.01] + [cosine_rate(cfg, 10 * e - 1, 40) for e in (1, 2, 3)]
    assert rates == pytest.approx(expected, rel=1e-4)
    assert rates[1] > rates[2] > rates[3]  # no plateau cuts: the cosine alone

# -- strategies ------------------------------------------------------------------------------
MIRRORED = """
import sys
from melody.backend import tensorflow
tf = tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from melody.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_mirrored_strategy_on_two_logical_cpus(dataset, tmp_path):
    script = tmp_path / "two_cpus.py"
    script.write_text(MIRRORED)
    proc = spawn(script, "train", "--data", dataset, "--out", tmp_path / "m", *TINY, "--epochs", 2,
                 "--steps-per-epoch", 30, "--strategy", "mirrored", "--json", cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["replicas"] == 2
    history = json.loads((tmp_path / "m" / "config.json").read_text())["history"]
    assert history[1]["val_bits_per_note"] < history[0]["val_bits_per_note"]


MULTI_WORKER_ENV = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "localhost:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                    "KERAS_DISTRIBUTION_PROCESS_ID": "0"}


@pytest.mark.parametrize("env, expected", [
    ({}, "needs KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES, "
         "KERAS_DISTRIBUTION_PROCESS_ID set on every process"),
    (dict(MULTI_WORKER_ENV, KERAS_DISTRIBUTION_PROCESS_ID="2"),
     "KERAS_DISTRIBUTION_PROCESS_ID must be a whole number in 0..1, got '2'"),
    (dict(MULTI_WORKER_ENV, KERAS_DISTRIBUTION_JOB_ADDRESSES="a:1,b:2,c:3"),
     "lists 3 addresses but KERAS_DISTRIBUTION_NUM_PROCESSES is 2"),
    (dict(MULTI_WORKER_ENV, KERAS_DISTRIBUTION_JOB_ADDRESSES="nohost"), "must start with HOST:PORT"),
    # this process's Keras runs on TensorFlow (tests/test_multiworker.py trains on JAX)
    (MULTI_WORKER_ENV, "trains on the jax Keras backend, but this process has tensorflow: "
                       "unset KERAS_BACKEND or set KERAS_BACKEND=jax"),
])
def test_multi_worker_strategy_is_refused_with_one_line(dataset, tmp_path, monkeypatch, env,
                                                        expected):
    from melody.backend import keras

    keras()  # as in the rest of this module: Keras runs on TensorFlow here
    for name in MULTI_WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = run_cli("train", "--data", dataset, "--out", tmp_path / "m", *TINY,
                           "--strategy", "multi-worker")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists()


def test_multi_worker_without_jax_says_what_to_install(dataset, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else find_spec(name, *a))
    for name, value in MULTI_WORKER_ENV.items():
        monkeypatch.setenv(name, value)
    code, _, err = run_cli("train", "--data", dataset, "--out", tmp_path / "m", *TINY,
                           "--strategy", "multi-worker")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pip install 'melody[jax]'" in err


def test_paths_for_other_keras_backends(dataset, tmp_path, monkeypatch):
    """What KERAS_BACKEND=torch runs instead of tf.data, tf.summary, tf.distribute and
    tf.function, exercised here under TensorFlow by naming another backend."""
    import melody.backend
    from melody.modelfolder import ModelFolder
    from melody.scoring import ModelScorer

    monkeypatch.setattr(melody.backend, "backend_name", lambda: "torch")
    code, _, err = run_cli("train", "--data", dataset, "--out", tmp_path / "m", *TINY,
                           "--strategy", "mirrored")
    assert code == 2 and "KERAS_BACKEND=torch" in err and len(err.strip().splitlines()) == 1
    code, result, err = run_cli("train", "--data", dataset, "--out", tmp_path / "m", *TINY,
                                "--epochs", 1, "--steps-per-epoch", 5, "--json")
    assert code == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["train"]["backend"] == "torch"
    logged = json.loads((tmp_path / "m" / "logs" / "scalars.jsonl").read_text())
    assert logged["step"] == 1 and logged["val/bits_per_note"] == result["val_bits_per_note"]
    monkeypatch.undo()  # the TensorFlow scorer agrees with the keras.ops one used in training
    folder = ModelFolder(tmp_path / "m")
    scores = ModelScorer(folder.keras_model(), folder.tokenizer, folder.model_config.lookback)
    assert scores.score(load_dataset(dataset).split("val")).report()["bits_per_note"] == \
        pytest.approx(result["val_bits_per_note"], rel=1e-5)


def test_music_folder_is_prepared_on_the_fly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_midi_tunes(tmp_path / "songs", 12)
    code, result, err = run_cli("train", "--data", "songs", *TINY, "--epochs", 1,
                                "--steps-per-epoch", 5, "--json")
    assert code == 0, err
    assert (tmp_path / "datasets" / "songs" / "manifest.json").is_file()
    assert result["model"] == str(Path("models") / "songs")
    config = json.loads((tmp_path / "models" / "songs" / "config.json").read_text())
    assert config["data"]["folder"] == str(Path("datasets") / "songs")


def test_missing_data_is_one_line(tmp_path):
    code, _, err = run_cli("train", "--data", tmp_path / "nothing", "--out", tmp_path / "m")
    assert code == 2 and "--data must be a prepared dataset" in err


def test_model_folder_has_an_originality_index_for_generate(trained, dataset, tmp_path):
    from melody.musicality import load_originality

    index = load_originality(trained[0] / "originality.npz")
    train = load_dataset(dataset).split("train")
    assert len(index.runs.lengths) == len(train)  # every training piece is indexed
    piece = load_dataset(dataset).tokenizer.decode(train.piece(5))
    assert index.longest_runs([piece.transpose(2)])[0] == piece.n_notes
    assert index.thresholds is not None  # set from the validation pieces
    code, result, err = run_cli("generate", "--model", trained[0], "--check-originality",
                                "-n", 2, "--seed", 1, "--out", tmp_path, "--json")
    assert code == 0, err
    assert len(result["files"]) == 2
    for entry in result["files"]:
        assert set(entry["originality"]) == {"longest_run", "share_8", "flagged"}
        assert 0 <= entry["originality"]["longest_run"] <= entry["notes"]


def test_model_folder_records_the_collections_keys(trained):
    """config.json keeps the training pieces' key shares, which generate samples keys from."""
    config = json.loads((Path(trained[0]) / "config.json").read_text())
    prior = config["key_prior"]
    assert prior and all(name.startswith("KEY_") for name in prior)
    assert abs(sum(prior.values()) - 1.0) < 1e-3


THREADS = ("from melody.backend import tune_cpu_threads, tensorflow; applied = tune_cpu_threads(); "
           "t = tensorflow().config.threading; "
           "print(applied, t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())")


@pytest.mark.parametrize("env, expected", [
    ({}, f"True {max(1, usable_cores() // 2)} 2"),  # what `train` sets on a CPU
    ({"TF_NUM_INTEROP_THREADS": "3"}, "False 0 0"),  # the user's own choice is left alone
])
def test_cpu_training_threads_run_ops_side_by_side_unless_the_user_chose(env, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")} | env
    env["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU
    out = subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split("\n")[-2] == expected


def test_an_epoch_of_a_small_collection_is_long_enough_to_learn_from(dataset, tmp_path):
    from melody.config import TrainConfig
    from melody.model import ModelConfig
    from melody.training import MIN_WINDOWS, Trainer

    ds = load_dataset(dataset)
    model_cfg = ModelConfig(vocab_size=ds.tokenizer.vocab_size)
    batch = TrainConfig().batch_size
    one_pass = -(-len(ds.split("train").tokens) // (batch * 32))
    assert one_pass < MIN_WINDOWS // batch  # a few batches cover it all
    assert Trainer(ds, tmp_path, model_cfg, TrainConfig(seq_len=32)).steps == MIN_WINDOWS // batch
    assert Trainer(ds, tmp_path, model_cfg, TrainConfig(seq_len=32, batch_size=64)).steps == \
        MIN_WINDOWS // 64  # the same windows an epoch, whatever the batch
    assert Trainer(ds, tmp_path, model_cfg, TrainConfig(seq_len=32, steps_per_epoch=3)).steps == 3
