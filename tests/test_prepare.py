"""`melody prepare`: every file accounted for, isolation, cache, dedupe, split."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from unittest.mock import ANY

import numpy as np
import pytest
from conftest import ROOT, run
from midi_factory import notes, smf, track

from melody import data, inputs
from melody.cli import main
from melody.data import pool, scratch, split
from melody.notes import Melody
from melody.outputs.midi import midi_bytes

TUNE_A = [60, 62, 64, 65, 67, 65, 64, 62, 60, 67]
TUNE_B = [72, 71, 69, 67, 65, 64, 62, 60, 62, 64]
TUNE_C = [55, 57, 59, 60, 62, 64, 62, 60, 59, 55]


def midi(pitches, step=12) -> bytes:
    n = len(pitches)
    return midi_bytes(Melody(pitches, np.arange(n) * step, [step] * n))


def write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def prepare_cli(capsys, *argv) -> dict:
    assert main(["prepare", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture
def collection(tmp_path):
    """Nested folders, upper-case suffixes, a text file, a broken file, a
    transposed duplicate and a symlink loop."""
    root = tmp_path / "songs"
    write(root / "a" / "one.mid", midi(TUNE_A))
    write(root / "a" / "broken.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff")
    write(root / "a" / "notes.txt", b"not music")
    write(root / "a" / "b" / "TWO.MID", midi(TUNE_B))
    write(root / "a" / "b" / "dup.midi", midi([p + 5 for p in TUNE_A]))
    write(root / "c" / "Three.Kar", midi(TUNE_C))
    os.symlink(root / "a", root / "a" / "b" / "loop")
    return root


def test_prepare_accounts_for_every_file(collection, tmp_path, capsys):
    out = tmp_path / "ds"
    result = prepare_cli(capsys, collection, "--out", out, "--jobs", "2")
    for key in ("dataset", "files", "ok", "skipped", "notes", "tokens", "train_pieces",
                "val_pieces", "duplicates", "ignored", "seconds"):
        assert key in result
    m = manifest(out)
    files = {os.path.relpath(f["path"], collection): f for f in m["files"]}
    assert sorted(files) == ["a/b/TWO.MID", "a/b/dup.midi", "a/broken.mid", "a/one.mid",
                             "c/Three.Kar"]
    assert result["files"] == 5 and result["ignored"] == 1
    assert files["a/broken.mid"]["status"] == "skipped"
    assert files["a/broken.mid"]["reason"] in inputs.REASONS
    dup = files["a/b/dup.midi"]
    assert (dup["status"], dup["reason"]) == ("skipped", "duplicate")
    assert dup["duplicate_of"] == "songs/a/one.mid"
    assert result["skipped"] == {files["a/broken.mid"]["reason"]: 1, "duplicate": 1}
    assert result["ok"] == 3 and result["duplicates"] == 1
    assert all(files[name]["notes"] == 10 for name in ("a/one.mid", "a/b/TWO.MID", "c/Three.Kar"))

    splits = {p["id"]: p["split"] for p in m["pieces"] if p.get("split")}
    assert sorted(splits.values()).count("val") == result["val_pieces"] >= 1
    assert result["train_pieces"] + result["val_pieces"] == 3
    dataset = data.load_dataset(out)
    for name in data.SPLITS:
        split = dataset.split(name)
        assert len(split) == result[f"{name}_pieces"]
        for piece in split.pieces():
            assert dataset.tokenizer.is_valid(piece)
    assert sum(int(dataset.split(s).offsets[-1]) for s in data.SPLITS) == result["tokens"]


def readme_skip_report() -> list[str]:
    """The README's example of the summary that ends with the skip report."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(prepared datasets/mine:.*?)\n```", text, re.S)
    assert block, "the README shows the skip report"
    return block.group(1).splitlines()


NUMBER = r"\d{1,3}(?:,\d{3})*(?:\.\d+)?"  # 41, 52,318, 21.4
REASONS_LIST = rf"\({NUMBER} [a-z ]+(?:, {NUMBER} [a-z ]+)*\)"  # (17 drums only, 9 duplicate)


