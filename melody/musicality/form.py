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

from melody.config import FORM_PRIOR
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


PREFIX_NOTES = 2  # notes a bar must share with an earlier one's start to count as its variant


def bar_count(m: Melody) -> int:
    """Bars from the first downbeat to the melody's end (0 without a meter or notes)."""
    if not m.bar_steps or not m.n_notes:
        return 0
    return int(-(-(m.end - m.bar_phase) // m.bar_steps))


def bar_plan(m: Melody) -> list[tuple[int, int, int]]:
    """For each bar from the first downbeat to the end: (the first earlier bar it
    repeats, the semitones it is transposed by, the steps into the bar the repeat
    lasts: 0 for all of it). A bar is the same as an earlier one, else the same
    transposed, else it starts as one did (``PREFIX_NOTES`` or more notes the
    same, the longest such start), else (-1, 0, 0): new, or a bar without an onset.
    [] without a meter. A melody's form as ``generate`` follows it
    (``melody.sample.form``).

    >>> phrase = [60, 62, 64, 65, 67, 65, 64, 62]  # two bars of 4/4 quarter notes
    >>> up, other = [p + 2 for p in phrase[:4]], phrase[:2] + [69, 67]
    >>> bar_plan(Melody(phrase * 2 + up + other, range(0, 24 * 12, 12), [12] * 24))
    [(-1, 0, 0), (-1, 0, 0), (0, 0, 0), (1, 0, 0), (0, 2, 0), (0, 0, 24)]
    """
    count, bar = bar_count(m), m.bar_steps
    if not count:
        return []
    index = (m.onsets - m.bar_phase) // bar
    bars, plan = [], []
    for k in range(count):
        mine = index == k
        notes = np.stack([m.onsets[mine] - m.bar_phase - k * bar, m.pitches[mine].astype(np.int64),
                          m.durations[mine]], axis=1)
        plan.append(_like(notes, bars) if len(notes) else (-1, 0, 0))
        bars.append(notes)
    return plan


def _like(notes: np.ndarray, earlier: list) -> tuple[int, int, int]:
    """(bar, shift, stop) of the earlier bar ``notes`` [onset, pitch, duration] repeats
    best (see ``bar_plan``)."""
    best, length = (-1, 0, 0), PREFIX_NOTES - 1
    for exact in (True, False):
        for j, other in enumerate(earlier):
            if len(other) != len(notes) or not len(other):
                continue
            shift = int(notes[0, 1] - other[0, 1])
            if (exact and shift) or not (other + [0, shift, 0] == notes).all():
                continue
            return j, shift, 0
    for j, other in enumerate(earlier):  # the same start, untransposed
        if not len(other):
            continue
        n = min(len(other), len(notes))
        alike = (other[:n] == notes[:n]).all(axis=1)
        same = n if alike.all() else int(np.argmin(alike))
        if same > length:
            stop = min(notes[same, 0] if same < len(notes) else 2**31,
                       other[same, 0] if same < len(other) else 2**31)
            best, length = (j, 0, int(stop)), same
    return best


def plan_letters(plan) -> str:
    """A ``bar_plan`` as letters, one per bar: a new bar takes the next capital, a
    repeat its model's letter, in lower case when transposed, with ``'`` when only
    its start repeats.

    >>> plan_letters([(-1, 0, 0), (-1, 0, 0), (0, 0, 0), (1, 0, 0), (0, 5, 0), (0, 0, 24)])
    "ABABaA'"
    """
    names = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    letters, fresh = [], 0
    for j, shift, stop in plan:
        if j < 0:
            letters.append(names[fresh] if fresh < len(names) else "?")
            fresh += 1
        else:
            letter = letters[j][0]
            letters.append((letter.lower() if shift else letter) + ("'" if stop else ""))
    return "".join(letters)


def collection_forms(data, tokenizer, limit: int = FORM_PRIOR) -> list[str]:
    """The forms of the metered pieces of ``data`` (``TokenData``), at most ``limit`` of
    them (a seeded choice): a model folder's ``form_prior``, one ``form_line`` each."""
    from melody.sample.form import form_line

    pieces = np.arange(len(data))
    if len(pieces) > limit:
        pieces = np.sort(np.random.default_rng(0).choice(pieces, limit, replace=False))
    melodies = (tokenizer.decode(data.piece(int(i))) for i in pieces)
    return [form_line(m.n_notes, plan) for m in melodies if (plan := bar_plan(m))]


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
