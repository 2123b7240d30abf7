"""The token format: round trips, the grammar, transposition, persistence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melody.notes import Key, Melody
from melody.tokenizer import BAR, BOS, EOS, Tokenizer, TokenizerConfig

TOK = Tokenizer()


@st.composite
def melodies(draw):
    """Grid-aligned monophonic melodies with rests, long notes and pickups."""
    n = draw(st.integers(1, 40))
    pitches = draw(st.lists(st.integers(0, 127), min_size=n, max_size=n))
    durs = draw(st.lists(st.integers(1, 250), min_size=n, max_size=n))
    gaps = draw(st.lists(st.sampled_from([0, 0, 0, 1, 3, 6, 12, 100, 300]), min_size=n, max_size=n))
    onsets, t = [], 0
    for gap, d in zip(gaps, durs):
        t += gap
        onsets.append(t)
        t += d
    onsets = [o - onsets[0] for o in onsets]
    ts = draw(st.sampled_from([(4, 4), (3, 4), (6, 8), (2, 2), (5, 8), None, (11, 16)]))
    key = draw(st.one_of(st.none(), st.builds(Key, st.integers(0, 11), st.sampled_from(["major", "minor"]))))
    phase = draw(st.integers(0, 47))
    return Melody(pitches, onsets, durs, time_signature=ts, key=key, bar_phase=phase)


@settings(max_examples=300, deadline=None)
@given(melodies())
def test_round_trip_keeps_every_note(melody):
    ids = TOK.encode(melody)
    back = TOK.decode(ids)
    np.testing.assert_array_equal(back.pitches, melody.pitches)
    np.testing.assert_array_equal(back.onsets, melody.onsets)
    np.testing.assert_array_equal(back.durations, melody.durations)
    assert back.key == melody.key


@settings(max_examples=300, deadline=None)
@given(melodies())
def test_encoded_melodies_obey_the_grammar(melody):
    ids = TOK.encode(melody)
    assert ids[0] == BOS and ids[-1] == EOS
    assert TOK.is_valid(ids), TOK.decode_names(ids)


@settings(max_examples=200, deadline=None)
@given(melodies())
def test_bar_tokens_mark_every_bar_line(melody):
    ids = TOK.encode(melody)
    bar = melody.bar_steps
    if TOK.ts_of(int(ids[2])) is None:
        assert BAR not in ids
        return
    # Time at each token: BAR tokens stand where time has reached a bar line.
    time = np.cumsum(TOK.steps_of(ids))
    phase = melody.bar_phase % bar
    lines = np.arange(phase, time[-1] + 1, bar)
    assert (ids == BAR).sum() == len(lines)
    bar_positions = np.flatnonzero(ids == BAR)
    for line, pos in zip(lines, bar_positions):
        assert time[pos] >= line


def test_pickup_and_meter_are_kept():
    m = Melody([67, 72, 74], [0, 12, 48], [12, 36, 48], time_signature=(3, 4), bar_phase=12)
    ids = TOK.encode(m)
    names = TOK.decode_names(ids)
    assert names[:5] == ["BOS", "KEY_none", "TS_3/4", "PITCH_67", "DUR_12"]
    assert names[5] == "BAR"
    back = TOK.decode(ids)
    assert back.time_signature == (3, 4) and back.bar_phase == 12


def test_unknown_meter_has_no_bars():
    m = Melody([60, 62], [0, 12], [12, 12], time_signature=(11, 16))
    ids = TOK.encode(m)
    assert TOK.decode_names(ids)[2] == "TS_none"
    assert BAR not in ids


def test_transposition_moves_pitches_and_key():
    m = Melody([60, 64, 67], [0, 12, 24], [12, 12, 12], key=Key.parse("C"))
    table = TOK.transpose_table(2)
    moved = TOK.decode(table[TOK.encode(m)])
    np.testing.assert_array_equal(moved.pitches, [62, 66, 69])
    assert moved.key == Key.parse("D")
    assert TOK.is_valid(table[TOK.encode(m)])


@pytest.mark.parametrize(
    "text,name",
    [("D", "D"), ("F#m", "F#m"), ("Bb minor", "Bbm"), ("c# major", "C#"), ("Ebm", "Ebm"), ("Am", "Am")],
)
def test_key_names(text, name):
    assert Key.parse(text).name == name


@pytest.mark.parametrize("text", ["H", "", "C minor major", "Cx"])
def test_bad_key_names_are_refused(text):
    with pytest.raises(ValueError, match="key must be"):
        Key.parse(text)


def test_config_round_trips_through_json(tmp_path):
    tok = Tokenizer(TokenizerConfig(max_duration=48))
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json") == tok
    assert Tokenizer.load(tmp_path / "tokenizer.json").names == tok.names


def test_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match="unknown tokenizer settings: colour"):
        TokenizerConfig.from_dict({"colour": "blue"})


def test_out_of_range_pitch_is_refused():
    tok = Tokenizer(TokenizerConfig(lowest_pitch=21, highest_pitch=108))
    with pytest.raises(ValueError, match="pitch must be in range 21..108, got 20..60"):
        tok.encode(Melody([20, 60], [0, 12], [12, 12]))
