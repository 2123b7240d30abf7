"""What a run leaves on disk when it is killed, runs beside another, meets special files or
finds nothing usable: outputs whole or absent, no temporaries outliving it, one writer
per output folder, never a file replaced that it did not create."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import ROOT, TINY, make_dataset, run, run_cli, tune, write_songs

from melody import fileio
from melody.errors import UsageError
from melody.fileio import OutputSet, sweep
from melody.lock import LOCK_FILE, FolderLock


def spawn(*argv, cwd) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hidden(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.startswith(".") or p.name.endswith(".tmp"))


def sets(folder: Path) -> dict:
    """Stem -> the suffixes present."""
    found = defaultdict(set)
    for p in folder.iterdir():
        if not p.name.startswith("."):
            found[p.stem].add(p.suffix)
    return dict(found)


def wait_for(condition, seconds=120.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


# -- output sets: together or not at all, never over a file ---------------------------------


def test_a_set_appears_whole_and_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    with OutputSet(tmp_path, "tune", (".mid", ".json")) as s:
        s.temp(".mid").write_bytes(b"MThd")
        s.temp(".json").write_text("{}")
        assert sets(tmp_path) == {}  # nothing visible before the commit
    assert sets(tmp_path) == {"tune": {".mid", ".json"}} and hidden(tmp_path) == []

    s = OutputSet(tmp_path, "tune", (".mid", ".json"))
    assert s.name == "tune-2"
    s.temp(".mid").write_bytes(b"new")
    s.temp(".json").write_text("{}")
    (tmp_path / "tune-2.json").write_text("the user's")  # made while the set was written
    with pytest.raises(FileExistsError):
        s.commit()
    assert (tmp_path / "tune-2.json").read_text() == "the user's"
    assert not (tmp_path / "tune-2.mid").exists() and hidden(tmp_path) == []


def test_concurrent_sets_never_share_a_name(tmp_path):
    names, errors = [], []

    def reserve():
        try:
            for _ in range(10):
                with OutputSet(tmp_path, "tune", (".mid",)) as s:
                    s.temp(".mid").write_bytes(b"x")
                    names.append(s.name)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reserve) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(names)) == len(names) == 60
    assert len(list(tmp_path.glob("*.mid"))) == 60 and hidden(tmp_path) == []


def test_sweep_removes_what_dead_runs_left_and_leaves_live_ones(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from melody.fileio import OutputSet, move_new
        s = OutputSet({str(tmp_path)!r}, "half", (".mid", ".wav", ".json"))
        for suffix in (".mid", ".wav", ".json"):
            s.temp(suffix).write_bytes(b"x")
        move_new(s.temp(".mid"), s.path(".mid"))  # killed in the middle of its commit
        os._exit(9)
    """)
    subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert (tmp_path / "half.mid").exists() and hidden(tmp_path)
    live = OutputSet(tmp_path, "live", (".mid", ".json"))
    live.temp(".mid").write_bytes(b"x")
    dead_tmp = tmp_path / f".a.mid.{fileio.process_tag().split('-')[0]}-{dead_pid()}-x1.tmp"
    live_tmp = tmp_path / f".b.mid.{fileio.process_tag()}-x2.tmp"
    for p in (dead_tmp, live_tmp):
        p.write_bytes(b"x")
    sweep(tmp_path)
    assert not (tmp_path / "half.mid").exists() and not dead_tmp.exists()
    assert hidden(tmp_path) == sorted([".live.mid.tmp", ".live.reserved", live_tmp.name])
    live.discard()
    live_tmp.unlink()
    assert list(tmp_path.iterdir()) == []


