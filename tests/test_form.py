"""Form: the context a model reads (what came 1, 2, 4, 8 bars back) and --form when generating."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TOK, run, tiny_model

from melody.context import BAR_IDS, POSITIONS, Tracker, piece_context
from melody.modelfolder import ModelFolder
from melody.notes import Melody
from melody.sample.sampler import _Context

NONE = TOK.vocab_size
PHRASE = [60, 62, 64, 65, 67, 65, 64, 62]  # two bars of 4/4 quarter notes


def tokens_of(pitches, durations=12, time_signature=(4, 4), bar_phase=0):
    durations = np.broadcast_to(durations, (len(pitches),))
    onsets = np.cumsum(durations) - durations
    return TOK.encode(Melody(pitches, onsets, durations, time_signature=time_signature,
                             bar_phase=bar_phase))


def context_before(tokens, i, lookback=(1, 2)):
    """The context the model reads when predicting token i."""
    back, position, bar = piece_context(tokens, TOK, lookback)
    return [TOK.names[t] if t < NONE else None for t in back[i - 1]], position[i - 1], bar[i - 1]


def positions_of(tokens, pitch):
    return [i for i, t in enumerate(tokens) if t == TOK.pitch_id(pitch)]


def test_a_repeated_half_sees_the_first_half_one_and_two_bars_back():
    tokens = tokens_of(PHRASE + PHRASE)
    third_bar_start = positions_of(tokens, 60)[1]  # bar 3 starts the repeat
    back, position, bar = context_before(tokens, third_bar_start)
    assert back == [f"PITCH_{PHRASE[4]}", "PITCH_60"]  # bar 2 one back, bar 1 two back
    assert (position, bar) == (0, 3)
    # Every token of the repeat is the token two bars back: the model can copy it.
    lookback, _, _ = piece_context(tokens, TOK, (2,))
    start = third_bar_start - 1  # the bar line before it
    repeat = range(start, len(tokens) - 2)  # up to the final bar line and EOS
    assert [int(lookback[i - 1, 0]) for i in repeat] == [int(tokens[i]) for i in repeat]


def test_a_pickup_has_no_position_until_the_first_bar_line():
    tokens = tokens_of([55] + PHRASE, bar_phase=12)  # a quarter-note pickup in 4/4
    back, position, bar = context_before(tokens, 3)  # the pickup note itself
    assert back == [None, None] and position == POSITIONS - 1 and bar == 0
    first_downbeat = positions_of(tokens, 60)[0]
    assert context_before(tokens, first_downbeat)[1:] == (0, 1)
    # One bar after the pickup's place: the lookback finds it.
    one_bar_on = [i for i in range(4, len(tokens)) if TOK.names[tokens[i]] == "PITCH_65"][0]
    assert context_before(tokens, one_bar_on)[0][0] == "PITCH_55"


def test_the_meter_sets_the_distance():
    waltz = [60, 64, 67, 65, 62, 59]  # two bars of 3/4
    tokens = tokens_of(waltz * 2, time_signature=(3, 4))
    fourth_bar = positions_of(tokens, 65)[1]  # bar 4 = bar 2 again
    back, position, bar = context_before(tokens, fourth_bar)
    assert back == ["PITCH_60", "PITCH_65"] and position == 0 and bar == 4
    eighths = tokens_of(PHRASE, durations=6, time_signature=(6, 8))  # 6/8: 6 eighths a bar
    assert context_before(eighths, positions_of(eighths, 64)[1])[0][0] == "PITCH_60"


def test_no_meter_no_context():
    tokens = tokens_of(PHRASE + PHRASE, time_signature=None)
    back, position, bar = piece_context(tokens, TOK, (1, 2, 4, 8))
    assert (back == NONE).all() and (position == POSITIONS - 1).all() and (bar == BAR_IDS - 1).all()


def test_sampling_computes_the_context_as_training_does(tmp_path):
    folder = ModelFolder(tiny_model(tmp_path / "m", lookback=(1, 2, 4, 8)))
    batch = folder.sample(folder_config(n=4, bars=8, seed=2))
    for sequence in batch.sequences:
        tracker = _Context(TOK, (1, 2, 4, 8), np.array(sequence[:1]))
        steps = [tracker.push(np.array([0]), np.array([t])) for t in sequence[1:-1]]
        back, position, bar = piece_context(sequence, TOK, (1, 2, 4, 8))
        assert [s[0][0].tolist() for s in steps] == back[1:-1].tolist()
        assert [int(s[1][0]) for s in steps] == position[1:-1].tolist()
        assert [int(s[2][0]) for s in steps] == bar[1:-1].tolist()
        assert (back[3:] != NONE).any()  # the context was really used


def folder_config(**kwargs):
    from melody.config import SampleConfig

    return SampleConfig(**kwargs)


def test_the_tracker_counts_header_tokens_apart():
    tracker = Tracker(TOK, (1,))
    for t in tokens_of(PHRASE)[:3]:  # BOS KEY TS
        context = tracker.push(t)
    assert tracker.bar == 48 and context == ([NONE], POSITIONS - 1, 0)


# -- --form -----------------------------------------------------------------------------------
def bars_of(melody: Melody) -> list[tuple]:
    bar = melody.bar_steps
    index = (melody.onsets - melody.bar_phase) // bar
    return [tuple(zip((melody.onsets[index == k] - melody.bar_phase - k * bar).tolist(),
                      melody.pitches[index == k].tolist(), melody.durations[index == k].tolist()))
            for k in range(int(index.max()) + 1)]


@pytest.mark.parametrize("lookback", [(1, 2, 4, 8), ()], ids=["context", "tokens-only"])
def test_form_brings_sections_back_and_ends_on_the_tonic(tmp_path, lookback):
    folder = ModelFolder(tiny_model(tmp_path / "m", lookback=lookback))
    for melody in folder.generate(3, form="AABA", bars=12, seed=4, key="G"):
        bars = bars_of(melody)
        assert len(bars) == 12  # 4 sections of 3 bars, ending on the bar line
        a1, a2, b, a3 = bars[0:3], bars[3:6], bars[6:9], bars[9:12]
        assert a2[:2] == a1[:2] and a3[:2] == a1[:2]  # A comes back; its last bar may vary
        assert b[:2] != a1[:2]  # B is new material
        assert melody.pitches[-1] % 12 == 7  # a cadence on G


def test_form_without_a_key_ends_on_the_tonic_of_the_key_it_chose(tmp_path):
    folder = ModelFolder(tiny_model(tmp_path / "m"))
    melodies = folder.generate(6, form="AB", bars=4, seed=9)
    assert all(m.pitches[-1] % 12 == m.key.tonic for m in melodies if m.key is not None)
    assert sum(m.key is not None for m in melodies) >= 4


@pytest.mark.parametrize("argv,named", [
    (["--form", "AAB", "--bars", 8], "multiple of 3"),
    (["--form", "AB", "--notes", 8], "give bars, not notes"),
    (["--form", "A-B"], "section letters"),
])
def test_bad_forms_are_one_line(tmp_path, capsys, argv, named):
    code, out, err = run(capsys, "generate", "--model", tiny_model(tmp_path / "m"), *argv,
                         "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and named in err, err


def test_generate_takes_the_form_flag_and_records_it(tmp_path, capsys, model_folder):
    code, out, err = run(capsys, "generate", "--model", model_folder, "--form", "abab", "-n", 1,
                         "--seed", 1, "--out", tmp_path, "--json")
    assert code == 0, err
    side = json.loads(open(json.loads(out)["files"][0]["json"]).read())
    assert side["arguments"]["form"] == "ABAB" and side["notes"] > 0


def test_a_model_folder_from_before_form_context_still_generates(tmp_path):
    folder = tiny_model(tmp_path / "old", lookback=())
    config = json.loads((folder / "config.json").read_text())
    for key in ("lookback", "lookback_embedding", "position_embedding"):
        del config["model"][key]  # as config.json was written before form context existed
    (folder / "config.json").write_text(json.dumps(config))
    opened = ModelFolder(folder)
    assert opened.model_config.lookback == () and opened.network.lookback == 0
    assert len(opened.generate(2, bars=4, seed=1)) == 2


def test_a_new_section_is_steered_away_from_the_earlier_pitches():
    from melody.config import SampleConfig
    from melody.sample.form import NOVELTY, Form

    form = Form(TOK, SampleConfig(n=1, form="AB", bars=4), batch=1)
    first_section = tokens_of(PHRASE)[:-2]  # two bars, without the final bar line and EOS
    for t in first_section:
        form.update([t])
    form.update([TOK.ids["BAR"]])  # the second section starts
    allowed = np.ones((1, TOK.vocab_size), bool)
    _, bias = form.steer(np.array([0]), allowed, None)
    assert bias[0, TOK.pitch_id(60)] == -NOVELTY  # A's first pitch, at this place in A
    assert np.count_nonzero(bias) == 1
