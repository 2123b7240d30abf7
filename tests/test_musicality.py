"""Musicality features, the Yang-Lerch set comparison, originality and the drawing."""

import math
import struct
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melody.musicality import comparison, features, form, originality, picture
from melody.musicality import report as mreport
from melody.notes import Melody


def tune(pitches, durations=12, time_signature=(4, 4)):
    """Notes played one after another, no rests."""
    durations = np.broadcast_to(durations, (len(pitches),))
    onsets = np.cumsum(durations) - durations
    return Melody(pitches, onsets, durations, time_signature=time_signature)


C_MAJOR = tune([60, 62, 64, 65, 67, 69, 71, 72])  # C4 .. C5, quarter notes, two bars of 4/4


def stepwise(rng, n=40):
    """Diatonic melody in C moving by steps, in simple rhythms."""
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16, 17, 19, 21, 23])
    degree = np.cumsum(rng.choice([-2, -1, 0, 1, 2], n)) % len(scale)
    return tune(60 + scale[degree], rng.choice([6, 12, 12, 24], n))


def atonal(rng, n=40):
    """Random leaps over three octaves, in odd durations."""
    return tune(rng.integers(48, 84, n), rng.choice([3, 4, 9, 16, 30], n))


# -- features -------------------------------------------------------------------


def test_c_major_scale_reads_as_a_musician_expects():
    f = features.melody_features(C_MAJOR)
    assert f["pitch_range"] == 12
    assert f["pitch_classes_used"] == 7
    assert f["scale_consistency"] == 1.0
    np.testing.assert_allclose(f["pitch_classes"][[0, 2, 4, 5, 7, 9, 11]], [2 / 8] + [1 / 8] * 6)
    assert f["pitch_classes"][[1, 3, 6, 8, 10]].sum() == 0
    # five whole steps and two half steps (E-F, B-C), all upwards
    intervals = dict(zip(features.INTERVAL_LABELS, f["intervals"]))
    assert intervals["2"] == pytest.approx(5 / 7) and intervals["1"] == pytest.approx(2 / 7)
    assert dict(zip(features.DURATION_LABELS, f["durations"]))["12"] == 1.0
    assert f["note_density"] == 4.0  # four quarter notes per 4/4 bar
    # interval patterns 221 212 122 222 221: only 2-2-1 comes back
    assert f["repetition"] == pytest.approx(2 / 5)
    expected = -(0.25 * math.log2(0.25) + 6 * 0.125 * math.log2(0.125))
    assert f["pitch_class_entropy"] == pytest.approx(expected)


def test_density_without_meter_counts_per_quarter_note():
    assert features.note_density(tune([60, 62, 64, 65], 6, time_signature=None)) == 2.0
    assert features.note_density(tune([60, 62, 64], 12, time_signature=(6, 8))) == 3.0


def test_harmonic_minor_is_in_scale_and_chromatic_is_not():
    a_minor = tune([69, 71, 72, 74, 76, 77, 80, 81])  # with the raised seventh G#
    assert features.scale_consistency(a_minor) == 1.0
    chromatic = tune(range(60, 72))
    assert features.scale_consistency(chromatic) == pytest.approx(7 / 12)
    assert features.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))
    assert features.pitch_class_entropy(tune([60] * 5)) == 0.0


def test_repetition_of_a_repeated_motif_and_of_a_melody_without_repeats():
    motif = [60, 62, 64, 60]
    assert features.repetition(tune(motif * 3)) == 1.0
    assert features.repetition(tune([60, 61, 63, 66, 70, 75, 81])) == 0.0
    # same pitches, different rhythm: not the same pattern
    assert features.repetition(tune(motif * 2, [12, 12, 12, 12, 6, 6, 6, 6])) < 1.0


def test_histogram_bins_clip_leaps_and_long_notes():
    m = tune([60, 79, 60], [5, 100, 12])
    intervals = dict(zip(features.INTERVAL_LABELS, features.interval_histogram(m)))
    assert intervals["12"] == 0.5 and intervals["-12"] == 0.5
    durations = dict(zip(features.DURATION_LABELS, features.duration_histogram(m)))
    assert durations["6"] == durations[">48"] == durations["12"] == pytest.approx(1 / 3)


def test_features_of_an_empty_or_single_note_melody_are_defined():
    for m in (tune([]), tune([60])):
        f = features.melody_features(m)
        assert all(np.all(np.isfinite(v)) for v in f.values())
        assert f["repetition"] == 0.0 and f["intervals"].sum() == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(21, 108), min_size=1, max_size=30), st.integers(-12, 12))
