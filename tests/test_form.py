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
    from melody.sample.form import NOVELTY, Form, section_plan

    form = Form(TOK, [section_plan("AB", 4)])
    first_section = tokens_of(PHRASE)[:-2]  # two bars, without the final bar line and EOS
    for t in first_section:
        form.update([t])
    form.update([TOK.ids["BAR"]])  # the second section starts
    allowed = np.ones((1, TOK.vocab_size), bool)
    _, bias = form.steer(np.array([0]), allowed, None)
    assert bias[0, TOK.pitch_id(60)] == -NOVELTY  # A's first pitch, at this place in A
    assert np.count_nonzero(bias) == 1


# -- forms drawn from the collection ------------------------------------------------------------
def test_a_bar_plan_names_the_earlier_bar_each_bar_repeats():
    from melody.musicality.form import bar_plan, plan_letters

    def tune(pitches, time_signature=(4, 4)):
        return Melody(pitches, np.arange(len(pitches)) * 12, [12] * len(pitches),
                      time_signature=time_signature)

    def letters(melody):
        return plan_letters(bar_plan(melody))

    new = (-1, 0, 0)
    assert bar_plan(tune(PHRASE * 2)) == [new, new, (0, 0, 0), (1, 0, 0)]  # AB, then AB again
    up = [p + 2 for p in PHRASE[:4]]
    assert letters(tune(PHRASE[:4] + up + PHRASE[:4] + [72, 71, 69, 67])) == "AaAB"
    assert bar_plan(tune(PHRASE[:4] + up))[1] == (0, 2, 0)  # a step higher
    varied = tune(PHRASE[:4] + PHRASE[:3] + [72] + PHRASE[:1] + [72, 71, 69])
    assert bar_plan(varied) == [new, (0, 0, 36), new]  # 3 notes alike: the start comes back
    pickup = Melody([55] + PHRASE * 2, [0] + list(range(12, 16 * 12 + 12, 12)), [12] * 17,
                    bar_phase=12)
    assert letters(pickup) == "ABAB"  # the pickup is not a bar
    assert letters(tune(PHRASE * 2, time_signature=(2, 4))) == "ABCcABCc"  # 2/4: 2-beat bars
    assert bar_plan(tune(PHRASE * 2, time_signature=None)) == []  # no meter, no bars
    rest = Melody(PHRASE[:4] * 2, list(range(0, 48, 12)) + list(range(96, 144, 12)), [12] * 8)
    assert letters(rest) == "ABA"  # a silent bar is no repeat


def test_forms_are_written_and_read_back_as_lines():
    from melody.sample.form import form_line, read_forms

    plan = ((-1, 0, 0), (-1, 0, 0), (0, 0, 0), (1, -3, 0), (0, 0, 24))
    line = "20 . . 0 1-3 0:24"
    assert form_line(20, plan) == line and read_forms([line]) == [(20, plan)]
    for bad in ("20 . 1", "x . .", "0 .", "20 . -3", "20 0", "20 . 0+", "20 . 0+x", "20 . 0:",
                "20 . 0:-4", 7):
        with pytest.raises(ValueError):
            read_forms([bad])


def test_a_damaged_form_prior_is_one_line(tmp_path):
    from melody.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match="form_prior.*earlier bar"):
        with_forms(tiny_model(tmp_path / "m"), ["12 . 5"])


def with_forms(folder, forms):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, form_prior=forms)))
    return ModelFolder(folder)


def test_each_melody_follows_a_form_of_the_collection_and_ends_with_it(tmp_path):
    folder = with_forms(tiny_model(tmp_path / "m"), ["16 . 0 . 0 1"] * 3)  # AABAA
    melodies = [m for m in folder.generate(8, seed=2) if m.time_signature]
    assert len(melodies) >= 4
    for m in melodies:
        bars = bars_of(m)
        assert len(bars) <= 5 and m.end <= m.bar_phase + 5 * m.bar_steps  # it ends with the form
        assert bars[1] == bars[0] and bars[3] == bars[0]  # bars 2 and 4 bring bar 1 back
        if len(bars) == 5:  # the last bar too, though its end may make room for a cadence
            assert bars[4][:2] == bars[1][:2]
    free = [m for m in folder.generate(8, seed=2, free_form=True) if m.time_signature]
    assert sum(bars_of(m)[1] == bars_of(m)[0] for m in free if len(bars_of(m)) > 1) < len(free) / 2