def shape(line: str) -> re.Pattern:
    """A README line with its numbers, dataset and list of skip reasons left open."""
    reasons = re.fullmatch(rf"(.*skipped {NUMBER} )\(.*\)", line)
    head = reasons.group(1) if reasons else line
    pieces = re.split(rf"(datasets/mine|{NUMBER})", head)
    pattern = [re.escape(p) if i % 2 == 0 else r"\S+" if p == "datasets/mine" else NUMBER
               for i, p in enumerate(pieces)]
    return re.compile("".join(pattern) + (REASONS_LIST if reasons else ""))


def test_the_skip_report_reads_as_the_readme_shows_it(tmp_path, capsys):
    root = tmp_path / "mine"
    rng = np.random.default_rng(2)
    for i in range(6):
        write(root / f"good{i}.mid", midi([60 + i] + rng.integers(55, 80, 11).tolist()))
    write(root / "TUNE_B.mid", midi(TUNE_B))
    write(root / "again.mid", midi([p + 2 for p in TUNE_B]))  # TUNE_B, transposed
    for i in range(4):
        write(root / f"short{i}.mid", midi(TUNE_C[:5]))
    for i in range(3):
        write(root / f"drums{i}.mid", smf([track(*notes(TUNE_A, channel=9))]))
    for i in range(2):
        write(root / f"cut{i}.mid", b"MThd\x00\x00\x00\x06\x00\x01")
    write(root / "notes.txt", b"not music")
    write(root / "cover.jpg", b"\xff\xd8")
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "prepare", root, "--out", out, "--jobs", 2)
    assert code == 0
    lines = stdout.strip().splitlines()
    readme = readme_skip_report()
    assert len(readme) == 4 and len(lines) == 5
    for line, example in zip(lines, readme):
        assert shape(example).fullmatch(line), (line, example)
    # and, for so small a collection, what to expect of it
    assert lines[4].startswith("  a small collection: fine-tune the shipped model")
    counts = manifest(out)["counts"]
    assert re.fullmatch(rf"prepared {re.escape(str(out))}: 17 files, 17 pieces "
                        r"\(17 read, 0 from cache\) in \d+\.\d s", lines[0])
    # the most common reason first, as in the README (not in the alphabet's order)
    assert lines[1] == "  ok 7, skipped 10 (4 too short, 3 drums only, 2 truncated, 1 duplicate)"
    assert lines[2] == (f"  {counts['notes']:,} notes, {counts['tokens']:,} tokens; "
                        f"{counts['train_pieces']} train / {counts['val_pieces']} val pieces")
    assert counts["train_pieces"] + counts["val_pieces"] == 7 and counts["notes"] == 7 * 12 - 2
    assert lines[3] == "  2 other files ignored (not music by their suffix)"


def test_split_is_by_piece_and_deterministic_for_a_seed():
    ids = [f"tune-{i}" for i in range(200)]
    first = data.split_pieces(ids, 0.1, seed=3)
    assert first == data.split_pieces(list(reversed(ids)), 0.1, seed=3)
    assert list(first.values()).count("val") == 20
    assert first != data.split_pieces(ids, 0.1, seed=4)
    # adding pieces moves none of the others
    more = data.split_pieces(ids + ["new-1", "new-2"], 0.1, seed=3)
    assert sum(more[i] != first[i] for i in ids) <= 2
    assert list(data.split_pieces(["x", "y"], 0.1, seed=0).values()).count("val") == 1


