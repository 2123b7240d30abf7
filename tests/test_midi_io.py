"""Reading music files into one melody: round trips, track choice, music21 formats."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from midi_factory import (
    chords,
    key_signature,
    lyric,
    note_off,
    note_on,
    notes,
    program_change,
    scale,
    smf,
    tempo,
    time_signature,
    track,
    track_name,
)

from melody.inputs import (
    MIN_NOTES,
    SkipFile,
    melody_from_midi_bytes,
    parts,
    read_melody,
    skyline,
)
from melody.notes import Key, Melody
from melody.outputs.midi import midi_bytes, write_midi
from melody.tokenizer import Tokenizer


def same_notes(a: Melody, b: Melody) -> None:
    assert a.pitches.tolist() == b.pitches.tolist()
    assert a.onsets.tolist() == b.onsets.tolist()
    assert a.durations.tolist() == b.durations.tolist()


def pm_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    import io

    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def instrument(pitches, starts, length, program=0, name="", is_drum=False, velocity=80):
    inst = pretty_midi.Instrument(program=program, name=name, is_drum=is_drum)
    for p, s in zip(pitches, starts):
        inst.notes.append(pretty_midi.Note(velocity, p, s, s + length))
    return inst


ROUND_TRIPS = {
    "quarters": Melody(scale(10), np.arange(10) * 12, [12] * 10),
    "mixed rhythm": Melody(
        [67, 69, 71, 72, 74, 72, 71, 69, 67, 66],
        [0, 9, 12, 18, 24, 36, 40, 44, 48, 72],
        [9, 3, 6, 6, 12, 4, 4, 4, 24, 48],
        time_signature=(6, 8),
    ),
    "rests and repeats": Melody(
        [60, 60, 60, 64, 64, 67, 67, 60, 72, 48],
        [0, 12, 30, 48, 49, 96, 100, 200, 300, 301],
        [12, 12, 6, 1, 11, 3, 50, 1, 1, 95],
    ),
    "extremes": Melody([0, 127, 1, 126, 60, 60, 61, 62], np.arange(8) * 1000, [999] * 8, tempo=40),
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_written_midi_reads_back_the_same_notes(name, tmp_path):
    melody = ROUND_TRIPS[name]
    path = tmp_path / "m.mid"
    write_midi(melody, path)
    got = read_melody(path)
    same_notes(got, melody)
    assert got.time_signature == melody.time_signature
    assert got.source == str(path)


D_MINOR = [62, 64, 65, 67, 69, 70, 72, 74, 73, 74, 69, 62]
C_MINOR = [60, 62, 63, 65, 67, 68, 70, 72, 67, 63, 62, 60]


def test_key_time_signature_tempo_and_program_are_kept():
    melody = Melody(
        D_MINOR, np.arange(12) * 12, [12] * 12,
        tempo=96.0, time_signature=(3, 4), key=Key(2, "minor"), program=73,
    )
    got = melody_from_midi_bytes(midi_bytes(melody))
    assert got.tempo == pytest.approx(96.0, abs=1e-3)
    assert got.time_signature == (3, 4)
    assert got.key == Key(2, "minor")
    assert got.program == 73


def test_key_is_estimated_without_a_key_signature():
    data = smf([track(*notes([60, 64, 67, 72, 67, 64, 60, 62, 64, 65, 67, 60]))])
    assert melody_from_midi_bytes(data).key == Key(0, "major")


def test_without_time_signature_the_meter_is_four_four():
    data = smf([track(*notes(scale(9)))])
    assert melody_from_midi_bytes(data).time_signature == (4, 4)


def test_pickup_sets_bar_phase_and_leading_silence_is_removed():
    # 3/4 with the first note on beat 3: one beat before the first downbeat.
    data = smf([track(time_signature(0, 3, 4), tempo(0, 100), note_on(960, 60), note_off(480, 60),
                      *notes(scale(9, 62)))])
    got = melody_from_midi_bytes(data)
    assert got.onsets[0] == 0
    assert got.bar_phase == 12
    assert got.onsets[1] == 12


def test_timing_is_read_in_ticks_not_seconds():
    # A tempo change halfway must not stretch the grid.
    events = [tempo(0, 60)] + notes(scale(5), ticks=96) + [tempo(0, 180)] + notes(scale(5, 72), ticks=96)
    got = melody_from_midi_bytes(smf([track(*events)], division=96))
    assert got.onsets.tolist() == [i * 12 for i in range(10)]
    assert got.durations.tolist() == [12] * 10


def test_off_grid_ticks_round_to_the_nearest_step():
    # 480 ticks per quarter: 40 ticks per step; 59 ticks rounds to 1 step, 61 to 2.
    events = [note_on(0, 60), note_off(59, 60), note_on(0, 62), note_off(61, 62)]
    events += notes(scale(8, 64), ticks=480)
    got = melody_from_midi_bytes(smf([track(*events)]))
    assert got.onsets[:3].tolist() == [0, 1, 3]
    assert got.durations[:2].tolist() == [1, 2]


def chorale(order):
    voices = {
        "Soprano": [72, 74, 76, 77, 79, 77, 76, 74, 72],
        "Alto": [67, 67, 69, 69, 71, 69, 67, 67, 64],
        "Tenor": [64, 62, 60, 62, 62, 60, 60, 59, 60],
        "Bass": [48, 47, 45, 50, 43, 45, 48, 43, 48],
    }
    pm = pretty_midi.PrettyMIDI()
    for name in order:
        pm.instruments.append(instrument(voices[name], np.arange(9) * 0.5, 0.5, 52, name=name))
    return pm_bytes(pm), voices["Soprano"]


@pytest.mark.parametrize("order", [("Soprano", "Alto", "Tenor", "Bass"), ("Bass", "Tenor", "Alto", "Soprano")])
def test_chorale_gives_the_soprano(order):
    data, soprano = chorale(order)
    got = melody_from_midi_bytes(data)
    assert got.pitches.tolist() == soprano
    assert got.track_name == "Soprano"


def test_chorale_with_unnamed_voices_gives_the_top_voice():
    data, soprano = chorale(("Bass", "Tenor", "Alto", "Soprano"))
    data = data.replace(b"Soprano", b"Track 1").replace(b"Alto", b"Tr 2")
    assert melody_from_midi_bytes(data).pitches.tolist() == soprano


def pop_song(lead_name: str):
    pm = pretty_midi.PrettyMIDI()
    t = np.arange(16) * 0.5
    pm.instruments.append(instrument([36, 43] * 8, t, 0.5, program=33, name="Bass"))
    pm.instruments.append(instrument([42, 38, 81, 49] * 4, t, 0.25, name="Drums", is_drum=True))
    pad = pretty_midi.Instrument(program=48, name="Strings")
    for start in np.arange(8):
        for p in (76, 79, 84):
            pad.notes.append(pretty_midi.Note(60, p, float(start), float(start) + 1.0))
    pm.instruments.append(pad)
    lead = [64, 67, 69, 67, 64, 62, 60, 62, 64, 67, 69, 72, 69, 67, 64, 62]
    pm.instruments.append(instrument(lead, t, 0.5, program=80, name=lead_name))
    return pm_bytes(pm), lead


@pytest.mark.parametrize("lead_name", ["Lead Vocal", "Synth 2"])
def test_pop_song_gives_the_lead_not_bass_drums_or_chords(lead_name):
    data, lead = pop_song(lead_name)
    got = melody_from_midi_bytes(data)
    assert got.pitches.tolist() == lead
    assert got.program == 80
    assert got.track_index == 4  # pretty_midi writes a tempo track first


def test_drums_are_never_chosen_even_when_highest():
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(instrument([81] * 32, np.arange(32) * 0.25, 0.25, is_drum=True, name="Melody"))
    pm.instruments.append(instrument(scale(10, 48), np.arange(10) * 0.5, 0.5))
    assert melody_from_midi_bytes(pm_bytes(pm)).pitches.tolist() == scale(10, 48)


def test_format_zero_file_splits_channels():
    # One track, two channels: a bass on channel 2 under the tune on channel 1.
    tune = scale(10, 72)
    events = [program_change(0, 33, 1)]
    for p in tune:
        events += [note_on(0, 36, channel=1), note_on(0, p), note_off(480, 36, channel=1), note_off(0, p)]
    got = melody_from_midi_bytes(smf([track(*events)]))
    assert got.pitches.tolist() == tune
    assert got.program == 0


def test_program_change_in_another_track_applies_to_its_channel():
    conductor = track(tempo(0, 100), program_change(0, 71, channel=2))
    got = melody_from_midi_bytes(smf([conductor, track(*notes(scale(9), channel=2))]))
    assert got.program == 71


def test_chords_reduce_to_their_top_notes():
    data = smf([track(*chords([(60, 64, 67), (62, 65, 69), (64, 67, 72)] * 3))])
    got = melody_from_midi_bytes(data)
    assert got.pitches.tolist() == [67, 69, 72] * 3
    assert got.durations.tolist() == [12] * 9


def test_skyline_keeps_a_held_top_note_and_cuts_at_the_next_onset():
    held = [(0, 48, 79), (0, 6, 48), (6, 12, 50), (12, 18, 52), (48, 60, 77), (50, 54, 78)]
    assert skyline(held) == [(0, 48, 79), (48, 50, 77), (50, 54, 78)]
    # A short legato overlap into a lower note does not swallow it.
    assert skyline([(0, 13, 74), (12, 24, 72)]) == [(0, 12, 74), (12, 24, 72)]


def test_kar_file_with_lyrics_reads_its_melody(tmp_path):
    words = track(track_name(0, "Words"), lyric(0, b"@KMIDI KARAOKE FILE"), lyric(480, b"\\Hel"),
                  lyric(480, b"lo \xe9t\xe9 \xff\xfe"))
    tune = track(track_name(0, "Melody"), *notes(scale(10, 67)))
    path = tmp_path / "song.KAR"
    path.write_bytes(smf([track(tempo(0, 110)), words, tune]))
    got = read_melody(path)
    assert got.pitches.tolist() == scale(10, 67)
    assert got.track_name == "Melody"
    assert got.tempo == pytest.approx(110, abs=0.01)


def test_key_signature_event_sets_the_key():
    data = smf([track(key_signature(0, -3, minor=True), *notes(C_MINOR))])
    assert melody_from_midi_bytes(data).key == Key(0, "minor")  # three flats, minor


def test_a_key_signature_the_notes_contradict_is_not_believed():
    # Sequencers write C major by default; this tune is in E major.
    e_major = [64, 66, 68, 69, 71, 73, 75, 76, 71, 68, 64, 64]
    data = smf([track(key_signature(0, 0), *notes(e_major))])
    assert melody_from_midi_bytes(data).key == Key(4, "major")


def test_fewer_than_min_notes_is_too_short():
    data = smf([track(*notes(scale(MIN_NOTES - 1)))])
    with pytest.raises(SkipFile) as err:
        melody_from_midi_bytes(data)
    assert err.value.reason == "too short"


# -- music21 formats ------------------------------------------------------------------


SCORE_BARS = [[(69,), (71,), (72,)], [(72, 76), (74,), (72,)], [(71,), (69,), (68,)], [(69,), (64,), (69,)]]


def music21_score():
    """Two parts in A minor, 3/4 with a one-beat pickup; the flute is on top."""
    from music21 import chord, key, meter, note, stream
    from music21 import tempo as m21tempo

    score = stream.Score()
    for index, shift in enumerate((0, -24)):
        part = stream.Part()
        part.partName = ("Flute", "Cello")[index]
        pickup = stream.Measure(number=0)
        pickup.append(meter.TimeSignature("3/4"))
        if index == 0:
            pickup.append(key.Key("A", "minor"))
            pickup.append(m21tempo.MetronomeMark(number=84))
        pickup.append(note.Note(64 + shift, quarterLength=1))
        pickup.paddingLeft = 2
        part.append(pickup)
        for number, bar in enumerate(SCORE_BARS, start=1):
            measure = stream.Measure(number=number)
            for pitches, length in zip(bar, (2, 0.5, 0.5)):
                if len(pitches) > 1:
                    measure.append(chord.Chord([p + shift for p in pitches], quarterLength=length))
                else:
                    measure.append(note.Note(pitches[0] + shift, quarterLength=length))
            part.append(measure)
        score.insert(0, part)
    return score


@pytest.mark.parametrize("fmt,ext", [("musicxml", ".musicxml"), ("musicxml", ".xml"), ("mxl", ".mxl")])
def test_musicxml_gives_the_top_part(fmt, ext, tmp_path):
    path = tmp_path / f"score{ext}"
    music21_score().write(fmt, fp=str(path))
    got = read_melody(path)
    assert got.pitches.tolist() == [64, 69, 71, 72, 76, 74, 72, 71, 69, 68, 69, 64, 69]
    assert got.onsets.tolist()[:5] == [0, 12, 36, 42, 48]
    assert got.durations.tolist()[:3] == [12, 24, 6]
    assert got.time_signature == (3, 4)
    assert got.key == Key(9, "minor")
    assert got.tempo == 84
    assert got.bar_phase == 12
    assert got.track_name == "Flute"


ABC_TWO_TUNES = """%abc-2.1
L:1/8

