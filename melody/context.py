"""Form context: what a melody said at this place 1, 2, 4 and 8 bars ago, and where it is.

A folk tune repeats whole bars and phrases. A GRU reading one token at a time
cannot see the phrase it should repeat once it is more than a window back, so
beside each token the model gets, for the token it is about to predict:

- ``lookback``: for each distance of ``lookback`` bars, the token that came at
  the same place that many bars earlier (the same time in steps minus the
  distance, and the same place among the tokens at that time), or ``NONE``
  when nothing came there. If the melody repeats, that token is the next one.
- ``position``: the step within the bar, counted from the first bar line
  (``NONE`` before it, and without a meter);
- ``bar``: how many bar lines have passed, modulo ``BARS`` (where in a phrase
  it is; ``NONE`` without a meter).

Everything is causal (it depends only on the tokens so far), so the NumPy
sampler computes it as it goes, with the same ``Tracker`` that makes the
training data.

>>> from melody.notes import Melody
>>> from melody.tokenizer import Tokenizer
>>> tok = Tokenizer()
>>> bar = Melody([60, 62, 64, 65], [0, 12, 24, 36], [12] * 4, time_signature=(4, 4))
>>> twice = tok.encode(Melody(list(bar.pitches) * 2, range(0, 96, 12), [12] * 8))
>>> lookback, position, bars = piece_context(twice, tok, (1, 2))
>>> i = list(twice).index(tok.pitch_id(60), 5)   # the second bar's first note
>>> tok.names[int(lookback[i - 1, 0])]  # before it: what came one bar earlier
'PITCH_60'
>>> int(position[i - 1]), int(bars[i - 1])
(0, 2)
"""

from __future__ import annotations

import functools

import numpy as np

from melody.config import BAR_CYCLE, CONTEXT_BARS, CONTEXT_POSITIONS
from melody.tokenizer import BAR, Tokenizer

HEADER = 3  # BOS KEY TS: the body starts after them
BARS = BAR_CYCLE  # the bar counter's period
POSITIONS = CONTEXT_POSITIONS  # position ids, NONE included (the longest bar: 4/2)
BAR_IDS = CONTEXT_BARS


class Tracker:
    """The context of the next token of one melody, updated token by token.

    Args:
        tokenizer: the model's tokenizer.
        lookback: the distances, in bars.
    """

    def __init__(self, tokenizer: Tokenizer, lookback: tuple[int, ...]):
        self.tok, self.lookback = tokenizer, tuple(lookback)
        self.steps = _steps(tokenizer)
        self.none = tokenizer.vocab_size  # the lookback id for "nothing came there"
        self.count = 0  # tokens pushed
        self.time = 0  # steps before the next token
        self.phase = 0  # body tokens already at that time
        self.bar = 0  # steps per bar; 0: no meter (yet)
        self.origin = None  # time of the first bar line
        self.bars = 0  # bar lines so far
        self.seen: dict = {}  # (time, phase) -> token, for body tokens

    def push(self, token: int) -> tuple[list[int], int, int]:
        """Take the next token; return the context of the one after it:
        (lookback ids, position id, bar id)."""
        token = int(token)
        if self.count == HEADER - 1:  # the TS token fixes the bar
            ts = self.tok.ts_of(token)
            self.bar = ts[0] * self.tok.config.steps_per_quarter * 4 // ts[1] if ts else 0
        if self.count >= HEADER:
            self.seen[(self.time, self.phase)] = token
            if token == BAR:
                self.bars += 1
                if self.origin is None:
                    self.origin = self.time
            steps = self.steps[token]
            self.time += steps
            self.phase = 0 if steps else self.phase + 1
        self.count += 1
        return self.context()

    def context(self) -> tuple[list[int], int, int]:
        if self.count < HEADER or not self.bar:
            return [self.none] * len(self.lookback), POSITIONS - 1, BAR_IDS - 1
        back = [self.seen.get((self.time - k * self.bar, self.phase), self.none)
                for k in self.lookback]
        position = POSITIONS - 1 if self.origin is None else (self.time - self.origin) % self.bar
        return back, position, self.bars % BARS


@functools.lru_cache(maxsize=8)
def _steps(tokenizer: Tokenizer) -> list[int]:
    """Steps each token id advances time by, as a list (fast to index one at a time)."""
    return tokenizer.steps_of(np.arange(tokenizer.vocab_size)).tolist()


def piece_context(tokens, tokenizer: Tokenizer, lookback: tuple[int, ...]):
    """The context of every input position of one piece (position i: the context
    of token i + 1): lookback ids [n, len(lookback)], position ids [n], bar ids [n]."""
    tracker = Tracker(tokenizer, lookback)
    rows = [tracker.push(t) for t in np.asarray(tokens).tolist()]
    back = np.array([r[0] for r in rows], np.int32).reshape(len(rows), len(lookback))
    return back, np.array([r[1] for r in rows], np.int32), np.array([r[2] for r in rows], np.int32)


def data_context(data, tokenizer: Tokenizer, lookback: tuple[int, ...]):
    """``piece_context`` of every piece of a ``TokenData``, laid end to end like its
    tokens: arrays aligned with ``data.tokens``."""
    back = np.empty((len(data.tokens), len(lookback)), np.uint16)
    position = np.empty(len(data.tokens), np.uint8)
    bars = np.empty(len(data.tokens), np.uint8)
    for i in range(len(data)):
        a, b = int(data.offsets[i]), int(data.offsets[i + 1])
        back[a:b], position[a:b], bars[a:b] = piece_context(data.piece(i), tokenizer, lookback)
    return back, position, bars