def test_same_seed_same_dataset(collection, tmp_path, capsys):
    prepare_cli(capsys, collection, "--out", tmp_path / "one", "--seed", "7")
    prepare_cli(capsys, collection, "--out", tmp_path / "two", "--seed", "7")
    for name in ("train.tokens.npy", "val.tokens.npy", "train.offsets.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_second_run_reads_nothing_and_a_changed_file_is_read_again(collection, tmp_path, capsys):
    out = tmp_path / "ds"
    first = prepare_cli(capsys, collection, "--out", out)
    assert first["parsed"] == 5 and first["cached"] == 0
    before = (out / "manifest.json").read_bytes()
    second = prepare_cli(capsys, collection, "--out", out)
    assert second["parsed"] == 0 and second["cached"] == 5
    assert (out / "manifest.json").read_bytes() == before
    write(collection / "c" / "Three.Kar", midi(TUNE_C[::-1]))
    third = prepare_cli(capsys, collection, "--out", out)
    assert third["parsed"] == 1 and third["cached"] == 4


def test_an_unchanged_rerun_keeps_the_dataset_but_new_settings_or_damage_remake_it(
        collection, tmp_path, capsys):
    out = tmp_path / "ds"
    first = prepare_cli(capsys, collection, "--out", out, "--seed", "1")
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    assert prepare_cli(capsys, collection, "--out", out, "--seed", "1") == dict(
        first, parsed=0, cached=5, seconds=ANY)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == written
    other = prepare_cli(capsys, collection, "--out", out, "--seed", "2")
    assert other["parsed"] == 0 and other["cached"] == 5
    assert manifest(out)["split"]["seed"] == 2
    (out / "val.tokens.npy").write_bytes(b"damaged")
    again = prepare_cli(capsys, collection, "--out", out, "--seed", "2")
    assert again["parsed"] == 0 and again["tokens"] == first["tokens"]
    assert np.load(out / "val.tokens.npy").size == again["val_tokens"]


def stub_reader(path, part=None):
    """Misbehaves by file name, in the worker process."""
    name = os.path.basename(path)
    if name.startswith("hang"):
        time.sleep(600)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("oom"):
        return bytearray(8 * 2**30)
    if name.startswith("probe"):
        loaded = sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules)
        raise inputs.SkipFile("not music", "loaded: " + ",".join(loaded))
    return inputs.read_melody(path, part)


def test_hang_crash_and_memory_blowup_cost_one_file_each(tmp_path):
    for name, tune in (("good.mid", TUNE_A), ("hang.mid", TUNE_B), ("crash.mid", TUNE_C),
                       ("oom.mid", TUNE_B), ("probe.mid", TUNE_B), ("zz.mid", TUNE_C)):
        write(tmp_path / "in" / name, midi(tune))
    result = data.prepare([tmp_path / "in"], tmp_path / "ds", jobs=2, val_fraction=0.1, seed=0,
                          timeout=3, progress=False, reader=f"{__name__}:stub_reader")
    files = {os.path.basename(f["path"]): f for f in manifest(tmp_path / "ds")["files"]}
    assert files["hang.mid"]["reason"] == "timed out"
    assert files["crash.mid"]["reason"] == "crashed"
    assert "SIGSEGV" in files["crash.mid"]["detail"]
    assert files["oom.mid"]["reason"] == "out of memory"
    assert files["probe.mid"]["detail"] == "loaded: "  # workers never import TensorFlow
    assert files["good.mid"]["status"] == files["zz.mid"]["status"] == "ok"
    assert result["ok"] == 2


def test_a_worker_holding_many_quick_units_loses_only_the_bad_ones(tmp_path):
    """Quick units are sent many at a time (the parent wakes only every few
    milliseconds); a hang or a crash among them still costs only itself, and the
    hang is timed from when the unit before it came back, not from when it was sent."""
    rng = np.random.default_rng(0)
    names = [f"a/{i:03d}.mid" for i in range(100)] + ["b/hang.mid"] + [
        f"c/{i:03d}.mid" for i in range(80)] + ["d/crash.mid"] + [f"e/{i:03d}.mid" for i in range(58)]
    for name in names:  # read in this order
        write(tmp_path / "in" / name, midi(rng.integers(55, 80, 12).tolist()))
    result = data.prepare([tmp_path / "in"], tmp_path / "ds", jobs=1, val_fraction=0.1, seed=0,
                          timeout=2, progress=False, reader=f"{__name__}:stub_reader")
    reasons = Counter(f.get("reason") for f in manifest(tmp_path / "ds")["files"])
    assert reasons == {None: 238, "timed out": 1, "crashed": 1}
    assert result["ok"] == 238


