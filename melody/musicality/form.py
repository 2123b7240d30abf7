"""Form inside one melody: bars and phrases that come back, as they do in real tunes.

A folk tune states a phrase, repeats it, answers it; these figures measure how
much of a melody is heard again later in the same melody:

- ``bar_repeats``: the share of bars that repeat an earlier bar exactly (the
  same notes at the same places in the bar);
- ``bar_repeats_transposed``: the same, allowing a transposition;
- ``recurrence``: the share of ``RECURRENCE_NOTES``-note patterns (intervals
  and durations) heard earlier in the melody;
- ``longest_repeat``: the most consecutive notes that occur twice without
  overlapping (same durations and intervals, any transposition).

Bars are counted from the first downbeat (a pickup is not a bar) and only
when they hold a note onset; a melody without a meter has no bar figures (NaN).
A melody too short for a figure has 0 of it.

>>> from melody.notes import Melody
>>> phrase = [60, 62, 64, 65, 67, 65, 64, 62]  # two bars of 4/4 quarter notes
>>> tune = Melody(phrase * 2, range(0, 16 * 12, 12), [12] * 16)
>>> bar_repeats(tune), longest_repeat(tune)
(0.5, 8.0)
"""

from __future__ import annotations

import numpy as np

from melody.notes import Melody

RECURRENCE_NOTES = 4


def _bars(m: Melody, transposed: bool) -> list[tuple]:
    """Each bar's content (onsets in the bar, pitches, durations), in bar order."""
    bar = m.bar_steps
    index = (m.onsets - m.bar_phase) // bar
    bars = []
    for k in np.unique(index[index >= 0]):
        mine = index == k
        pitches = m.pitches[mine].astype(np.int64)
        if transposed:
            pitches = pitches - pitches[0]
        bars.append((tuple(m.onsets[mine] - m.bar_phase - k * bar), tuple(pitches),
                     tuple(m.durations[mine])))
    return bars


def _share_of_earlier(items: list) -> float:
    if not items:
        return 0.0
    seen, again = set(), 0
    for item in items:
        again += item in seen
        seen.add(item)
    return again / len(items)


def bar_repeats(m: Melody) -> float:
    if not m.bar_steps:
        return float("nan")
    return _share_of_earlier(_bars(m, transposed=False))


def bar_repeats_transposed(m: Melody) -> float:
    if not m.bar_steps:
        return float("nan")
    return _share_of_earlier(_bars(m, transposed=True))


def recurrence(m: Melody) -> float:
    n = RECURRENCE_NOTES
    if m.n_notes < n:
        return 0.0
    iv, d = m.intervals(), m.durations
    count = m.n_notes - n + 1
    windows = [tuple(iv[i:i + n - 1]) + tuple(d[i:i + n]) for i in range(count)]
    return _share_of_earlier(windows)


def longest_repeat(m: Melody) -> float:
    """Notes in the longest run that occurs twice, the two not overlapping."""
    n = m.n_notes
    if n < 2:
        return 0.0
    d = m.durations.astype(np.int64)
    iv = np.r_[0, m.intervals()]
    best = 0
    for shift in range(1, n):  # the second occurrence starts ``shift`` notes after the first
        same_d = d[:-shift] == d[shift:]
        # A run of k notes matches when its k durations and the k-1 intervals inside it
        # do: it starts where a duration matches and goes on while both match.
        go_on = same_d & (iv[:-shift] == iv[shift:])
        at = np.arange(len(same_d))
        start = np.maximum.accumulate(np.where(go_on, -1, at))  # last place it cannot go on
        begins_there = (start >= 0) & same_d[np.maximum(start, 0)]
        run = np.where(same_d, at - start + begins_there, 0)
        best = max(best, int(np.minimum(run, shift).max()))
    return float(best)
