"""render: WAV you can hear, a piano roll you can read, a score notation software opens."""

import json
import os
import struct
import subprocess
import sys
import wave

import numpy as np
import pretty_midi
import pytest

from melody.cli import main
from melody.outputs import audio, pianoroll
from melody.outputs import score as score_out

SR = 44100
A4, E5 = 69, 76


def make_pm(notes, tempo=120.0, meter=(4, 4), key=None, program=0, is_drum=False):
    """PrettyMIDI from (pitch, start_beat, beats) on one track."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(*meter, 0.0))
    if key is not None:
        pm.key_signature_changes.append(
            pretty_midi.KeySignature(pretty_midi.key_name_to_key_number(key), 0.0))
    add_track(pm, notes, tempo, program, is_drum)
    return pm


def add_track(pm, notes, tempo=120.0, program=0, is_drum=False, name=""):
    beat = 60.0 / tempo
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
    for pitch, start, beats in notes:
        inst.notes.append(pretty_midi.Note(100, pitch, start * beat, (start + beats) * beat))
    pm.instruments.append(inst)
    return pm


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR
        assert w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return x.reshape(-1, w.getnchannels()).astype(np.float64) / 32768.0


def spectrum(x, start=0.0, stop=None):
    """Frequencies and magnitudes of the mono mix between two times."""
    mono = x.mean(axis=1)[int(start * SR): None if stop is None else int(stop * SR)]
    mags = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return np.fft.rfftfreq(len(mono), 1.0 / SR), mags


def peak_hz(x, start=0.0, stop=None):
    freqs, mags = spectrum(x, start, stop)
    return freqs[np.argmax(mags)]


def level_near(x, hz, start=0.0, stop=None):
    """Strongest magnitude within 5 Hz of ``hz``, relative to the whole spectrum's peak."""
    freqs, mags = spectrum(x, start, stop)
    return mags[np.abs(freqs - hz) < 5].max() / mags.max()


def require_fluidsynth():
    """FluidSynth tests run wherever FluidSynth is installed (.ci/run installs it): they
    skip only where its library is missing and MELODY_REQUIRE_FLUIDSYNTH is not 1."""
    import ctypes.util

    if audio.fluidsynth_available():
        return
    reason = f"FluidSynth is not importable ({audio.fluidsynth_problem()})"
    if os.environ.get("MELODY_REQUIRE_FLUIDSYNTH") == "1":
        pytest.fail(f"{reason} but MELODY_REQUIRE_FLUIDSYNTH=1")
    if ctypes.util.find_library("fluidsynth"):
        pytest.fail(f"{reason} though its library is installed; pip install pyfluidsynth "
                    "(the audio extra) to test it")
    pytest.skip(f"{reason}; install libfluidsynth3 and pyfluidsynth to test it")


@pytest.fixture(params=["builtin", "fluidsynth"])
def synth(request):
    if request.param == "fluidsynth":
        require_fluidsynth()
    return request.param


# -- WAV ----------------------------------------------------------------------
def test_a4_sounds_at_440_hz(synth, tmp_path):
    pm = make_pm([(A4, 0, 2)])  # one second at 120 BPM
    used = audio.write_wav(pm, tmp_path / "a4.wav", synth=synth)
    assert used == synth
    x = read_wav(tmp_path / "a4.wav")
    assert abs(peak_hz(x, 0.1, 0.9) - 440.0) < 3.0