def test_sweep_never_touches_a_reservation_that_is_not_ours(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    folder = tmp_path / "out"
    (folder / "x").mkdir(parents=True)  # so that "x/../../precious.txt" leads out
    (folder / ".x.reserved").write_text(json.dumps({"pid": 1, "suffixes": ["/../../precious.txt"]}))
    (folder / ".y.reserved").write_text("an other program's")
    sweep(folder)
    assert outside.read_text() == "keep"
    assert sorted(p.name for p in folder.iterdir()) == [".x.reserved", ".y.reserved", "x"]


# -- generate killed ------------------------------------------------------------------------

GENERATE = ["-n", 40, "--notes", 16, "--seed", 3, "--wav", "--png", "--musicxml"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_generate_killed_leaves_whole_melodies_and_the_next_run_sweeps(sig, capsys, tmp_path,
                                                                       model_folder):
    out = tmp_path / "out"
    proc = spawn(ROOT / "app.py", "generate", "--model", model_folder, *GENERATE, "--out", out,
                 cwd=tmp_path)
    wait_for(lambda: out.is_dir() and any(out.glob("*.json")))
    time.sleep(0.15)  # into the middle of a later melody
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert err.strip().splitlines()[-1] == "melody generate: terminated by SIGTERM"
        assert hidden(out) == []  # cleaned up on the way out
    else:
        assert proc.returncode == -9
    whole = {".mid", ".json", ".wav", ".png", ".musicxml"}
    partial = {stem: got for stem, got in sets(out).items() if got != whole}
    assert partial == {}, partial  # MIDI, sidecar and extras appear together
    code, _, err = run(capsys, "generate", "--model", model_folder, "-n", 1, "--notes", 6,
                       "--out", out)
    assert code == 0, err
    assert hidden(out) == []  # the killed run's temporaries are gone
    assert all(got in (whole, {".mid", ".json"}) for got in sets(out).values())


# -- one writer per folder ---------------------------------------------------------------------


def test_a_second_train_into_a_folder_being_written_is_refused_naming_the_first(tmp_path):
    data = make_dataset(tmp_path / "ds", pieces=30)
    out = tmp_path / "m"
    first = spawn(ROOT / "app.py", "train", "--data", data, "--out", out, *TINY, "--epochs", 3,
                  "--steps-per-epoch", 100000, cwd=tmp_path)
    try:
        for line in first.stderr:
            if line.startswith("Epoch 1/"):
                break
        code, _, err = run_cli("train", "--data", data, "--out", out, *TINY, "--epochs", 1)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{out} is being written by another run (train, process {first.pid} on" in err
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 143, err
        assert "terminated by SIGTERM" in err and "Traceback" not in err
        assert not (out / LOCK_FILE).exists() and hidden(out) == []
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_prepare_is_refused_while_another_run_holds_the_folder(capsys, tmp_path):
    songs = write_songs(tmp_path / "songs", 4)
    out = tmp_path / "ds"
    with FolderLock(out, "train"):
        code, _, err = run(capsys, "prepare", songs, "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert f"being written by another run (train, process {os.getpid()} on" in err


def test_a_stale_lock_and_a_killed_runs_staging_are_taken_over_and_removed(capsys, tmp_path):
    songs = write_songs(tmp_path / "songs", 4)
    out = tmp_path / "ds"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": "h", "command": "prepare",
                                             "started": "then"}))
    staging = out / f".new.{fileio.process_tag()}-abc.tmp"
    staging.mkdir()
    (staging / "train.tokens.npy").write_bytes(b"half")
    (out / ".manifest.json.x-1-y.tmp").write_bytes(b"half")
    code, _, err = run(capsys, "prepare", songs, "--out", out)
    assert code == 0, err
    assert "was left by a run that is no longer running (prepare, process" in err
    assert hidden(out) == [] and (out / "manifest.json").exists()


def test_resume_with_other_data_is_refused_unless_asked(capsys, tmp_path):
    first, other = make_dataset(tmp_path / "a", pieces=30), make_dataset(tmp_path / "b", pieces=30,
                                                                        seed=4)
    out = tmp_path / "m"
    args = ["train", "--out", out, *TINY, "--steps-per-epoch", 3]
    assert run_cli(*args, "--data", first, "--epochs", 1, "--json")[0] == 0
    code, _, err = run_cli(*args, "--data", other, "--epochs", 2, "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "one history would mix two validation splits" in err and "--allow-data-change" in err
    code, result, err = run_cli(*args, "--data", other, "--epochs", 2, "--resume",
                                "--allow-data-change", "--json")
    assert code == 0, err
    assert "the best score starts over" in err
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["folder"] == str(other) and result["best_epoch"] == 2


def test_train_never_replaces_a_file_it_did_not_make_and_says_when_it_cannot_write(
        capsys, tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "ds", pieces=20)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("the user's own")
    code, _, err = run(capsys, "train", "--data", data, "--out", mine, *TINY)
    assert code == 2 and "holds config.json, which is not from a run of train" in err
    assert (mine / "config.json").read_text() == "the user's own"

    ro, real_open = tmp_path / "ro", os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(str(ro)):
            raise OSError(30, os.strerror(30), str(path))
        return real_open(path, flags, *args, **kwargs)

    ro.mkdir()
    monkeypatch.setattr(os, "open", read_only)
    code, out, err = run(capsys, "train", "--data", data, "--out", ro / "m", *TINY)
    monkeypatch.undo()
    assert (code, out, err.count("\n")) == (2, "", 1), err
    assert "cannot write in" in err and "Read-only file system" in err


def test_evaluate_never_replaces_an_existing_png(capsys, tmp_path, model_folder):
    from melody.evaluation import evaluate
    from melody.musicality.picture import draw

    victim = tmp_path / "config.json"
    victim.write_text("precious")
    code, _, err = run(capsys, "evaluate", "--model", model_folder, "--png", victim)
    assert code == 2 and "exists; evaluate never replaces a file" in err
    with pytest.raises(UsageError, match="never replaces"):
        evaluate(model_folder, png=victim)
    with pytest.raises(FileExistsError):  # a file that appears meanwhile is kept too
        draw([], [], victim)
    assert victim.read_text() == "precious" and hidden(tmp_path) == []


# -- special files and nothing usable ----------------------------------------------------------


def test_render_opens_only_regular_files(capsys, tmp_path):
    good = tmp_path / "good.mid"
    good.write_bytes(tune(1))
    os.mkfifo(tmp_path / "pipe.mid")
    os.symlink("/dev/zero", tmp_path / "zero.mid")
    (tmp_path / "folder.mid").mkdir()
    code, _, err = run(capsys, "render", tmp_path / "pipe.mid", tmp_path / "zero.mid",
                       tmp_path / "folder.mid", good, "--png", "--out", tmp_path / "out")
    assert code == 1, err
    for name, says in (("pipe", "is a FIFO, not a regular file"),
                       ("zero", "is a device, not a regular file"),
                       ("folder", "is a folder")):
        assert f"{name}.mid: {says}" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_render_gives_up_a_file_past_its_time_or_memory_and_goes_on(tmp_path):
    import pretty_midi

    from melody.outputs.render import render

    dense = pretty_midi.PrettyMIDI()
    for track in range(8):
        inst = pretty_midi.Instrument(program=track)
        inst.notes = [pretty_midi.Note(80, 40 + (i * 7 + track) % 40, i * 0.01, i * 0.01 + 0.05)
                      for i in range(5000)]
        dense.instruments.append(inst)
    dense.write(str(tmp_path / "dense.mid"))
    long = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(80, 60, 0, 1), pretty_midi.Note(80, 62, 500, 501)]
    long.instruments.append(inst)
    long.write(str(tmp_path / "long.mid"))
    (tmp_path / "good.mid").write_bytes(tune(2))
    out = tmp_path / "out"
    started = time.monotonic()
    result = render([tmp_path / "dense.mid", tmp_path / "good.mid"], musicxml=True, out=out,
                    timeout=1)
    assert time.monotonic() - started < 60
    assert result["errors"] == [{"source": str(tmp_path / "dense.mid"),
                                 "error": "took over 1 s (the time limit)"}]
    result = render([tmp_path / "long.mid", tmp_path / "good.mid"], wav=True, out=out,
                    memory_limit=2**28)
    (error,) = result["errors"]
    assert error["error"].startswith(("out of memory", "crashed")), error
    assert sorted(p.name for p in out.iterdir()) == ["good.musicxml", "good.wav"]


def test_a_fifo_among_the_music_files_is_skipped_at_once(capsys, tmp_path, model_folder):
    songs = write_songs(tmp_path / "songs", 10)
    os.mkfifo(songs / "pipe.mid")
    started = time.monotonic()
    code, _, err = run(capsys, "prepare", songs, "--out", tmp_path / "ds", "--timeout", 20)
    assert code == 0, err
    assert time.monotonic() - started < 15  # not read until the time limit
    files = json.loads((tmp_path / "ds" / "manifest.json").read_text())["files"]
    (fifo,) = [f for f in files if f["path"].endswith("pipe.mid")]
    assert fifo["reason"] == "unreadable" and "a FIFO, not a regular file" in fifo["detail"]
    code, _, err = run(capsys, "generate", "--model", model_folder, "--primer", songs / "pipe.mid",
                       "--out", tmp_path / "out")
    assert code == 2 and "not a regular file" in err


def test_a_collection_without_a_melody_is_an_error_and_train_says_why(capsys, tmp_path):
    songs = tmp_path / "songs"
    songs.mkdir()
    (songs / "broken.mid").write_bytes(b"MThd junk")
    (songs / "short.mid").write_bytes(tune(1, n=3))
    code, _, err = run(capsys, "prepare", songs, "--out", tmp_path / "ds")
    assert code == 2 and err.count("\n") == 1
    assert "no melody in" in err and "2 pieces of 2 files, all skipped" in err
    assert "1 too short" in err and "manifest.json" in err
    code, _, err = run(capsys, "train", "--data", tmp_path / "ds", "--out", tmp_path / "m", *TINY)
    assert code == 2 and "holds no pieces: no file of its collection yielded a melody" in err
    assert "--val-fraction" not in err


def _descendants(pid: int) -> set:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found.update(map(int, children))
        todo.extend(map(int, children))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_a_render_killed_by_sigkill_takes_its_worker_with_it(tmp_path):
    import pretty_midi

    dense = pretty_midi.PrettyMIDI()
    for track in range(8):
        inst = pretty_midi.Instrument(program=track)
        inst.notes = [pretty_midi.Note(80, 40 + (i * 7 + track) % 40, i * 0.01, i * 0.01 + 0.05)
                      for i in range(8000)]
        dense.instruments.append(inst)
    dense.write(str(tmp_path / "dense.mid"))
    proc = subprocess.Popen([sys.executable, ROOT / "app.py", "render", tmp_path / "dense.mid",
                             "--musicxml"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(_descendants(proc.pid)) >= 3)  # forkserver, its worker, a tracker
    time.sleep(1)
    workers = _descendants(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    wait_for(lambda: not any(_running(p) for p in workers), seconds=15)
