"""Damaged and hostile model folders: each refused in one line naming the file, the key or
layer and the damage, within limits of memory and time (zip members and weight arrays
are sized before anything is unpacked)."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run, tiny_model

from melody.errors import ModelFolderError
from melody.modelfolder import ModelFolder


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("dropout") / "m", dropout=0.25)


def copy(model_folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "m"
    shutil.copytree(model_folder, target)
    return target


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rewrite_keras(path: Path, **members) -> None:
    """model.keras with some members replaced (bytes, or a callable writing into the zip)."""
    with zipfile.ZipFile(path) as z:
        kept = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {**kept, **members}.items():
            if callable(data):
                data(z)
            else:
                z.writestr(name, data)


def refused(capsys, folder, *words):
    code, out, err = run(capsys, "generate", "--model", folder, "-n", 1, "--out", folder / "out")
    assert (code, out, err.count("\n")) == (2, "", 1), err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert not (folder / "out").exists()
    return err


CONFIG_DAMAGE = {
    "dropout": (lambda c: c["model"].update(dropout=5), "dropout must be in range [0, 1), got 5"),
    "units": (lambda c: c["model"].update(units=10**12), "units must be at most 4096"),
    "unknown key": (lambda c: c.update(bogus=1), "unknown keys 'bogus'"),
    "unknown model key": (lambda c: c["model"].update(heads=8), "unknown model settings: heads"),
    "key prior": (lambda c: c.update(key_prior={"KEY_C": "x"}), "KEY_C must be a share"),
    "key prior sum": (lambda c: c.update(key_prior={"KEY_C": 0.9, "KEY_D": 0.9}), "add up to 1.8"),
    "form prior": (lambda c: c.update(form_prior="AABB"), "'form_prior' must be a list"),
    "form prior line": (lambda c: c.update(form_prior=["8 . 3"]), "only repeat an earlier bar"),
    "train": (lambda c: c.update(train={"epochs": -3}), "epochs must be at least 1"),
    "train type": (lambda c: c.update(train=[1]), "'train' must be an object"),
    "history": (lambda c: c.update(history=[{"epoch": [1]}]), "'history' must be a list"),
    "metrics": (lambda c: c.update(metrics={"x": {}}), "'metrics' must be an object of numbers"),
    "deep": (lambda c: c.update(evaluation={"a": json.loads("[" * 40 + "]" * 40)}),
             "nested deeper than 32 levels"),
    "parent": (lambda c: c.update(parent=5), "'parent' must be an object"),
    "other units": (lambda c: c["model"].update(units=12), "gru_0 has units=16"),
    "other layers": (lambda c: c["model"].update(layers=2), "its architecture lacks ['gru_1'"),
}


@pytest.mark.parametrize("kind", CONFIG_DAMAGE)
def test_every_field_of_config_json_is_checked(kind, capsys, tmp_path, model_folder):
    change, says = CONFIG_DAMAGE[kind]
    folder = copy(model_folder, tmp_path)
    edit_json(folder / "config.json", change)
    refused(capsys, folder, says)


def test_an_architecture_other_than_config_json_says_is_refused(capsys, tmp_path, model_folder,
                                                                dropout_model):
    folder = copy(dropout_model, tmp_path)
    edit_json(folder / "config.json", lambda c: c["model"].update(dropout=0.0))
    refused(capsys, folder, "dropout_0", "config.json's settings")
    folder = copy(model_folder, tmp_path / "softmax")
    with zipfile.ZipFile(folder / "model.keras") as z:
        arch = json.loads(z.read("config.json"))
    (logits,) = [layer for layer in arch["config"]["layers"] if layer["name"] == "logits"]
    logits["config"]["activation"] = "softmax"
    rewrite_keras(folder / "model.keras", **{"config.json": json.dumps(arch)})
    refused(capsys, folder, "Dense logits has activation='softmax'")


TOKENIZER_DAMAGE = {
    "huge duration": (lambda t: t["config"].update(max_duration=10**9), "max_duration"),
    "many meters": (lambda t: t["config"].update(time_signatures=["4/4"] * 10**5), "64"),
    "unknown key": (lambda t: t.update(extra=1), "unknown keys 'extra'"),
    "bool pitch": (lambda t: t["config"].update(lowest_pitch=True), "whole number"),
}


@pytest.mark.parametrize("kind", TOKENIZER_DAMAGE)
def test_every_tokenizer_setting_is_checked(kind, capsys, tmp_path, model_folder):
    change, says = TOKENIZER_DAMAGE[kind]
    folder = copy(model_folder, tmp_path)
    edit_json(folder / "tokenizer.json", change)
    refused(capsys, folder, "tokenizer.json", says)


def test_json_too_large_or_too_deep_is_refused_unread(capsys, tmp_path, model_folder):
    folder = copy(model_folder, tmp_path)
    (folder / "tokenizer.json").write_bytes(b" " * (2**20 + 1))
    refused(capsys, folder, "tokenizer.json", "at most 1048576 are read")
    folder = copy(model_folder, tmp_path / "deep")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(capsys, folder, "config.json", "not readable JSON")


def _zip_bomb(z: zipfile.ZipFile) -> None:
    with z.open("model.weights.h5", "w", force_zip64=True) as f:  # 1 GiB of zeros, 1 MB packed
        zeros = bytes(2**24)
        for _ in range(64):
            f.write(zeros)


def _array_bomb(z: zipfile.ZipFile) -> None:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:  # 8 GiB of float32 by its header, a few KB on disk
        h5.create_group("layers/embedding/vars").create_dataset(
            "0", shape=(2**31,), dtype="f4", compression="gzip", chunks=(2**20,), fillvalue=0)
    z.writestr("model.weights.h5", buffer.getvalue())


def _limited(*argv, cwd, memory=700 * 2**20):
    """The CLI in a process whose address space is capped (a decompressed bomb would fail
    with MemoryError, a traceback, instead of the one line asked for)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, argv)], cwd=cwd,
                          env=env, capture_output=True, text=True, preexec_fn=cap, timeout=120)