def test_a_worker_dying_while_units_are_sent_to_it_costs_only_the_unit_that_killed_it(
        tmp_path, monkeypatch):
    """The parent may be writing a unit to a worker that has just died: the results
    it sent before dying still count, and the unit that killed it is "crashed"."""
    names = [f"a/{i:02d}.mid" for i in range(20)] + ["b/crash.mid"] + [f"c/{i:02d}.mid" for i in range(20)]
    rng = np.random.default_rng(1)
    for name in names:
        write(tmp_path / "in" / name, midi(rng.integers(55, 80, 12).tolist()))
    send, broken = pool._Worker.send, []

    def send_to_the_dead(self, item):
        if any(unit[1].endswith("crash.mid") for unit in self.sent):
            self.process.join(30)  # it reads what it holds, then dies on crash.mid
        try:
            send(self, item)
        except OSError:
            broken.append(item)
            raise

    monkeypatch.setattr(pool._Worker, "send", send_to_the_dead)
    monkeypatch.setattr(pool._Worker, "wants_more", lambda self, gap, most: len(self.sent) < 50)
    result = data.prepare([tmp_path / "in"], tmp_path / "ds", jobs=1, val_fraction=0.1, seed=0,
                          timeout=30, progress=False, reader=f"{__name__}:stub_reader")
    files = {f["path"].rsplit("/in/", 1)[1]: f for f in manifest(tmp_path / "ds")["files"]}
    assert broken  # the parent did write to a dead worker
    assert files["b/crash.mid"]["reason"] == "crashed"
    assert "SIGSEGV" in files["b/crash.mid"]["detail"]
    assert result["ok"] == 40


