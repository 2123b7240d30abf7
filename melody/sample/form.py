"""A form the user asked for (``--form AABB``): sections that come back, and new ones that do not.

``bars`` is shared evenly among the sections, counted from the first downbeat.
In a section whose letter came before, each token is the one at the same place
in that earlier section (the same time in the bar, the same place among the
tokens at that time), so the section comes back note for note; its last bar may
vary (the earlier section's token is only favoured there), as first and second
endings do, except in a section of one bar. No note is held across the line
between two sections, so every section starts on its bar line and a repeat
lines up with its model token for token. In a section with a new letter,
the pitches at the same places in the earlier sections are disfavoured, so it
brings new material. The hard constraints always win: a token they forbid is
never forced. The end of the form is a cadence on the tonic (``Constraints``).
"""

from __future__ import annotations

import numpy as np

from melody.config import SampleConfig
from melody.context import Tracker
from melody.tokenizer import Tokenizer

ECHO = 2.0  # added to the earlier section's token in a bar that may vary
NOVELTY = 3.0  # taken from an earlier section's pitch in a new section


class Form:
    """Steers ``batch`` melodies through ``config.sections``."""

    def __init__(self, tokenizer: Tokenizer, config: SampleConfig, batch: int):
        self.sections = config.sections
        self.section_bars = config.bars // len(self.sections)
        ids = np.arange(tokenizer.vocab_size)
        self.is_pitch, self.is_dur = tokenizer.is_pitch(ids), tokenizer.is_dur(ids)
        self.steps = tokenizer.steps_of(ids)
        self.trackers = [Tracker(tokenizer, ()) for _ in range(batch)]
        # Per section: the first earlier section with its letter (None: a new letter).
        self.source = [self.sections.index(letter) if self.sections.index(letter) < s else None
                       for s, letter in enumerate(self.sections)]

    def update(self, tokens) -> None:
        """Every melody took its token (finished ones their EOS)."""
        for tracker, token in zip(self.trackers, np.asarray(tokens).tolist()):
            tracker.push(token)

    def steer(self, rows, allowed: np.ndarray, bias):
        """``allowed`` [rows, vocab] narrowed to a repeat's token where it must come
        back, and ``bias`` (log-weights, or None) with the echoes and novelties added."""
        bias = np.zeros(allowed.shape) if bias is None else bias.copy()
        allowed = allowed.copy()
        for row, i in enumerate(np.asarray(rows).tolist()):
            where = self._where(self.trackers[i])
            if where is None:
                continue
            section, bar_in_section = where
            tracker = self.trackers[i]
            end = tracker.origin + (section + 1) * self.section_bars * tracker.bar
            allowed[row] &= ~(self.is_dur & (tracker.time + self.steps > end))  # nothing held over

            def earlier(s):  # the token at this place in section s, or None
                back = (section - s) * self.section_bars * tracker.bar
                return tracker.seen.get((tracker.time - back, tracker.phase))

            source = self.source[section]
            if source is not None:
                token = earlier(source)
                if token is None or not allowed[row, token]:
                    continue
                varies = bar_in_section == self.section_bars - 1 and (
                    self.section_bars > 1 or section == len(self.sections) - 1)
                if varies:
                    bias[row, token] += ECHO
                else:
                    allowed[row] = False
                    allowed[row, token] = True
            else:
                for s in range(section):
                    token = earlier(s)
                    if token is not None and self.is_pitch[token]:
                        bias[row, token] -= NOVELTY
        return allowed, bias

    def _where(self, tracker: Tracker):
        """(section, bar within it) of the melody's next token; None before the first
        downbeat, without a meter, or after the form's end."""
        if tracker.origin is None or not tracker.bar:
            return None
        bar = (tracker.time - tracker.origin) // tracker.bar
        section = bar // self.section_bars
        if section >= len(self.sections):
            return None
        return section, bar % self.section_bars