def test_wav_is_clean_pcm_of_the_right_length(synth, tmp_path):
    pm = make_pm([(60, 0, 1), (64, 1, 1), (67, 2, 2)])  # ends at 2.0 s
    audio.write_wav(pm, tmp_path / "m.wav", synth=synth)
    x = read_wav(tmp_path / "m.wav")
    seconds = len(x) / SR
    if synth == "builtin":
        assert seconds == pytest.approx(2.0 + audio.SynthConfig().release, abs=0.01)
    else:
        assert 2.0 <= seconds <= 2.0 + audio.FLUID_TAIL_SECONDS + 0.01
    peak = np.abs(x).max()
    assert peak == pytest.approx(10 ** (audio.PEAK_DBFS / 20), abs=0.01)  # loud, not clipped
    assert np.sqrt((x ** 2).mean()) > 0.02  # not silent
    assert np.abs(x.mean(axis=0)).max() < 1e-3  # no DC offset
    assert np.abs(x[:10]).max() < 0.01 and np.abs(x[-10:]).max() < 0.01  # no click at the ends


def test_builtin_notes_fade_in_and_out(tmp_path):
    """A note inside the music starts and ends on an envelope, not a step."""
    pm = make_pm([(A4, 1, 1)])  # 0.5 s of silence, then the note
    audio.write_wav(pm, tmp_path / "a.wav", synth="builtin")
    x = read_wav(tmp_path / "a.wav")[:, 0]
    onset = int(0.5 * SR)
    assert np.abs(x[onset: onset + 20]).max() < 0.05
    assert np.abs(x[onset + int(0.05 * SR): onset + int(0.1 * SR)]).max() > 0.3


def test_every_track_sounds(synth, tmp_path):
    pm = make_pm([(A4, 0, 2)])
    add_track(pm, [(E5, 0, 2)], program=73)
    add_track(pm, [(38, 4, 0.5), (42, 5, 0.5)], is_drum=True)  # after the tones
    audio.write_wav(pm, tmp_path / "mix.wav", synth=synth)
    x = read_wav(tmp_path / "mix.wav")
    assert level_near(x, 440.0, 0.1, 0.9) > 0.1
    assert level_near(x, 659.3, 0.1, 0.9) > 0.1
    drums = x[int(2.0 * SR): int(2.6 * SR)]
    assert np.sqrt((drums ** 2).mean()) > 0.01


def test_default_synth_is_fluidsynth_when_available(tmp_path):
    used = audio.write_wav(make_pm([(A4, 0, 1)]), tmp_path / "d.wav")
    assert used == ("fluidsynth" if audio.fluidsynth_available() else "builtin")


def test_soundfont_without_fluidsynth_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "_fluidsynth_module", lambda: (None, "ImportError: no library"))
    with pytest.raises(ValueError, match="FluidSynth is not available"):
        audio.write_wav(make_pm([(A4, 0, 1)]), tmp_path / "x.wav", soundfont="any.sf2")
    assert audio.write_wav(make_pm([(A4, 0, 1)]), tmp_path / "y.wav") == "builtin"


# -- PNG ------------------------------------------------------------------------------
def test_piano_roll_has_its_documented_size(tmp_path):
    import matplotlib.image

    pm = make_pm([(60, 0, 1), (72, 1, 3)], meter=(3, 4))
    add_track(pm, [(48, 0, 4)], program=32)
    pianoroll.write_png(pm, tmp_path / "roll.png", title="roll.mid")
    img = matplotlib.image.imread(tmp_path / "roll.png")
    assert img.shape[:2] == (600, 1600)
    assert img[..., :3].std() > 0.05  # something is drawn


def test_pitch_names():
    assert [pianoroll.pitch_name(p) for p in (60, 61, 69, 21)] == ["C4", "C#4", "A4", "A0"]


def drawn_roll(pm, path, monkeypatch):
    """Write the piano roll of ``pm``; return the image and the figure that was saved."""
    import matplotlib.image
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    saved, print_png = [], FigureCanvasAgg.print_png
    monkeypatch.setattr(FigureCanvasAgg, "print_png", lambda canvas, *a, **k: (
        saved.append(canvas.figure), print_png(canvas, *a, **k))[1])
    pianoroll.write_png(pm, path)
    (fig,) = saved
    return matplotlib.image.imread(path)[..., :3], fig