@pytest.mark.parametrize("bomb, says", [(_zip_bomb, "unpacks to 1073741824 bytes; at most"),
                                        (_array_bomb, "hold more numbers than the architecture")])
def test_a_zip_or_array_bomb_is_refused_before_it_is_unpacked(bomb, says, tmp_path, model_folder):
    folder = copy(model_folder, tmp_path)
    rewrite_keras(folder / "model.keras", **{"model.weights.h5": bomb})
    done = _limited("generate", "--model", folder, "-n", 1, "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    with pytest.raises(ModelFolderError, match="model.keras"):
        ModelFolder(folder).keras_model()  # evaluate and --resume: refused before Keras reads


def test_extra_or_repeated_zip_members_are_refused(capsys, tmp_path, model_folder):
    folder = copy(model_folder, tmp_path)
    rewrite_keras(folder / "model.keras", **{"assets/evil.py": b"import os"})
    refused(capsys, folder, "holds 'assets/evil.py'")


def test_an_originality_file_is_read_with_limits(capsys, tmp_path, model_folder):
    folder = copy(model_folder, tmp_path)
    buffer = io.BytesIO()
    np.savez(buffer, version=np.array(1), ngram=np.array(8), intervals=np.zeros(10, np.int16),
             durations=np.zeros(10, np.uint32), lengths=np.array([4, 4], np.uint32),
             thresholds=np.array([1.0, 0.5]))
    (folder / "originality.npz").write_bytes(buffer.getvalue())
    code, _, err = run(capsys, "generate", "--model", folder, "-n", 1, "--check-originality",
                       "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "do not add up" in err, err
    with zipfile.ZipFile(folder / "originality.npz", "w") as z:
        z.writestr("intervals.npy", b"")
        z.writestr("payload.bin", b"x")
    code, _, err = run(capsys, "generate", "--model", folder, "-n", 1, "--check-originality",
                       "--out", tmp_path / "out")
    assert code == 2 and "payload.bin" in err, err
