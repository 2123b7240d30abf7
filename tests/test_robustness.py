"""What a user can rely on when things go wrong: a full or read-only disk, Ctrl-C,
a model folder that is not what it claims to be. One line, no half files, the
previous outputs as they were."""

from __future__ import annotations

import ast
import builtins
import errno
import json
import os
import shutil
import wave
import xml.etree.ElementTree as ET
from pathlib import Path

import mido
import pytest
from conftest import TOK, run, tiny_model, tune, write_songs

from melody import data, fileio
from melody.cli import main
from melody.data import scratch
from melody.modelfolder import ModelFolder

PACKAGE = Path(fileio.__file__).parent


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    return write_songs(tmp_path_factory.mktemp("songs"), 6)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def leftovers(folder: Path) -> list:
    """Temporary or hidden files a failed write may have left behind."""
    return [str(p) for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


# -- a disk that fills up, or a Ctrl-C, in the middle of a write ------------------------


class Disk:
    """Stands in for melody.fileio's ``open``: counts the bytes written and, once
    ``budget`` of them went through, writes part of the next chunk and raises
    ``error`` (OSError ENOSPC: a full disk; KeyboardInterrupt: Ctrl-C)."""

    def __init__(self, budget=float("inf"), error=None):
        self.budget, self.used, self.failures = budget, 0, 0
        self.error = error or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        return _FillingFile(f, self) if set(mode) & set("wax+") else f


class _FillingFile:
    def __init__(self, f, disk: Disk):
        self._f, self._disk = f, disk

    def write(self, chunk):
        if isinstance(chunk, memoryview):
            chunk = chunk.tobytes()
        room = self._disk.budget - self._disk.used
        if len(chunk) > room:
            self._f.write(chunk[:int(room)])  # the part that still fitted: a half file
            self._f.flush()
            self._disk.used = self._disk.budget
            self._disk.failures += 1
            raise self._disk.error
        self._disk.used += len(chunk)
        return self._f.write(chunk)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def bytes_written(monkeypatch, argv) -> int:
    """How many bytes a successful run of ``argv`` writes through melody.fileio."""
    disk = Disk()
    monkeypatch.setattr(fileio, "open", disk.open, raising=False)
    assert main([str(a) for a in argv]) == 0
    monkeypatch.undo()
    return disk.used


def budgets(total: int) -> list[int]:
    """Points from the very first byte of a run's writes to its last file.

    The last point leaves room for runs that write a few bytes less than the
    measured one (a shorter name in a sidecar).
    """
    return sorted({0, 1, *(int(total * f) for f in (0.05, 0.2, 0.4, 0.6, 0.8, 0.95)), total - 200})


def fail_at(monkeypatch, budget, error=None) -> Disk:
    disk = Disk(budget, error)
    monkeypatch.setattr(fileio, "open", disk.open, raising=False)
    return disk


# -- generate ------------------------------------------------------------------------------


def check_generated(folder: Path) -> None:
    """Every melody left in ``folder`` is whole: MIDI, sidecar and the extras it names."""
    for midi in folder.glob("*.mid"):
        sidecar = json.loads(midi.with_suffix(".json").read_text())
        assert len(mido.MidiFile(str(midi)).tracks) >= 1
        files = sidecar["files"]
        assert set(files) >= {"midi", "wav", "musicxml"}  # what GENERATE asks for
        with wave.open(files["wav"]) as w:
            assert w.getnframes() > 0
        ET.parse(files["musicxml"])
    for f in folder.iterdir():
        assert f.with_suffix(".mid").is_file(), f"{f.name} has no melody"


GENERATE = ["-n", 3, "--notes", 6, "--seed", 11, "--wav", "--musicxml"]


def test_generate_on_a_full_disk_leaves_whole_melodies_or_none(capsys, tmp_path, model_folder,
                                                               monkeypatch):
    args = ["generate", "--model", model_folder, *GENERATE]
    total = bytes_written(monkeypatch, args + ["--out", tmp_path / "a" / "out"])
    out = tmp_path / "b" / "out"  # as long a name as the measured run's
    assert main([str(a) for a in args + ["--out", out]]) == 0  # earlier outputs
    capsys.readouterr()
    before = snapshot(out)
    kept = 0
    for budget in budgets(total):
        disk = fail_at(monkeypatch, budget)
        code, stdout, err = run(capsys, *args, "--out", out, "--json")
        monkeypatch.undo()
        assert disk.failures >= 1  # once full, every later write fails too
        assert (code, stdout, err.count("\n")) == (1, "", 1), err
        assert "No space left on device" in err and "Traceback" not in err
        assert leftovers(out) == []
        assert {k: v for k, v in snapshot(out).items() if k in before} == before
        check_generated(out)
        kept = max(kept, len(list(out.glob("*.mid"))) - 3)
    assert kept >= 1  # some runs failed after whole melodies, which stayed


def test_ctrl_c_in_generate_is_one_line_and_no_partial_files(capsys, tmp_path, model_folder,
                                                             monkeypatch):
    args = ["generate", "--model", model_folder, *GENERATE]
    total = bytes_written(monkeypatch, args + ["--out", tmp_path / "a" / "out"])
    out = tmp_path / "b" / "out"
    capsys.readouterr()
    for budget in (0, total // 2, total - 200):
        fail_at(monkeypatch, budget, KeyboardInterrupt())
        code, stdout, err = run(capsys, *args, "--out", out)
        monkeypatch.undo()
        assert (code, stdout, err) == (130, "", "melody generate: interrupted\n")
        assert leftovers(out) == []
        check_generated(out)

    import melody.modelfolder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(melody.modelfolder, "sample", interrupted)
    code, _, err = run(capsys, *args, "--out", tmp_path / "during-sampling")
    assert code == 130 and err == "melody generate: interrupted\n"
    assert not (tmp_path / "during-sampling").exists() or not any(
        (tmp_path / "during-sampling").iterdir())


def test_read_only_output_folder_is_one_line_and_leaves_nothing(capsys, tmp_path, model_folder,
                                                                 monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    real_open, real_replace = os.open, os.replace

    def no_create(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(str(out)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def no_rename(src, dst, *args, **kwargs):
        if str(dst).startswith(str(out)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    for fake in ((os, "open", no_create), (os, "replace", no_rename)):
        monkeypatch.setattr(*fake)
        code, stdout, err = run(capsys, "generate", "--model", model_folder, "-n", 2,
                                "--notes", 4, "--out", out)
        monkeypatch.undo()
        assert (code, stdout, err.count("\n")) == (1, "", 1), err
        assert "Read-only file system" in err
        assert list(out.iterdir()) == []  # not even the empty file that held the name


# -- render --------------------------------------------------------------------------------


def test_render_on_a_full_disk_or_ctrl_c_leaves_earlier_outputs_and_no_half_file(
        capsys, tmp_path, songs, monkeypatch):
    sources = [songs / "song0.mid", songs / "song1.mid"]
    args = ["render", *sources, "--wav", "--musicxml"]
    total = bytes_written(monkeypatch, args + ["--out", tmp_path / "a" / "out"])
    out = tmp_path / "b" / "out"
    assert main([str(a) for a in args + ["--out", out]]) == 0
    capsys.readouterr()
    before = snapshot(out)
    for budget, error, code_wanted in [(b, None, 1) for b in budgets(total)] + [
            (total // 2, KeyboardInterrupt(), 130)]:
        disk = fail_at(monkeypatch, budget, error)
        code, stdout, err = run(capsys, *args, "--out", out)
        monkeypatch.undo()
        assert disk.failures >= 1  # once full, every later write fails too
        assert (code, stdout, err.count("\n")) == (code_wanted, "", 1), err
        assert leftovers(out) == []
        assert {k: v for k, v in snapshot(out).items() if k in before} == before
        for wav in out.glob("*.wav"):  # each file rendered whole (WAV and score) or not at all
            with wave.open(str(wav)) as w:
                assert w.getnframes() > 0
            ET.parse(wav.with_suffix(".musicxml"))
        assert len(list(out.glob("*.musicxml"))) == len(list(out.glob("*.wav")))


# -- prepare -------------------------------------------------------------------------------


def dataset_files(folder: Path) -> dict:
    return {k: v for k, v in snapshot(folder).items() if not k.startswith("cache")}


def test_prepare_on_a_full_disk_or_ctrl_c_keeps_the_previous_dataset(capsys, tmp_path, songs,
                                                                     monkeypatch):
    collection = tmp_path / "songs"
    shutil.copytree(songs, collection)
    pristine = tmp_path / "pristine"
    assert main(["prepare", str(collection), "--out", str(pristine), "--jobs", "1"]) == 0
    (collection / "new.mid").write_bytes(tune(99))  # the next run has something new to write
    args = ["prepare", collection, "--jobs", 1]
    measure = tmp_path / "ds-measure"
    shutil.copytree(pristine, measure)
    total = bytes_written(monkeypatch, args + ["--out", measure])
    capsys.readouterr()
    for budget, error, code_wanted in [(b, None, 1) for b in budgets(total)] + [
            (total // 2, KeyboardInterrupt(), 130)]:
        out = tmp_path / f"ds-{budget:07d}"[:len("ds-measure")]
        shutil.copytree(pristine, out)
        disk = fail_at(monkeypatch, budget, error)
        code, stdout, err = run(capsys, *args, "--out", out)
        monkeypatch.undo()
        assert disk.failures >= 1  # once full, every later write fails too
        assert (code, stdout, err.count("\n")) == (code_wanted, "", 1), err
        assert leftovers(out) == []
        assert dataset_files(out) == dataset_files(pristine)
        assert data.load_dataset(out).manifest["counts"]["files"] == 6
        # and the next run, with room on the disk, completes it
        assert main(["prepare", str(collection), "--out", str(out), "--jobs", "1"]) == 0
        assert data.load_dataset(out).manifest["counts"]["files"] == 7
        capsys.readouterr()


def test_prepare_whose_scratch_lists_hit_a_full_disk_keeps_the_previous_dataset(
        capsys, tmp_path, songs, monkeypatch):
    """prepare's file list and unit results wait in temporary files in the dataset
    folder: a full disk there, at any point, is one line and no damage."""
    collection = tmp_path / "songs"
    shutil.copytree(songs, collection)
    out = tmp_path / "ds"
    assert main(["prepare", str(collection), "--out", str(out), "--jobs", "1"]) == 0
    (collection / "new.mid").write_bytes(tune(99))
    before = dataset_files(out)
    capsys.readouterr()
    append = scratch.Lines.append
    # 7 files listed; then 7 plans and 6 restored results; then 1 newly read result
    for budget in (0, 3, 7, 12, 20):
        calls = iter(range(10**6))

        def filling(self, value, budget=budget):
            if next(calls) >= budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return append(self, value)

        monkeypatch.setattr(scratch.Lines, "append", filling)
        code, stdout, err = run(capsys, "prepare", collection, "--out", out, "--jobs", 1)
        monkeypatch.undo()
        assert (code, stdout, err.count("\n")) == (1, "", 1), err
        assert "No space left on device" in err
        assert leftovers(out) == [] and dataset_files(out) == before
    assert main(["prepare", str(collection), "--out", str(out), "--jobs", "1"]) == 0
    assert data.load_dataset(out).manifest["counts"]["files"] == 7


def test_a_keras_save_cut_short_leaves_nothing_and_keeps_the_previous_model(tmp_path):
    class CutShort:
        def save(self, path):
            Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt

    target = tmp_path / "model.keras"
    target.write_bytes(b"the previous model")
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_save_keras(CutShort(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    assert target.read_bytes() == b"the previous model"


# -- model folders that are not what they claim --------------------------------------------


def lambda_model(folder: Path) -> Path:
    from melody.backend import keras

    k = keras()
    inputs = k.Input(shape=(None,), dtype="int32", name="tokens")
    x = k.layers.Embedding(TOK.vocab_size, 8, name="embedding")(inputs)
    x = k.layers.GRU(16, return_sequences=True, name="gru_0")(x)
    x = k.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    logits = k.layers.Dense(TOK.vocab_size, name="logits")(x)
    return tiny_model(folder, model=k.Model(inputs, logits))


BAD_MODELS = {
    "h5": (lambda d, good: (shutil.copytree(good, d),
                            os.replace(d / "model.keras", d / "model.h5")), ".h5"),
    "lambda": (lambda d, good: lambda_model(d), "Lambda"),
    "corrupt": (lambda d, good: (shutil.copytree(good, d),
                                 (d / "model.keras").write_bytes(os.urandom(4096))),
                "not a Keras 3 model file"),
    "weights-vocab": (lambda d, good: tiny_model(d, vocab=TOK.vocab_size + 5,
                                                 config_vocab=TOK.vocab_size), "outputs"),
    "config-vocab": (lambda d, good: tiny_model(d, vocab=TOK.vocab_size + 5), "tokens"),
}


@pytest.mark.parametrize("kind", BAD_MODELS)
def test_bad_model_folder_is_refused_by_generate_and_evaluate(kind, capsys, tmp_path, songs,
                                                              model_folder):
    make, named = BAD_MODELS[kind]
    folder = tmp_path / kind
    make(folder, model_folder)
    for argv in (["generate", "--model", folder, "--out", tmp_path / "out", "-n", 1],
                 ["evaluate", "--model", folder, "--data", songs, "--samples", 0]):
        code, stdout, err = run(capsys, *argv)
        assert (code, stdout, err.count("\n")) == (2, "", 1), (argv, err)
        assert named in err and str(folder) in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_models_load_only_in_keras_safe_mode(model_folder, monkeypatch):
    from melody.backend import keras

    calls = []
    real = keras().saving.load_model

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(keras().saving, "load_model", spy)
    ModelFolder(model_folder).keras_model()
    assert calls and all(c.get("safe_mode") is True for c in calls)


# -- every write goes through melody.fileio ------------------------------------------------

WRITERS = {"savefig", "save", "savez", "savez_compressed", "write_bytes", "write_text",
           "tofile", "to_csv", "writeframes"}


def _unguarded_writes(tree: ast.AST) -> list:
    """Calls that write a file by name outside a ``with atomic_...`` block."""
    found = []

    def guarded(stack):
        return any(isinstance(n, ast.With) and any(
            isinstance(i.context_expr, ast.Call)
            and ast.unparse(i.context_expr.func).split(".")[-1].startswith("atomic_")
            for i in n.items) for n in stack)

    def visit(node, stack):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            short = name.split(".")[-1]
            mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), "")
            mode = next((k.value.value for k in node.keywords
                         if k.arg == "mode" and isinstance(k.value, ast.Constant)), mode)
            opens_for_writing = short == "open" and name in ("open", "wave.open") and \
                isinstance(mode, str) and set(mode) & set("wax+")
            saves = short in WRITERS and name.split(".")[0] in (
                "np", "numpy", "fig", "plt", "model", "Path", "path", "self") and \
                name not in ("self.tokenizer.save", "self.save")
            if (opens_for_writing or saves) and not guarded(stack):
                found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
        for child in ast.iter_child_nodes(node):
            visit(child, stack + [node])

    visit(tree, [])
    return found


def test_every_file_is_written_through_fileio():
    problems = {}
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20  # the whole package, sub-packages included
    for module in modules:
        if module.name == "fileio.py":
            continue
        bad = _unguarded_writes(ast.parse(module.read_text()))
        if bad:
            problems[str(module.relative_to(PACKAGE))] = bad
    assert problems == {}


def test_the_write_check_finds_a_plain_write():
    tree = ast.parse("def f(p, fig):\n    open(p, 'w').write('x')\n    fig.savefig(p)\n"
                     "    with atomic_path(p) as tmp:\n        fig.savefig(tmp)\n")
    assert [line.split(":")[0] for line in _unguarded_writes(tree)] == ["line 2", "line 3"]