def test_piano_roll_draws_bar_lines_on_the_downbeats_and_names_the_pitches(tmp_path, monkeypatch):
    """Four bars of 3/4 at 120 BPM (a bar is 1.5 s), C4 to C5: read from the pixels."""
    pitches = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 64]
    img, fig = drawn_roll(make_pm([(p, i, 1) for i, p in enumerate(pitches)], meter=(3, 4)),
                          tmp_path / "roll.png", monkeypatch)
    ax = fig.axes[0]
    height = img.shape[0]

    def pixel(t, pitch):  # data -> (column, row) of the image
        x, y = ax.transData.transform((t, pitch))
        return int(round(x)), int(round(height - y))

    left, top = pixel(0, 74.5)  # the roll spans two semitones around the notes: 58 to 74
    right, bottom = pixel(6.0, 57.5)
    bar_grey = np.abs(img - 0x90 / 255).max(axis=2) < 0.03  # the bar lines' colour, #909090

    def bar_line_at(t):
        x = pixel(t, 60)[0]
        return bar_grey[top:bottom, x - 1:x + 2].any(axis=1).mean() > 0.6

    assert [bar_line_at(t) for t in (1.5, 3.0, 4.5)] == [True] * 3  # the inner bar lines
    assert not any(bar_line_at(t) for t in (0.5, 1.0, 2.0, 2.5, 3.5, 4.0, 5.0, 5.5))  # beats
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4"]
    assert list(ax.get_xticks()) == [0.0, 1.5, 3.0, 4.5]

    named = {59: "B3", 60: "C4", 62: "D4", 64: "E4", 65: "F4", 67: "G4", 69: "A4", 71: "B4",
             72: "C5", 74: "D5"}
    assert [t.get_text() for t in ax.get_yticklabels()] == list(named.values())
    assert list(ax.get_yticks()) == list(named)
    ink = img.max(axis=2) < 0.5  # text is drawn dark on white

    def label_at(pitch, rows):
        row = pixel(0, pitch)[1]
        return ink[row - rows:row + rows + 1, left - 30:left - 6].any()  # not the tick marks

    assert all(label_at(p, 5) for p in named)  # a name left of each white key's row...
    assert not any(label_at(p, 3) for p in (61, 63, 66, 68, 70, 73))  # ...and none by the black
    assert (left, right) == (80, 1584) and (top, bottom) == (42, 546)  # the layout's margins


# -- MusicXML -------------------------------------------------------------------------
def test_musicxml_round_trip_keeps_notes_key_meter_and_tempo(tmp_path):
    import music21

    notes = [(62, 0, 1), (64, 1, 0.5), (66, 1.5, 0.5),
             (67, 2, 1 / 3), (69, 2 + 1 / 3, 1 / 3), (71, 2 + 2 / 3, 1 / 3),
             (73, 3, 0.25), (74, 3.25, 0.75), (69, 4, 2)]
    pm = make_pm(notes, tempo=90, meter=(3, 4), key="D major", program=73)
    score_out.write_musicxml(pm, tmp_path / "s.musicxml", title="s")
    score = music21.converter.parse(tmp_path / "s.musicxml")
    got = [(n.pitch.midi, float(n.offset_in_score), float(n.quarterLength)) for n in _notes(score)]
    want = [(p, float(s), float(d)) for p, s, d in notes]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[2] for g in got] == pytest.approx([w[2] for w in want], abs=1e-6)
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-6)
    key = next(score.recurse().getElementsByClass(music21.key.KeySignature))
    assert key.sharps == 2
    meter = next(score.recurse().getElementsByClass(music21.meter.TimeSignature))
    assert meter.ratioString == "3/4"
    tempo = next(score.recurse().getElementsByClass(music21.tempo.MetronomeMark))
    assert tempo.number == pytest.approx(90)


