"""The generate command: files written, what they contain, and what it never does."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mido
import pretty_midi
import pytest
from conftest import randomised, tiny_model

from melody.cli import main
from melody.modelfolder import ModelFolder
from melody.notes import STEPS_PER_QUARTER, Key, Melody
from melody.sample import SampleConfig, sample
from melody.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOK = Tokenizer()


def generate(capsys, *argv):
    """Run ``generate --json ...``; return (exit code, parsed JSON or None, stderr)."""
    code = main(["generate", "--json", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _grid(seconds, tempo=120.0):
    return int(round(seconds * tempo / 60.0 * STEPS_PER_QUARTER))


def notes_by_pretty_midi(path):
    pm = pretty_midi.PrettyMIDI(str(path))
    return [(n.pitch, _grid(n.start), _grid(n.end) - _grid(n.start)) for n in pm.instruments[0].notes]


def notes_by_mido(path):
    mid = mido.MidiFile(str(path))
    tpq, tick, started, notes = mid.ticks_per_beat, 0, {}, []
    for msg in mido.merge_tracks(mid.tracks):
        tick += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            started[msg.note] = tick
        elif msg.type in ("note_off", "note_on") and msg.note in started:
            on = started.pop(msg.note)
            notes.append((msg.note, on, tick))
    steps = lambda t: int(round(t * STEPS_PER_QUARTER / tpq))  # noqa: E731
    return sorted((p, steps(on), steps(off) - steps(on)) for p, on, off in notes)


def notes_by_music21(path):
    import music21

    score = music21.converter.parse(str(path), quantizePost=False)
    out = []
    for n in score.stripTies().flatten().notes:
        on = int(round(float(n.offset) * STEPS_PER_QUARTER))
        end = int(round(float(n.offset + n.quarterLength) * STEPS_PER_QUARTER))
        out.append((n.pitch.midi, on, end - on))
    return out


def test_writes_midi_and_sidecars_with_the_json_keys(capsys, tmp_path, model_folder):
    code, result, _ = generate(capsys, "--model", model_folder, "-n", 3, "--seed", 5,
                               "--out", tmp_path, "--notes", 10, "--tempo", 90, "--program", 40)
    assert code == 0
    assert set(result) >= {"files", "seed", "model"} and result["seed"] == 5
    assert [Path(f["midi"]).name for f in result["files"]] == [f"melody-5-{i}.mid" for i in (1, 2, 3)]
    for f in result["files"]:
        side = json.loads(Path(f["json"]).read_text())
        assert side["seed"] == 5 and side["model"] == str(model_folder)
        digest = json.loads((model_folder / "config.json").read_text())["weights_digest"]
        assert side["weights_digest"] == digest
        assert side["arguments"]["notes"] == 10 and side["arguments"]["tempo"] == 90
        assert side["notes"] == f["notes"] and side["seconds"] == f["seconds"]
        assert side["files"]["midi"] == f["midi"]
        pm = pretty_midi.PrettyMIDI(f["midi"])
        assert pm.instruments[0].program == 40
        assert abs(pm.get_tempo_changes()[1][0] - 90) < 1e-3  # MIDI stores whole microseconds
        assert len(pm.instruments[0].notes) == f["notes"] <= 10
        meter = pm.time_signature_changes
        assert (f"{meter[0].numerator}/{meter[0].denominator}" if meter else None) == \
            side["time_signature"]


def test_same_seed_same_bytes_other_seed_other_bytes(capsys, tmp_path, model_folder):
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        code, result, _ = generate(capsys, "--model", model_folder, "-n", 2, "--seed", seed,
                                   "--out", tmp_path / name, "--name", "x")
        assert code == 0
        runs[name] = [Path(f["midi"]).read_bytes() for f in result["files"]]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_a_fresh_seed_is_drawn_recorded_and_reproduces(capsys, tmp_path, model_folder):
    code, first, _ = generate(capsys, "--model", model_folder, "-n", 1, "--out", tmp_path / "a")
    side = json.loads(Path(first["files"][0]["json"]).read_text())
    assert side["seed"] == first["seed"]
    code, again, _ = generate(capsys, "--model", model_folder, "-n", 1, "--out", tmp_path / "b",
                              "--seed", first["seed"])
    assert Path(first["files"][0]["midi"]).read_bytes() == Path(again["files"][0]["midi"]).read_bytes()


def test_never_overwrites(capsys, tmp_path, model_folder):
    args = ("--model", model_folder, "-n", 2, "--seed", 3, "--out", tmp_path)
    _, first, _ = generate(capsys, *args)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    _, second, _ = generate(capsys, *args, "--notes", 5)
    names = [Path(f["midi"]).name for f in second["files"]]
    assert names == ["melody-3-1-2.mid", "melody-3-2-2.mid"]
    assert len(before) == 4  # two melodies and their sidecars, each still as it was
    for name, (data, mtime) in before.items():
        assert ((tmp_path / name).read_bytes(), (tmp_path / name).stat().st_mtime_ns) == (data, mtime)
    assert len(list(tmp_path.iterdir())) == 2 * len(before)


def test_files_read_back_give_exactly_the_sampled_notes(capsys, tmp_path, model_folder):
    code, result, _ = generate(capsys, "--model", model_folder, "-n", 2, "--seed", 11,
                               "--out", tmp_path, "--notes", 24)
    expected = sample(ModelFolder(model_folder).network, TOK, SampleConfig(n=2, notes=24, seed=11))
    for f, tokens in zip(result["files"], expected):
        melody = TOK.decode(tokens)
        lead = melody.lead_in_steps  # a pickup starts after silence, on the MIDI bar grid
        want = list(zip(melody.pitches.tolist(), (melody.onsets + lead).tolist(),
                        melody.durations.tolist()))
        assert len(want) == f["notes"]
        assert notes_by_pretty_midi(f["midi"]) == want
        assert notes_by_mido(f["midi"]) == sorted(want)
        assert notes_by_music21(f["midi"]) == want


def test_bars_end_on_the_bar_line_and_range_key_hold(capsys, tmp_path, model_folder):
    code, result, _ = generate(capsys, "--model", model_folder, "-n", 4, "--seed", 2, "--bars", 3,
                               "--key", "Gm", "--lowest", "G3", "--highest", 79, "--out", tmp_path)
    assert code == 0
    key = Key.parse("Gm")
    for f in result["files"]:
        side = json.loads(Path(f["json"]).read_text())
        num, den = map(int, side["time_signature"].split("/"))
        bar = num * 4 * STEPS_PER_QUARTER // den
        pm = pretty_midi.PrettyMIDI(f["midi"])
        notes = pm.instruments[0].notes
        length = _grid(side["seconds"])
        assert 3 * bar <= length < 4 * bar  # three bars after a pickup shorter than a bar
        # A pickup is preceded by silence in the file, so the end lands on a MIDI bar line.
        lead = _grid(side["lead_in_seconds"])
        assert lead < bar and (lead + length) % bar == 0
        assert _grid(notes[0].start) >= lead
        assert all(_grid(n.end) <= lead + length for n in notes)
        assert all(55 <= n.pitch <= 79 and n.pitch % 12 in key.scale_pitch_classes() for n in notes)
        assert pm.key_signature_changes[0].key_number == key.tonic + 12


def test_primer_is_continued_and_its_end_recorded(capsys, tmp_path, model_folder):
    primer = Melody([67, 69, 71, 72, 74, 72, 71, 69], [0, 12, 24, 36, 48, 60, 72, 84], [12] * 8,
                    time_signature=(4, 4), key=Key.parse("G"), tempo=100)
    primer.write_midi(tmp_path / "primer.mid")
    code, result, _ = generate(capsys, "--model", model_folder, "-n", 2, "--seed", 1, "--notes", 6,
                               "--primer", tmp_path / "primer.mid", "--out", tmp_path / "out")
    assert code == 0
    for f in result["files"]:
        pm = pretty_midi.PrettyMIDI(f["midi"])
        got = [(n.pitch, _grid(n.start, 100), _grid(n.end, 100) - _grid(n.start, 100))
               for n in pm.instruments[0].notes]
        assert got[:8] == list(zip(primer.pitches.tolist(), primer.onsets.tolist(), [12] * 8))
        assert 9 <= len(got) <= 14
        side = json.loads(Path(f["json"]).read_text())
        assert side["primer"]["notes"] == 8
        assert side["primer"]["seconds"] == pytest.approx(96 / STEPS_PER_QUARTER * 60 / 100)
        assert side["primer"]["file"] == str(tmp_path / "primer.mid")


def test_unreadable_primer_is_one_line(capsys, tmp_path, model_folder):
    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    code, _, err = generate(capsys, "--model", model_folder, "--primer", bad, "--out", tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err


@pytest.mark.parametrize("make", [
    lambda d: None,  # missing folder
    lambda d: (d.mkdir(), (d / "config.json").write_text("{}")),
    lambda d: (d.mkdir(), [(d / n).write_text("junk") for n in ("config.json", "tokenizer.json", "model.keras")]),
], ids=["missing", "empty", "junk"])
def test_bad_model_folder_is_one_line(capsys, tmp_path, make):
    folder = tmp_path / "m"
    make(folder)
    code, _, err = generate(capsys, "--model", folder, "--out", tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and str(folder) in err


def test_generate_never_imports_tensorflow(tmp_path, model_folder):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "app.py"), "generate", "--model",
         str(model_folder), "-n", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = [line.split("|")[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")]
    assert "melody.sample" in modules and "h5py" in modules
    heavy = [m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "music21", "matplotlib")]
    assert heavy == []


def test_wav_png_musicxml_are_written_beside_the_midi(capsys, tmp_path, model_folder):
    code, result, _ = generate(capsys, "--model", model_folder, "-n", 1, "--seed", 4, "--notes", 6,
                               "--out", tmp_path, "--wav", "--png", "--musicxml")
    assert code == 0
    f = result["files"][0]
    side = json.loads(Path(f["json"]).read_text())
    for kind in ("wav", "png", "musicxml"):
        assert Path(f[kind]) == tmp_path / f"melody-4-1.{kind}"
        assert Path(f[kind]).stat().st_size > 0
        assert side["files"][kind] == f[kind]
    assert Path(f["wav"]).read_bytes()[:4] == b"RIFF"
    assert Path(f["png"]).read_bytes()[:4] == b"\x89PNG"


# -- the same seed in another process ------------------------------------------------------
@pytest.fixture(scope="module")
def random_folder(tmp_path_factory):
    """A tiny model folder with every weight random, so its distributions are far from flat."""
    from melody.model import ModelConfig, build_model

    model = randomised(build_model(ModelConfig(vocab_size=TOK.vocab_size, embedding=8, units=16,
                                               layers=2)), seed=5, scale=0.8)
    return tiny_model(tmp_path_factory.mktemp("random"), model=model, layers=2)


def test_same_seed_same_bytes_in_separate_processes_with_every_control(tmp_path, random_folder):
    """Two processes (string hashing seeded differently) and this one write the same bytes."""
    pitches = [67, 69, 70, 72, 74, 72, 70, 69]  # in G minor
    primer = Melody(pitches, [12 * i for i in range(8)], [12] * 8, time_signature=(4, 4),
                    key=Key.parse("Gm"))
    primer.write_midi(tmp_path / "primer.mid")
    flags = ["generate", "--model", random_folder, "-n", 3, "--seed", 9, "--key", "Gm",
             "--bars", 4, "--primer", tmp_path / "primer.mid", "--top-p", 0.9,
             "--temperature", 0.8, "--name", "x"]
    runs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"process-{hash_seed}"
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=hash_seed)
        proc = subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, flags),
                               "--out", str(out)], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append([(out / f"x-{i}.mid").read_bytes() for i in (1, 2, 3)])
    assert main([*map(str, flags), "--out", str(tmp_path / "here")]) == 0
    runs.append([(tmp_path / "here" / f"x-{i}.mid").read_bytes() for i in (1, 2, 3)])
    assert runs[0] == runs[1] == runs[2]
    assert len(set(runs[0])) == 3  # three different melodies, each continuing the primer
    for data in runs[0]:
        notes = pretty_midi.PrettyMIDI(io.BytesIO(data)).instruments[0].notes
        assert [n.pitch for n in notes[:8]] == pitches
        assert len(notes) > 8


# -- velocities ------------------------------------------------------------------------------
def test_velocities_accent_the_downbeats(capsys, tmp_path, random_folder):
    """Every note sounds (velocity > 0); notes on a bar line are louder than the rest."""
    code, result, _ = generate(capsys, "--model", random_folder, "-n", 3, "--seed", 4,
                               "--bars", 4, "--out", tmp_path)
    assert code == 0
    expected = sample(ModelFolder(random_folder).network, TOK, SampleConfig(n=3, bars=4, seed=4))
    accented = plain = 0
    for f, tokens in zip(result["files"], expected):
        melody = TOK.decode(tokens)
        bar = melody.bar_steps
        assert bar, "--bars needs a meter"
        on_bar = ((melody.onsets - melody.bar_phase) % bar == 0).tolist()
        mid = mido.MidiFile(f["midi"])
        velocities = [m.velocity for m in mido.merge_tracks(mid.tracks)
                      if m.type == "note_on" and m.velocity > 0]
        offs = [m for m in mido.merge_tracks(mid.tracks)
                if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0)]
        assert len(velocities) == len(offs) == melody.n_notes
        assert velocities == [92 if first else 80 for first in on_bar]
        accented, plain = accented + sum(on_bar), plain + on_bar.count(False)
    assert accented and plain  # both kinds of note were checked


def test_a_melodys_own_velocities_are_written():
    from melody.outputs.midi import midi_bytes

    melody = Melody([60, 62, 64], [0, 12, 24], [12] * 3, velocities=[10, 64, 127])
    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(melody)))
    assert [n.velocity for n in pm.instruments[0].notes] == [10, 64, 127]


# -- primers in other formats ----------------------------------------------------------------
PRIMER_PITCHES = [62, 64, 66, 67, 69, 71, 69, 66, 62]  # D E F# G A B A F# D, in D major


def abc_primer(path):
    path.write_text("X:1\nT:primer\nM:3/4\nL:1/4\nK:D\nD E F | G A B | A F D |]\n")


def musicxml_primer(path):
    import music21

    part = music21.stream.Part()
    part.append(music21.meter.TimeSignature("3/4"))
    part.append(music21.key.Key("D"))
    for p in PRIMER_PITCHES:
        part.append(music21.note.Note(p, quarterLength=1))
    score = music21.stream.Score()
    score.insert(0, part)
    score.write("musicxml", fp=str(path))


@pytest.mark.parametrize("suffix, write", [(".abc", abc_primer), (".musicxml", musicxml_primer)],
                         ids=["abc", "musicxml"])
def test_primer_from_a_score_file_is_continued(capsys, tmp_path, model_folder, suffix, write):
    path = tmp_path / f"primer{suffix}"
    write(path)
    code, result, err = generate(capsys, "--model", model_folder, "-n", 2, "--seed", 3,
                                 "--bars", 5, "--primer", path, "--out", tmp_path / "out")
    assert code == 0, err
    for f in result["files"]:
        side = json.loads(Path(f["json"]).read_text())
        assert side["primer"]["file"] == str(path) and side["primer"]["notes"] == 9
        assert side["time_signature"] == "3/4" and side["key"] == "D"
        notes = pretty_midi.PrettyMIDI(f["midi"]).instruments[0].notes
        tempo = side["arguments"]["resolved"]["tempo"]
        got = [(n.pitch, _grid(n.start, tempo), _grid(n.end, tempo) - _grid(n.start, tempo))
               for n in notes]
        assert got[:9] == [(p, 12 * i, 12) for i, p in enumerate(PRIMER_PITCHES)]
        assert len(got) > 9  # and continued
        assert _grid(side["seconds"], tempo) == (3 + 5) * 36  # the primer's three bars, then 5