def test_features_other_than_pitch_classes_ignore_transposition(pitches, shift):
    a = features.melody_features(tune(pitches))
    b = features.melody_features(tune(pitches).transpose(shift))
    for name in ("pitch_range", "intervals", "durations", "note_density", "scale_consistency",
                 "repetition", "pitch_class_entropy", "pitch_classes_used"):
        np.testing.assert_allclose(a[name], b[name])
    for name in ("pitch_classes", "durations"):
        assert a[name].sum() == pytest.approx(1.0)
    assert a["intervals"].sum() == pytest.approx(1.0 if len(pitches) > 1 else 0.0)  # none: one note


# -- set comparison ---------------------------------------------------------------


def test_identical_sets_overlap_fully():
    rng = np.random.default_rng(0)
    melodies = [stepwise(rng) for _ in range(60)]
    stats = comparison.compare(melodies, melodies)
    assert set(stats) == set(features.FEATURES)
    for name, s in stats.items():
        assert s["overlap"] > 0.9, name
        assert s["kl"] < 0.05, name
        np.testing.assert_allclose(s["generated_mean"], s["human_mean"])


def test_two_samples_of_one_style_overlap_well():
    rng = np.random.default_rng(1)
    a = [stepwise(rng) for _ in range(80)]
    b = [stepwise(rng) for _ in range(80)]
    for name, s in comparison.compare(a, b).items():
        assert s["overlap"] > 0.8, name


def test_atonal_leaps_against_stepwise_diatonic_overlap_little():
    rng = np.random.default_rng(2)
    stats = comparison.compare([atonal(rng) for _ in range(60)], [stepwise(rng) for _ in range(60)])
    for name in ("intervals", "durations", "pitch_range", "scale_consistency",
                 "pitch_class_entropy"):
        assert stats[name]["overlap"] < 0.2, name
        assert stats[name]["kl"] > 1.0, name
    assert stats["scale_consistency"]["human_mean"] == 1.0
    assert stats["scale_consistency"]["generated_mean"] < 0.8


def test_overlap_and_kl_of_known_distributions():
    x = np.random.default_rng(3).normal(5, 1, 2000)
    overlap, kl = comparison.overlap_and_kl(x, x)
    assert overlap == pytest.approx(1.0) and kl == pytest.approx(0.0, abs=1e-9)
    overlap, kl = comparison.overlap_and_kl(x, x + 100)
    assert overlap < 1e-3 and kl > 10
    # Two unit normals one standard deviation apart overlap by 2 * Phi(-0.5) = 0.617.
    overlap, _ = comparison.overlap_and_kl(x, np.random.default_rng(4).normal(6, 1, 2000))
    assert overlap == pytest.approx(0.617, abs=0.05)
    # All-equal distances still have a density.
    assert comparison.overlap_and_kl(np.zeros(10), np.zeros(20)) == pytest.approx((1.0, 0.0))


def test_compare_needs_two_melodies_a_set():
    with pytest.raises(ValueError, match="generated melodies must number at least 2, got 1"):
        comparison.compare([C_MAJOR], [C_MAJOR, C_MAJOR])


# -- form: what comes back inside a melody -------------------------------------------
PHRASE = [60, 62, 64, 65, 67, 65, 64, 62]  # two bars of 4/4 quarter notes


def test_a_tune_whose_second_half_repeats_its_first():
    f = features.melody_features(tune(PHRASE + PHRASE))
    assert f["bar_repeats"] == 0.5 and f["bar_repeats_transposed"] == 0.5
    assert f["longest_repeat"] == 8.0
    # 13 four-note windows; the last 5 (from the repeat's first note on) were heard before
    assert f["recurrence"] == pytest.approx(5 / 13)


def test_a_transposed_repeat_counts_only_as_transposed():
    f = features.melody_features(tune(PHRASE + [p + 5 for p in PHRASE]))
    assert f["bar_repeats"] == 0.0 and f["bar_repeats_transposed"] == 0.5
    assert f["longest_repeat"] == 8.0


def test_a_melody_without_repeats_scores_none():
    f = features.melody_features(tune([60, 61, 63, 66, 70, 75, 69, 62, 72, 59]))  # no interval twice
    assert (f["bar_repeats"], f["bar_repeats_transposed"], f["recurrence"]) == (0.0, 0.0, 0.0)
    assert f["longest_repeat"] == 1.0  # every note lasts a quarter: one note "repeats"
    # The C major scale's two bars are the same tetrachord a fifth apart.
    assert features.melody_features(C_MAJOR)["bar_repeats_transposed"] == 0.5