X:1
T:First
M:3/4
K:G
D|G2 AB cd|e2 dc BA|G4 FG|A6|

X:2
T:Second
M:6/8
Q:1/4=100
K:Dm
DEF GAB|c2B A2G|F2E D3|
"""


def test_abc_with_several_tunes_lists_and_reads_each(tmp_path):
    path = tmp_path / "tunes.abc"
    path.write_text(ABC_TWO_TUNES)
    assert parts(path) == ["X:1", "X:2"]
    first, second = (read_melody(path, p) for p in parts(path))
    assert first.pitches.tolist()[:4] == [62, 67, 69, 71]
    assert first.time_signature == (3, 4)
    assert first.key == Key(7, "major")
    assert first.bar_phase == 6  # an eighth-note pickup
    assert first.durations.tolist()[:2] == [6, 12]
    assert second.pitches.tolist()[:3] == [62, 64, 65]
    assert second.time_signature == (6, 8)
    assert second.key == Key(2, "minor")
    assert second.tempo == 100
    assert second.bar_phase == 0


def test_a_single_tune_abc_file_is_one_part(tmp_path):
    path = tmp_path / "one.abc"
    path.write_text(ABC_TWO_TUNES.split("\nX:2")[0])
    assert parts(path) == [None]
    assert read_melody(path).n_notes == 15
    assert parts(tmp_path / "x.mid") == [None]


def test_abc_ties_make_one_note(tmp_path):
    path = tmp_path / "tie.abc"
    path.write_text("X:1\nM:4/4\nL:1/8\nK:C\nc2 d2 e2 f2-|f2 g2 a2 b2|c'8|\n")
    got = read_melody(path)
    assert got.pitches.tolist() == [72, 74, 76, 77, 79, 81, 83, 84]
    assert got.durations.tolist() == [12, 12, 12, 24, 12, 12, 12, 48]


def test_abc_from_music21_corpus_style_header_defaults(tmp_path):
    # The header's L: applies to every tune.
    path = tmp_path / "h.abc"
    path.write_text("L:1/4\nM:4/4\n\nX:7\nK:C\nCDEF|GABc|\n\nX:8\nK:C\nc2BA|GFED|C4|\n")
    first = read_melody(path, "X:7")
    assert first.durations.tolist() == [12] * 8


# -- properties -------------------------------------------------------------------------


@st.composite
def grid_melodies(draw, min_notes=MIN_NOTES):
    n = draw(st.integers(min_notes, 40))
    pitches = draw(st.lists(st.integers(21, 108), min_size=n, max_size=n))
    durations = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    gaps = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    onsets, pos = [], 0
    for d, g in zip(durations, gaps):
        pos += g if onsets else 0
        onsets.append(pos)
        pos += d
    ts = draw(st.sampled_from([(4, 4), (3, 4), (6, 8), (2, 2)]))
    bar = Melody([], [], [], time_signature=ts).bar_steps
    phase = draw(st.integers(0, bar - 1))
    return Melody(pitches, onsets, durations, time_signature=ts, bar_phase=phase,
                  tempo=draw(st.sampled_from([60.0, 97.0, 120.0, 180.0])))


@settings(max_examples=60, deadline=None)
@given(grid_melodies())
def test_tokens_round_trip_on_the_grid(melody):
    tok = Tokenizer()
    back = tok.decode(tok.encode(melody))
    same_notes(back, melody)


@settings(max_examples=60, deadline=None)
@given(grid_melodies())
def test_midi_bytes_round_trip_on_the_grid(melody):
    same_notes(melody_from_midi_bytes(midi_bytes(melody)), melody)