def test_a_bar_can_come_back_in_part(tmp_path):
    folder = with_forms(tiny_model(tmp_path / "m"), ["12 . 0:24 ."])  # its first half again
    melodies = [m for m in folder.generate(8, seed=6) if m.time_signature]
    halves = [[[n for n in bar if n[0] < 24] for bar in bars_of(m)[:2]] for m in melodies]
    assert len(melodies) >= 4 and all(first == second for first, second in halves)
    assert not all(bars_of(m)[1] == bars_of(m)[0] for m in melodies)  # the rest is free


def test_a_bar_can_come_back_transposed_within_the_key(tmp_path):
    folder = with_forms(tiny_model(tmp_path / "m"), ["12 . 0+2 ."])  # a bar, then a step higher
    melodies = [m for m in folder.generate(8, seed=5, highest=84, key="C") if m.time_signature]
    room = [m for m in melodies if max(p for _, p, _ in bars_of(m)[0]) <= 82]  # room to go up
    assert len(room) >= 4

    def step_up(p):  # two semitones, or one where two would leave C major
        return p + 2 if (p + 2) % 12 in (0, 2, 4, 5, 7, 9, 11) else p + 1

    assert all(bars_of(m)[1] == tuple((o, step_up(p), d) for o, p, d in bars_of(m)[0]) for m in room)


def test_a_form_is_drawn_from_pieces_of_about_the_length_asked_for(tmp_path):
    from melody.sample.form import collection_plan

    new, again = (-1, 0, 0), (0, 0, 0)
    prior = [(10, (new, again))] * 5 + [(100, (new, new, new))] * 25
    rng = np.random.default_rng(0)
    assert {collection_plan(prior, rng, notes=11).source for _ in range(20)} == {(-1, 0)}
    assert {collection_plan(prior, rng, bars=3).source for _ in range(20)} == {(-1, -1, -1)}
    assert collection_plan([(9, (new, new, again))], rng, bars=2).source == (-1, -1)  # cut
    assert {collection_plan(prior, rng, most=64).source for _ in range(20)} == {(-1, 0)}
    assert collection_plan([], rng) is None
    # --bars keeps its length whatever the form drawn, and --form wins over the collection's
    folder = with_forms(tiny_model(tmp_path / "m"), ["8 . 0+2"])
    assert all(len(bars_of(m)) == 6 for m in folder.generate(4, bars=6, seed=1, key="C"))
    for m in folder.generate(3, form="AB", bars=4, seed=4, key="G"):
        assert bars_of(m)[2:] != bars_of(m)[:2]


def test_a_new_bar_of_a_drawn_form_does_not_end_as_an_earlier_bar_did():
    from melody.sample.form import Form, collection_plan

    plan = collection_plan([(8, ((-1, 0, 0), (-1, 0, 0)))], np.random.default_rng(0))
    tokens = list(tokens_of([p + 2 for p in PHRASE[:4]] + PHRASE[:4]))  # bar 2 = bar 1, lower
    for form in (Form(TOK, [plan]), Form(TOK, [None])):  # a drawn form, and none
        for t in tokens[:tokens.index(TOK.ids["BAR"], 4) + 8]:  # bar 2 but for its last DUR
            form.update([t])
        allowed, _ = form.steer(np.array([0]), np.ones((1, TOK.vocab_size), bool), None)
        assert allowed[0, TOK.ids["DUR_12"]] == (form.plans[0] is None)  # bar 1 a tone lower
        assert allowed[0, TOK.ids["DUR_6"]] and allowed[0, TOK.pitch_id(60)]


def test_a_drawn_form_ends_on_a_tonic_held_to_its_last_bar_line(tmp_path):
    folder = with_forms(tiny_model(tmp_path / "m"), ["8 . ."])  # two new bars
    melodies = [m for m in folder.generate(6, seed=3, key="C") if m.time_signature]
    assert len(melodies) >= 3
    for m in melodies:
        assert m.pitches[-1] % 12 == 0  # C
        assert m.end == m.bar_phase + 2 * m.bar_steps  # held to the end of the form
        last_bar = m.pitches[m.onsets >= m.bar_phase + m.bar_steps]
        assert list(last_bar % 12).index(0) == len(last_bar) - 1  # the first C in it is the last note