def test_bars_are_counted_from_the_first_downbeat():
    # A one-quarter pickup, then the two-bar phrase twice: the pickup is no bar, and the
    # bars after it line up with the meter, not with the first note.
    notes = [55] + PHRASE + PHRASE
    melody = tune(notes)
    melody.bar_phase = 12
    assert form.bar_repeats(melody) == 0.5
    melody.bar_phase = 0  # read from the first note: the bars straddle the phrase
    assert form.bar_repeats(melody) < 0.5


def test_bar_figures_need_a_meter():
    melody = tune(PHRASE + PHRASE, time_signature=None)
    assert np.isnan(form.bar_repeats(melody)) and np.isnan(form.bar_repeats_transposed(melody))
    assert form.longest_repeat(melody) == 8.0  # no bars needed


def test_bars_in_three_four():
    waltz = [60, 64, 67, 65, 62, 59]  # two bars of 3/4
    assert form.bar_repeats(tune(waltz * 3, time_signature=(3, 4))) == pytest.approx(4 / 6)


def _longest_by_brute_force(m) -> int:
    p, d, n = m.pitches.astype(int), m.durations, m.n_notes
    best = 0
    for size in range(1, n):
        for i in range(n - size + 1):
            for j in range(i + size, n - size + 1):
                if all(d[i + k] == d[j + k] and p[i + k] - p[i] == p[j + k] - p[j]
                       for k in range(size)):
                    best = size
    return best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(60, 62), st.sampled_from([6, 12])), max_size=14))
def test_longest_repeat_is_the_longest_non_overlapping_repeat(notes):
    m = tune([p for p, _ in notes], [d for _, d in notes] or 12)
    assert form.longest_repeat(m) == _longest_by_brute_force(m)


def test_value_overlap_shows_a_level_gap_that_distances_hide():
    rng = np.random.default_rng(3)
    # Generated melodies repeat a tenth as much as human ones, with the same spread.
    generated = rng.normal(0.03, 0.02, 200).clip(0)
    human = rng.normal(0.31, 0.02, 200)
    assert comparison.value_overlap(generated, human) < 0.05
    gen_intra = comparison.intra_distances(generated)
    human_intra = comparison.intra_distances(human)
    assert comparison.overlap_and_kl(human_intra, gen_intra)[0] > 0.8  # spreads alike


def test_compare_reports_values_beside_the_yang_lerch_figures():
    rng = np.random.default_rng(4)
    repeating = [tune(PHRASE * 4) for _ in range(6)]
    wandering = [stepwise(rng) for _ in range(6)]
    stats = comparison.compare(wandering, repeating)
    assert stats["bar_repeats"]["human_mean"] == 0.75
    assert stats["bar_repeats"]["generated_mean"] < 0.2
    assert stats["bar_repeats"]["value_overlap"] < 0.2
    alike = comparison.compare(repeating[:3], repeating[3:])
    assert alike["bar_repeats"]["value_overlap"] == pytest.approx(1.0)


# -- originality ---------------------------------------------------------------------


def random_tune(rng, n):
    return tune(rng.integers(55, 80, n), rng.choice([6, 12, 18, 24], n))


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(5)
    train = [random_tune(rng, int(rng.integers(20, 60))) for _ in range(300)]
    heldout = [random_tune(rng, 40) for _ in range(100)]
    return train, heldout


def test_a_copy_is_found_whole_and_transposed(corpus):
    train, _ = corpus
    index = originality.OriginalityIndex.from_melodies(train)
    copies = [train[3], train[10].transpose(7), train[20].transpose(-5)]
    np.testing.assert_array_equal(index.longest_runs(copies), [m.n_notes for m in copies])
    np.testing.assert_array_equal(index.shares(copies), [1.0, 1.0, 1.0])


def test_a_random_melody_copies_little(corpus):
    train, _ = corpus
    index = originality.OriginalityIndex.from_melodies(train)
    other = random_tune(np.random.default_rng(99), 50)
    assert index.longest_runs([other])[0] < 6
    assert index.shares([other])[0] == 0.0


def test_longest_run_is_exactly_the_borrowed_phrase(corpus):
    train, _ = corpus
    index = originality.OriginalityIndex.from_melodies(train)
    source = train[0]
    # 12 notes of a training melody, framed by notes of a duration no training note has
    phrase = source.pitches[5:17]
    m = tune(np.r_[40, 90, phrase + 2, 30, 100], np.r_[7, 7, source.durations[5:17], 7, 7])
    assert index.longest_runs([m])[0] == 12
    assert index.shares([m])[0] == pytest.approx(5 / 9)  # 5 of its 9 eight-note runs
    assert np.isnan(index.shares([tune([60, 62, 64])])[0])  # too short for an 8-note run