def test_musicxml_has_one_part_per_track(tmp_path):
    import music21

    pm = make_pm([(72, 0, 1), (74, 1, 1)])
    add_track(pm, [(48, 0, 2)], program=32)
    score_out.write_musicxml(pm, tmp_path / "two.musicxml")
    score = music21.converter.parse(tmp_path / "two.musicxml")
    parts = [sorted(n.pitch.midi for n in part.recurse().notes) for part in score.parts]
    assert sorted(parts) == [[48], [72, 74]]


def _notes(score):
    for n in score.recurse().notes:
        n.offset_in_score = n.getOffsetInHierarchy(score)
        yield n


# -- the render command ---------------------------------------------------------------
def write_mid(path, pm=None):
    (pm or make_pm([(60, 0, 1), (62, 1, 1), (64, 2, 2)])).write(str(path))
    return path


def run_cli(args, capsys):
    code = main(["render", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_render_writes_all_three_beside_the_file(tmp_path, capsys):
    src = write_mid(tmp_path / "tune.mid")
    code, result, err = run_cli([src], capsys)
    assert code == 0
    entry = result["files"][0]
    assert entry["source"] == str(src)
    assert entry["synth"] in ("fluidsynth", "builtin")
    assert entry["synth"] in err  # the summary says which synthesiser was used
    for kind, name in (("wav", "tune.wav"), ("png", "tune.png"), ("musicxml", "tune.musicxml")):
        assert entry[kind] == str(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
    assert result["errors"] == []


def test_render_never_overwrites(tmp_path, capsys):
    src = write_mid(tmp_path / "tune.mid")
    (tmp_path / "tune.png").write_bytes(b"mine")
    code, result, _ = run_cli([src, "--png", "--out", tmp_path], capsys)
    assert code == 0
    assert result["files"][0]["png"] == str(tmp_path / "tune-2.png")
    assert result["files"][0]["wav"] is None
    assert (tmp_path / "tune.png").read_bytes() == b"mine"
    assert not (tmp_path / "tune.wav").exists()


def test_render_into_out_folder(tmp_path, capsys):
    src = write_mid(tmp_path / "tune.mid")
    code, result, _ = run_cli([src, "--wav", "--musicxml", "--out", tmp_path / "o"], capsys)
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["tune.musicxml", "tune.wav"]


def test_broken_file_is_named_and_others_still_render(tmp_path, capsys):
    good = write_mid(tmp_path / "good.mid")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd but not really")
    code, result, err = run_cli([bad, good, "--png"], capsys)
    assert code == 1
    assert [f["source"] for f in result["files"]] == [str(good)]
    assert result["errors"][0]["source"] == str(bad)
    lines = [line for line in err.splitlines() if "bad.mid" in line]
    assert len(lines) == 1 and "not a readable MIDI file" in lines[0]
    assert not (tmp_path / "bad.png").exists()


def test_nothing_renderable_is_a_usage_error(tmp_path, capsys):
    empty = tmp_path / "empty.mid"
    pretty_midi.PrettyMIDI().write(str(empty))
    code, result, err = run_cli([empty, tmp_path / "missing.mid"], capsys)
    assert code == 2 and result is None
    assert "empty.mid: has no notes" in err
    assert "missing.mid: no such file" in err
    assert "no file could be rendered" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mid"]  # no placeholders left


def test_missing_soundfont_is_one_line(tmp_path, capsys):
    src = write_mid(tmp_path / "tune.mid")
    code, _, err = run_cli([src, "--wav", "--soundfont", tmp_path / "nope.sf2"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "nope.sf2" in err


def test_soundfont_without_fluidsynth_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(audio, "_fluidsynth_module", lambda: (None, "ImportError: no library"))
    src = write_mid(tmp_path / "tune.mid")
    sf2 = tmp_path / "font.sf2"
    sf2.write_bytes(b"RIFF")
    code, _, err = run_cli([src, "--wav", "--soundfont", sf2], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "needs FluidSynth" in err


def _chunk(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _name(text: str) -> bytes:
    return text.encode("ascii").ljust(20, b"\0")


def square_soundfont(path, period: int = 100, rate: int = 44000) -> None:
    """A SoundFont 2 file of one preset (bank 0, program 0), one instrument on every
    key, one sample: a looped square wave of rate / period = 440 Hz at key 69 (A4).
    A square wave has only odd harmonics, at 1/3, 1/5... of the fundamental."""
    wave_ = np.tile(np.r_[np.full(period // 2, 12000), np.full(period // 2, -12000)], 40)
    n = len(wave_)
    pdta = [
        (b"phdr", _name("square") + struct.pack("<HHHIII", 0, 0, 0, 0, 0, 0)
         + _name("EOP") + struct.pack("<HHHIII", 0, 0, 1, 0, 0, 0)),
        (b"pbag", struct.pack("<4H", 0, 0, 1, 0)),
        (b"pmod", bytes(10)),
        (b"pgen", struct.pack("<4H", 41, 0, 0, 0)),  # the preset plays instrument 0
        (b"inst", _name("square") + struct.pack("<H", 0) + _name("EOI") + struct.pack("<H", 1)),
        (b"ibag", struct.pack("<4H", 0, 0, 3, 0)),
        (b"imod", bytes(10)),
        (b"igen", struct.pack("<HBB", 43, 0, 127)  # keys 0-127
         + struct.pack("<6H", 54, 1, 53, 0, 0, 0)),  # looped; sample 0
        (b"shdr", _name("square") + struct.pack("<5IBbHH", 0, n, period, n - period, rate, 69,
                                                 0, 0, 1)
         + _name("EOS") + bytes(26)),
    ]
    info = _chunk(b"LIST", b"INFO" + _chunk(b"ifil", struct.pack("<HH", 2, 1))
                  + _chunk(b"isng", b"EMU8000\0") + _chunk(b"INAM", b"square\0\0"))
    samples = np.r_[wave_, np.zeros(46)].astype("<i2").tobytes()  # 46 zeros end a sample
    sdta = _chunk(b"LIST", b"sdta" + _chunk(b"smpl", samples))
    pdta = _chunk(b"LIST", b"pdta" + b"".join(_chunk(tag, data) for tag, data in pdta))
    path.write_bytes(_chunk(b"RIFF", b"sfbk" + info + sdta + pdta))


@pytest.mark.synth("fluidsynth")
def test_soundfont_changes_the_sound(tmp_path, capsys):
    """The same A4 through pretty_midi's General MIDI piano and through a square-wave
    SoundFont: the same pitch, each with its own harmonics."""
    require_fluidsynth()
    src = write_mid(tmp_path / "tune.mid", make_pm([(A4, 0, 2)]))
    square = tmp_path / "square.sf2"
    square_soundfont(square)
    heard = {}
    for name, flags in (("default", []), ("piano", ["--soundfont", audio.default_soundfont()]),
                        ("square", ["--soundfont", square])):
        code, result, err = run_cli([src, "--wav", "--out", tmp_path / name, *flags], capsys)
        assert code == 0, err
        assert result["files"][0]["synth"] == "fluidsynth"
        heard[name] = read_wav(result["files"][0]["wav"])
    np.testing.assert_array_equal(heard["default"], heard["piano"])  # the default is that piano
    assert not np.array_equal(heard["piano"][: len(heard["square"])],
                              heard["square"][: len(heard["piano"])])
    for x in heard.values():
        assert abs(peak_hz(x, 0.1, 0.9) - 440.0) < 3.0
    harmonic = {name: [level_near(x, k * 440.0, 0.1, 0.9) for k in (2, 3, 5)]
                for name, x in heard.items()}
    second, third, fifth = harmonic["square"]
    assert second < 0.02 and 0.25 < third < 0.42 and 0.12 < fifth < 0.28
    second, _, fifth = harmonic["piano"]
    assert second > 0.1 and fifth < 0.05


def test_module_loads_no_heavy_libraries():
    code = ("import sys, melody.outputs.render; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'music21') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]"