def test_workers_that_cannot_start_stop_the_run_with_one_line(tmp_path, capsys, monkeypatch):
    """Workers whose reader fails, dies or hangs as they import it are no fault of
    any file: prepare stops with the reason instead of calling every file crashed."""
    write(tmp_path / "in" / "a.mid", midi(TUNE_A))
    (tmp_path / "lib").mkdir()
    in_worker = "import multiprocessing, os\nif multiprocessing.parent_process():\n    "
    (tmp_path / "lib" / "fails_in_workers.py").write_text(in_worker + "raise RuntimeError('no X')\n")
    (tmp_path / "lib" / "dies_in_workers.py").write_text(in_worker + "os._exit(3)\n")
    (tmp_path / "lib" / "hangs_in_workers.py").write_text(in_worker + "__import__('time').sleep(60)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))  # workers take the parent's sys.path
    for reader, timeout, says in (
            ("fails_in_workers:read", 30, "cannot start: RuntimeError: no X"),
            ("dies_in_workers:read", 30, "cannot start: worker exited with code 3"),
            ("hangs_in_workers:read", 1, "cannot start: not ready within 1 s")):
        with pytest.raises(Exception) as caught:
            data.prepare([tmp_path / "in"], tmp_path / "ds", jobs=2, timeout=timeout,
                         progress=False, reader=reader)
        assert caught.type.__name__ == "RunError"
        assert str(caught.value) == f"worker processes {says}"
        assert not (tmp_path / "ds").exists()
    monkeypatch.setattr(data, "prepare", functools.partial(data.prepare, reader=reader))
    assert main(["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "ds"),
                 "--timeout", "1"]) == 1
    assert capsys.readouterr().err == f"melody prepare: error: worker processes {says}\n"


def test_many_tune_abc_file_gives_one_piece_per_tune(tmp_path, capsys):
    tunes = ["CDEF GABc", "cBAG FEDC", "DEFG ABcd"]  # the third is the first a step up
    text = "".join(f"X:{i + 1}\nT:t{i}\nM:4/4\nL:1/4\nK:C\n{t} | {t} |]\n\n"
                   for i, t in enumerate(tunes))
    write(tmp_path / "in" / "tunes.ABC", text.encode())
    result = prepare_cli(capsys, tmp_path / "in", "--out", tmp_path / "ds")
    (entry,) = manifest(tmp_path / "ds")["files"]
    assert [p["id"] for p in entry["pieces"]] == [f"in/tunes.ABC#X:{i}" for i in (1, 2, 3)]
    assert result["pieces"] == 3 and result["ok"] + result["duplicates"] == 3


def test_bad_sources_are_one_line_usage_errors(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nowhere")]) == 2
    assert "source not found" in capsys.readouterr().err
    write(tmp_path / "text" / "readme.txt", b"hello")
    assert main(["prepare", str(tmp_path / "text"), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "no music files" in err and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()  # nothing made for nothing


def test_failed_write_keeps_the_previous_dataset_and_makes_no_new_one(collection, tmp_path,
                                                                     capsys, monkeypatch):
    out = tmp_path / "ds"
    prepare_cli(capsys, collection, "--out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(split.Choice, "write_split", disk_full)
    assert main(["prepare", str(collection), "--out", str(out), "--seed", "9"]) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main(["prepare", str(collection), "--out", str(tmp_path / "new")]) == 1
    assert not data.is_dataset(tmp_path / "new")


def test_a_folder_that_cannot_be_listed_is_reported_not_fatal(collection, tmp_path, capsys,
                                                               monkeypatch):
    scandir = os.scandir

    def locked(path="."):
        if os.path.basename(os.fspath(path)) == "c":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", locked)
    result = prepare_cli(capsys, collection, "--out", tmp_path / "ds")
    assert [os.path.basename(e["path"]) for e in result["unreadable_folders"]] == ["c"]
    assert result["files"] == 4


def test_workers_of_a_parent_with_tensorflow_start_clean(tmp_path, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    write(tmp_path / "in" / "probe.mid", midi(TUNE_A))
    write(tmp_path / "in" / "good.mid", midi(TUNE_B))
    data.prepare([tmp_path / "in"], tmp_path / "ds", jobs=1, val_fraction=0.1, seed=0,
                 timeout=30, progress=False, reader=f"{__name__}:stub_reader")
    files = {os.path.basename(f["path"]): f for f in manifest(tmp_path / "ds")["files"]}
    assert files["probe.mid"]["detail"] == "loaded: "
    assert files["good.mid"]["status"] == "ok"


def test_no_sources_means_the_builtin_folk_corpus(collection, tmp_path, capsys, monkeypatch):
    from melody import corpus

    real = corpus.files()
    assert len(real) >= 20 and all(p.suffix == ".abc" for p in real)
    assert not any(p.name.startswith("test") for p in real)  # music21's parser fixtures
    assert corpus.DATASET.as_posix() == "datasets/folk"
    one = collection / "a" / "one.mid"
    monkeypatch.setattr(corpus, "files", lambda: [one])
    result = prepare_cli(capsys, "--out", tmp_path / "ds")
    assert manifest(tmp_path / "ds")["sources"] == [str(one)]
    assert result["ok"] == 1


def test_a_dataset_parses_its_manifest_only_when_asked(collection, tmp_path, capsys):
    import hashlib

    out = tmp_path / "ds"
    prepare_cli(capsys, collection, "--out", out)
    text = (out / "manifest.json").read_bytes()
    dataset = data.load_dataset(out)
    assert dataset.digest == hashlib.sha256(text).hexdigest()[:16]
    assert dataset.manifest["counts"]["files"] == 5
    (out / "manifest.json").write_bytes(text[:-20])  # training never parses it
    cut = data.load_dataset(out)
    assert len(cut.split("train")) + len(cut.split("val")) == 3
    assert cut.digest == hashlib.sha256(text[:-20]).hexdigest()[:16]
    with pytest.raises(ValueError):
        cut.manifest


def test_a_dangling_link_is_skipped_as_unreadable_every_time(collection, tmp_path, capsys):
    os.symlink(tmp_path / "gone.mid", collection / "link.mid")
    out = tmp_path / "ds"
    for _ in range(2):  # a file that cannot be looked at never lets a rerun take the shortcut
        result = prepare_cli(capsys, collection, "--out", out)
        assert result["skipped"].get("unreadable") == 1 and result["files"] == 6
        entry = next(f for f in manifest(out)["files"] if f["path"].endswith("link.mid"))
        assert entry["reason"] == "unreadable" and "FileNotFoundError" in entry["detail"]
    assert not (out / "cache" / "dataset.json").exists()


def test_a_file_reached_twice_counts_once_where_it_was_first_reached(tmp_path, capsys):
    """Through a link met before or after its folder is listed, or named as a
    source before the folder that holds it: one file, named by its first path."""
    root = tmp_path / "songs"
    for name, tune in (("one", TUNE_A), ("two", TUNE_B), ("three", TUNE_C)):
        write(root / "m" / f"{name}.mid", midi(tune))
    write(root / "m" / "notes.txt", b"not music")
    os.symlink(root / "m" / "one.mid", root / "early.mid")  # met before m/ is listed
    (root / "z").mkdir()
    os.symlink(root / "m" / "three.mid", root / "z" / "late.mid")  # met after m/ is listed
    os.symlink(root / "m" / "two.mid", root / "z" / "again.mid")
    os.symlink(root / "m" / "notes.txt", root / "z" / "notes.mid")
    result = prepare_cli(capsys, root / "m" / "two.mid", root, "--out", tmp_path / "ds")
    m = manifest(tmp_path / "ds")
    assert sorted(os.path.relpath(f["path"], root) for f in m["files"]) == [
        "early.mid", "m/three.mid", "m/two.mid"]
    assert result["files"] == 3 and result["ignored"] == 1 and result["ok"] == 3
    assert sorted(p["id"] for p in m["pieces"]) == [
        "songs/early.mid", "songs/m/three.mid", "two.mid"]


def test_sources_of_the_same_name_keep_their_pieces_apart(tmp_path, capsys):
    for parent, tune in (("x", TUNE_A), ("y", TUNE_B)):
        write(tmp_path / parent / "songs" / "tune.mid", midi(tune))
    result = prepare_cli(capsys, tmp_path / "x" / "songs", tmp_path / "y" / "songs",
                         "--out", tmp_path / "ds")
    ids = [p["id"] for p in manifest(tmp_path / "ds")["pieces"]]
    assert result["ok"] == 2 and sorted(ids) == sorted(
        ["songs/tune.mid", os.path.realpath(tmp_path / "y" / "songs") + "/tune.mid"])


def test_the_on_disk_lists_give_back_what_was_put_in(tmp_path, monkeypatch):
    """prepare's file and record lists live in temporary files: in order and by
    number, across read chunks, with names no encoding can spell."""
    monkeypatch.setattr(scratch.Lines, "CHUNK", 7)  # most lines straddle two chunks
    values = [["songs/a.mid", "songs/\udcff\n.mid", 3, [None]], {"key": "é" * 20}, [], "x"]
    lines = scratch.Lines(tmp_path)
    assert [lines.append(v) for v in values] == [0, 1, 2, 3]
    assert list(lines) == values and [lines[i] for i in (3, 0, 2, 1)] == [values[i] for i in (3, 0, 2, 1)]
    lines.append("late")
    assert len(lines) == 5 and lines[4] == "late" and list(lines)[-1] == "late"
    lines.close()
    assert os.listdir(tmp_path) == []  # nameless: nothing left behind


def test_file_names_in_no_encoding_or_with_a_newline_are_prepared(tmp_path, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    with open(os.fsencode(songs) + b"/\xff-latin1-\xe9.mid", "wb") as f:
        f.write(midi(TUNE_A))
    write(songs / "two\nlines.mid", midi(TUNE_B))
    for read in (2, 0):  # the second run takes it all from the cache
        result = prepare_cli(capsys, songs, "--out", tmp_path / "ds")
        assert result["ok"] == 2 and result["parsed"] == read
    paths = sorted(f["path"] for f in manifest(tmp_path / "ds")["files"])
    assert [os.fsencode(p) for p in paths] == sorted(
        [os.fsencode(songs) + b"/\xff-latin1-\xe9.mid", os.fsencode(songs / "two\nlines.mid")])


def test_prepare_uses_all_cores_where_the_os_cannot_list_them(collection, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS
    assert prepare_cli(capsys, collection, "--out", tmp_path / "ds")["ok"] == 3