@pytest.mark.parametrize("chunk_notes", [originality.TRAIN_CHUNK_NOTES, 500])  # one chunk, and many
def test_originality_file_round_trip_and_flags(corpus, tmp_path, monkeypatch, chunk_notes):
    train, heldout = corpus
    monkeypatch.setattr(originality, "TRAIN_CHUNK_NOTES", chunk_notes)
    path = tmp_path / "model" / originality.ORIGINALITY_FILE
    thresholds = originality.build_originality_file(iter(train), iter(heldout), path)
    built = originality.OriginalityIndex.from_melodies(train)  # all of it at once, in memory
    assert thresholds == built.thresholds_from(heldout)
    loaded = originality.load_originality(path)
    assert loaded.thresholds == thresholds
    np.testing.assert_array_equal(loaded.runs.lengths, built.runs.lengths)
    probe = [train[1], random_tune(np.random.default_rng(7), 50)] + heldout[:10]
    np.testing.assert_array_equal(loaded.longest_runs(probe), built.longest_runs(probe))
    np.testing.assert_array_equal(loaded.shares(probe), built.shares(probe))
    assert originality.flag(train[1].transpose(3), loaded)
    assert not originality.flag(probe[1], loaded)
    checks = originality.check(probe[:2], loaded)
    assert checks[0] == {"longest_run": train[1].n_notes, "share_8": 1.0, "flagged": True}
    assert path.stat().st_size < 20_000  # ~9,000 notes of training data


def test_originality_report_puts_generated_beside_human(corpus):
    train, heldout = corpus
    index = originality.OriginalityIndex.from_melodies(train)
    copied = train[:10]
    report = originality.originality_report(copied, heldout, index)
    gen, human = report["generated"], report["human"]
    assert gen["flagged"] == 1.0 and human["flagged"] <= 0.05
    assert gen["share_8"]["median"] == 1.0 and human["share_8"]["median"] == 0.0
    assert gen["longest_run"]["mean"] == np.mean([m.n_notes for m in copied])
    assert report["thresholds"]["longest_run"] == human["longest_run"]["p95"]


def test_a_damaged_originality_file_is_named(tmp_path):
    path = tmp_path / "originality.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="originality.npz: not an originality file"):
        originality.load_originality(path)


def test_flag_needs_thresholds(corpus):
    index = originality.OriginalityIndex.from_melodies(corpus[0])
    with pytest.raises(ValueError, match="no thresholds"):
        originality.flag(corpus[0][0], index)


# -- drawing -------------------------------------------------------------------------


def test_draw_writes_a_png_of_the_documented_size(tmp_path):
    rng = np.random.default_rng(8)
    gen = [atonal(rng) for _ in range(10)]
    human = [stepwise(rng) for _ in range(10)]
    path = picture.draw(gen, human, tmp_path / "stats.png", title="test",
                     stats=comparison.compare(gen, human))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1600, 1200)


# -- evaluate's report -----------------------------------------------------------------


def test_first_notes_cuts_a_melody_and_keeps_the_rest():
    cut = mreport.first_notes(C_MAJOR, 3)
    assert cut.pitches.tolist() == [60, 62, 64] and cut.onsets.tolist() == [0, 12, 24]
    assert cut.time_signature == C_MAJOR.time_signature
    assert mreport.first_notes(C_MAJOR, 20) is C_MAJOR


def token_data(melodies):
    from melody.data import TokenData
    from melody.tokenizer import Tokenizer

    tok = Tokenizer()
    return TokenData.from_pieces([tok.encode(m) for m in melodies]), tok


def test_human_set_is_a_seeded_subset_when_large(monkeypatch):
    monkeypatch.setattr(mreport, "HUMAN_LIMIT", 4)
    data, tok = token_data([C_MAJOR.transpose(s) for s in range(10)])
    first = mreport.human_melodies(data, tok, np.random.default_rng(0))
    again = mreport.human_melodies(data, tok, np.random.default_rng(0))
    assert len(first) == 4
    assert [m.pitches.tolist() for m in first] == [m.pitches.tolist() for m in again]
    assert len({int(m.pitches[0]) for m in first}) == 4  # four different pieces


def test_report_needs_two_human_pieces(tmp_path):
    data, tok = token_data([C_MAJOR])
    folder = SimpleNamespace(path=tmp_path, tokenizer=tok)  # the report reads no weights here
    report = mreport.evaluate_report(folder, data, samples=5, seed=0)
    note = "musicality needs at least 2 pieces to compare with, got 1"
    assert report == {"musicality_note": note}
