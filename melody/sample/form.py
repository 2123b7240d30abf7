"""Form: bars that come back, and new ones that do not, as a plan per melody.

A plan says, for each bar from the first downbeat, which earlier bar it brings
back (or none: new material). In a bar that comes back, each token is the one
at the same place in that earlier bar (the same time in the bar, the same
place among the tokens at that time), so the bar returns note for note; a bar
marked to vary only favours the earlier bar's token, as first and second
endings do. No note is held across the line into a bar marked clean, so a
repeat lines up with its model token for token. In a bar marked novel, the
pitches at the same places in the given earlier bars are disfavoured, so it
brings new material. The hard constraints always win: a token they forbid is
never forced.

Plans come from two places:

- ``section_plan``: the form a user asked for (``--form AABB``), ``bars``
  shared evenly among the sections; a section's last bar may vary, and the
  end of the form is a cadence on the tonic (``Constraints``).
- ``collection_plan``: without ``--form``, each melody draws the form of one
  piece of the model's training collection (``melody.musicality.form.bar_plan``,
  saved in the model folder as ``form_prior``), of about the length asked
  for, and ends where that piece ended, with a cadence: in its last bar the
  tonic is favoured and, once it sounds, held to the end. A bar the piece had
  new may not end up the same as an earlier bar. The network still writes
  every note; the plan only says which bars come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from melody.context import Tracker
from melody.tokenizer import BAR, Tokenizer

ECHO = 2.0  # added to the earlier bar's token in a bar that may vary
NOVELTY = 3.0  # taken from an earlier bar's pitch in a new section
CADENCE = 4.0  # added to the tonic in the last bar of a form that ends the melody
NEAR = 0.15  # a drawn form's length may differ this much from the length asked for


@dataclass(frozen=True)
class Plan:
    """One melody's form, per bar: the earlier bar it brings back (-1: none), by how
    many semitones transposed, for how many steps from the bar line (0: the whole
    bar), whether it may vary, the bars whose pitches it avoids, whether nothing
    may be held into it, and whether it must be new (no earlier bar again, as
    such or transposed)."""

    source: tuple[int, ...]
    shift: tuple[int, ...]
    stop: tuple[int, ...]
    varies: tuple[bool, ...]
    novel: tuple[tuple[int, ...], ...]
    clean: tuple[bool, ...]
    fresh: tuple[bool, ...] = ()
    ends: bool = False  # the melody ends with the plan: its last bar closes on the tonic

    @property
    def bars(self) -> int:
        return len(self.source)


def section_plan(sections: str, bars: int) -> Plan:
    """The plan of ``sections`` (``AABB``) over ``bars`` bars shared evenly.

    >>> section_plan("ABA", 3).source
    (-1, -1, 0)
    """
    size = bars // len(sections)
    source, varies, novel, clean = [], [], [], []
    for s, letter in enumerate(sections):
        first = sections.index(letter)
        for b in range(size):
            source.append(first * size + b if first < s else -1)
            varies.append(first < s and b == size - 1 and (size > 1 or s == len(sections) - 1))
            novel.append(tuple(e * size + b for e in range(s)) if first == s else ())
            clean.append(b == 0 and s > 0)
    zeros = (0,) * len(source)
    return Plan(tuple(source), zeros, zeros, tuple(varies), tuple(novel), tuple(clean))


def collection_plan(prior: list, rng: np.random.Generator, notes: int | None = None,
                    bars: int | None = None, most: int | None = None) -> Plan | None:
    """The form of one piece of ``prior`` ([(notes, bar plan)], ``read_forms``), drawn
    with ``rng`` among those nearest to ``notes`` notes or ``bars`` bars (within
    ``NEAR`` of it, or the nearest), cut to ``bars``; else among those of at most
    ``most`` notes (all when none is that short); it ends the melody unless cut
    shorter than ``bars``. None when the prior is empty."""
    if not prior:
        return None
    if bars is not None:
        distance = np.array([abs(len(plan) - bars) for _, plan in prior]) / bars
    elif notes is not None:
        distance = np.array([abs(n - notes) for n, _ in prior]) / notes
    else:
        distance = np.array([most is not None and n > most for n, _ in prior], float)
    candidates = np.flatnonzero(distance <= max(distance.min(), NEAR))
    _, chosen = prior[int(rng.choice(candidates))]
    chosen = chosen[:bars] if bars is not None else chosen
    source, shift, stop = (tuple(column) for column in zip(*chosen)) if chosen else ((), (), ())
    return Plan(source, shift, stop, (False,) * len(chosen), ((),) * len(chosen),
                tuple(j >= 0 for j in source), tuple(j < 0 for j in source),
                ends=bars is None or len(chosen) == bars)


def form_line(notes: int, plan) -> str:
    """A piece's form (``bar_plan``) as one line of a model folder's ``form_prior``: its
    notes, then per bar the earlier bar it repeats (``.``: none), the
    transposition after a sign, and after ``:`` how many steps of it repeat.

    >>> form_line(32, [(-1, 0, 0), (-1, 0, 0), (0, 0, 0), (1, 0, 0), (0, -2, 0), (1, 0, 24)])
    '32 . . 0 1 0-2 1:24'
    """
    words = ["." if j < 0 else str(j) + (f"{shift:+d}" if shift else "") + (f":{stop}" if stop else "")
             for j, shift, stop in plan]
    return " ".join([str(notes)] + words)


def read_forms(lines) -> list[tuple[int, tuple[tuple[int, int, int], ...]]]:
    """``form_line``'s lines read back: [(notes, bar plan)]; ValueError when one is not
    such a line.

    >>> read_forms(["32 . . 0 1+5:12"])
    [(32, ((-1, 0, 0), (-1, 0, 0), (0, 0, 0), (1, 5, 12)))]
    """
    forms = []
    for line in lines:
        words = line.split() if isinstance(line, str) else []
        if not words or not words[0].isdigit() or int(words[0]) < 1:
            raise ValueError(f"not a piece's notes and bars: {line!r:.60}")
        plan = tuple(_bar(w) for w in words[1:])
        if not all(-1 <= j < k and (j >= 0 or not (shift or stop))
                   for k, (j, shift, stop) in enumerate(plan)):
            raise ValueError(f"a bar may only repeat an earlier bar: {line!r:.60}")
        forms.append((int(words[0]), plan))
    return forms


def _bar(word: str) -> tuple[int, int, int]:
    """One bar of a form line: ``.``, ``3``, ``3+2``, ``3-5``, ``3:24`` or ``3+2:24``;
    (-2, 0, 0) when it is none of them."""
    if word == ".":
        return -1, 0, 0
    word, colon, stop = word.partition(":")
    j, sign, shift = word.replace("-", "+-").partition("+")
    if (not j.isdigit() or (sign and not shift.lstrip("-").isdigit()) or abs(int(shift or 0)) > 127
            or (colon and not (stop.isdigit() and 0 < int(stop) <= 10**6))):
        return -2, 0, 0
    return int(j), int(shift or 0), int(stop or 0)


class Form:
    """Steers each of a batch of melodies through its ``Plan`` (None: free)."""

    def __init__(self, tokenizer: Tokenizer, plans: list[Plan | None]):
        self.plans = plans
        ids = np.arange(tokenizer.vocab_size)
        self.is_pitch, self.is_dur = tokenizer.is_pitch(ids), tokenizer.is_dur(ids)
        self.steps = tokenizer.steps_of(ids)
        self.trackers = [Tracker(tokenizer, ()) for _ in plans]
        self.tok, self.keys = tokenizer, [None] * len(plans)  # each melody's KEY token's key
        self.pitch_of = tokenizer.pitch_of(ids)
        # In a bar that must be new: the earlier bars it is still the same as, so far
        # ({bar: transposition, None before a pitch}), and which bar that is.
        self.alike: list[dict] = [{} for _ in plans]
        self.alike_bar = [-1] * len(plans)
        self.last = [-1] * len(plans)  # each melody's last token

    def update(self, tokens) -> None:
        """Every melody took its token (finished ones their EOS)."""
        for i, (tracker, token) in enumerate(zip(self.trackers, np.asarray(tokens).tolist())):
            if tracker.count == 1:  # its KEY token
                self.keys[i] = self.tok.key_of(token)
            self.last[i] = token
            self._compare(i, tracker, token)
            tracker.push(token)

    def _compare(self, i: int, tracker: Tracker, token: int) -> None:
        """Narrow the earlier bars a new bar of melody ``i`` is still the same as."""
        plan = self.plans[i]
        if plan is None or not plan.fresh or tracker.origin is None or not tracker.bar:
            return
        k = (tracker.time - tracker.origin) // tracker.bar
        if k != self.alike_bar[i]:
            self.alike_bar[i] = k
            self.alike[i] = {j: None for j in range(k)} if k < plan.bars and plan.fresh[k] else {}
        if token == BAR:
            return
        alike = {}
        for j, shift in self.alike[i].items():
            there = tracker.seen.get((tracker.time - (k - j) * tracker.bar, tracker.phase))
            if there is not None and self.is_pitch[token] and self.is_pitch[there]:
                if shift is None or shift == token - there:
                    alike[j] = token - there
            elif there == token:
                alike[j] = shift
        self.alike[i] = alike

    def _close(self, row: int, i: int, tracker: Tracker, end: int, allowed, bias) -> None:
        """The last bar of a form that ends the melody: the tonic favoured, and once it
        sounds, held to the end (folk tunes end on a long tonic, not a run of notes)."""
        tonic = self.is_pitch & (self.pitch_of % 12 == self.keys[i].tonic)
        last = self.last[i]
        if 0 <= last < len(self.is_pitch) and tonic[last]:
            held = allowed[row] & self.is_dur & (tracker.time + self.steps == end)
            if held.any():
                allowed[row] &= held
        else:
            bias[row, tonic] += CADENCE

    def _transposed(self, token: int, shift: int, scale) -> int | None:
        """A pitch token moved ``shift`` semitones, then a semitone down or up into the
        melody's scale if it left it (a sequence in folk tunes moves within the key);
        None beyond the tokenizer's pitches."""
        def pitch(t):
            return 0 <= t < len(self.is_pitch) and self.is_pitch[t]

        moved = token + shift  # pitch ids are a semitone apart
        if not pitch(moved):
            return None
        if scale and self.pitch_of[moved] % 12 not in scale:
            moved = next((t for t in (moved - 1, moved + 1)
                          if pitch(t) and self.pitch_of[t] % 12 in scale), moved)
        return moved

    def steer(self, rows, allowed: np.ndarray, bias):
        """``allowed`` [rows, vocab] narrowed to a repeat's token where it must come
        back, and ``bias`` (log-weights, or None) with the echoes and novelties added."""
        bias = np.zeros(allowed.shape) if bias is None else bias.copy()
        allowed = allowed.copy()
        for row, i in enumerate(np.asarray(rows).tolist()):
            plan, tracker = self.plans[i], self.trackers[i]
            if plan is None or tracker.origin is None or not tracker.bar:
                continue
            k = (tracker.time - tracker.origin) // tracker.bar
            if k >= plan.bars:
                continue
            line = next((c for c in range(k + 1, plan.bars) if plan.clean[c]), None)
            if line is not None:  # nothing held over into a clean bar
                end = tracker.origin + line * tracker.bar
                allowed[row] &= ~(self.is_dur & (tracker.time + self.steps > end))

            def earlier(j):  # the token at this place in bar j, or None
                return tracker.seen.get((tracker.time - (k - j) * tracker.bar, tracker.phase))

            into = tracker.time - tracker.origin - k * tracker.bar  # steps into the bar
            if plan.source[k] >= 0 and not (plan.stop[k] and into >= plan.stop[k]):
                token = earlier(plan.source[k])
                if token is not None and plan.shift[k] and self.is_pitch[token]:
                    key = self.keys[i]
                    token = self._transposed(token, plan.shift[k], key and key.scale_pitch_classes())
                if token is None or not allowed[row, token]:
                    continue
                if plan.varies[k]:
                    bias[row, token] += ECHO
                else:
                    allowed[row] = False
                    allowed[row, token] = True
            if plan.fresh and plan.fresh[k] and self.alike_bar[i] == k and any(
                    s is not None for s in self.alike[i].values()):
                # the last note or rest of a bar that is still the same as an earlier one
                # (with a note): not the one that would make it the same again
                end = tracker.origin + (k + 1) * tracker.bar
                closing = ~self.is_pitch & (tracker.time + self.steps >= end) & (self.steps > 0)
                for j in self.alike[i]:
                    there = earlier(j)
                    if there is not None and closing[there] and allowed[row].sum() > 1:
                        allowed[row, there] = False
            if plan.ends and k == plan.bars - 1 and self.keys[i] is not None:
                self._close(row, i, tracker, tracker.origin + plan.bars * tracker.bar, allowed, bias)
            for j in plan.novel[k]:
                token = earlier(j)
                if token is not None and self.is_pitch[token]:
                    bias[row, token] -= NOVELTY
        return allowed, bias
