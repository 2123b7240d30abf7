"""What may come next: the mask of allowed tokens for each melody, and the key's pull.

Hard rules follow the tokenizer's grammar and each melody's place in time
(bar lines, the end of ``bars``); soft rules shape endings and keys and give
way when they would leave a melody no token.
"""

from __future__ import annotations

import numpy as np

from melody.config import SampleConfig
from melody.notes import Key
from melody.tokenizer import BAR, BOS, EOS, Tokenizer

_NO_LIMIT = np.iinfo(np.int64).max // 4
# Aarden's scale-degree weights from the Essen folk songs (Humdrum keycor; the
# profile music21 uses for ``analyze("key")``), tonic first.
_AARDEN_MAJOR = np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587,
                          0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122])
_AARDEN_MINOR = np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362,
                          0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623])


class Constraints:
    """Per-melody position in the piece, and the mask of tokens that may come next.

    Hard rules (never relaxed): the grammar; BAR exactly when a bar line is
    reached (the first BAR may come earlier: a pickup); rests never cross a bar
    line; EOS only right after a BAR on a bar line when the meter is known;
    with ``bars`` nothing crosses the end line and EOS comes exactly there; the
    forced KEY, the key's scale and the pitch range; rests merged as the
    tokenizer writes them. Soft rules, dropped for a melody only when they
    would leave it no token: stop after ``notes`` notes (closing with a rest
    to the bar line), open on a tonic-triad note and end on the tonic when a
    key is given, at least one note before EOS.
    """

    def __init__(self, tokenizer: Tokenizer, config: SampleConfig, batch: int):
        self.tok, self.config, self.batch = tokenizer, config, batch
        tok = tokenizer
        V = tok.vocab_size
        ids = np.arange(V)
        self.steps = tok.steps_of(ids)
        self.is_pitch, self.is_dur, self.is_rest = tok.is_pitch(ids), tok.is_dur(ids), tok.is_rest(ids)
        self.pitch_of = tok.pitch_of(ids)
        self.dur_max = tok.dur_offset + tok.config.max_duration - 1
        self.rest_max = tok.rest_offset + tok.config.max_duration - 1
        self.is_key = (ids >= tok.key_offset) & (ids < tok.ts_offset)
        self.is_ts = (ids >= tok.ts_offset) & (ids < tok.pitch_offset)
        self.bar_of_ts = np.zeros(V, np.int64)
        for t in ids[self.is_ts]:
            ts = tok.ts_of(t)
            self.bar_of_ts[t] = ts[0] * tok.config.steps_per_quarter * 4 // ts[1] if ts else 0
        self.key = Key.parse(config.key) if config.key else None
        self.header_ok = np.ones(V, bool)
        if self.key is not None:
            self.header_ok[self.is_key] = False
            self.header_ok[tok.key_id(self.key)] = True
        if config.bars is not None:
            self.header_ok[tok.ts_id(None)] = False  # bars need a meter
        self.pitch_ok = self._pitch_mask()
        self.prior = self._key_prior() if self.key is not None else None
        self.triad_ok = self._degrees_ok([0, 4 if self.key and self.key.mode == "major" else 3, 7])
        self.budget = 8 * config.max_notes + 64 if config.max_notes else _NO_LIMIT

        B = batch
        self.last = np.full(B, BOS, np.int64)
        self.pos = np.zeros(B, np.int64)
        self.bar = np.zeros(B, np.int64)  # 0: no meter (yet)
        self.next_bar = np.full(B, -1, np.int64)  # -1: before the first BAR
        self.end = np.full(B, _NO_LIMIT, np.int64)
        self.notes = np.zeros(B, np.int64)
        self.last_pitch = np.full(B, -1, np.int64)
        self.pc_steps = np.zeros((B, 12))  # how long each pitch class has sounded
        self.tokens = np.zeros(B, np.int64)
        self.done = np.zeros(B, bool)
        # The tonic each melody ends on (-1: none): the key asked for, or with a form
        # (which ends on a cadence) the key the melody's KEY token chose.
        self.tonic = np.full(B, self.key.tonic if self.key is not None else -1, np.int64)
        self.key_tonic = np.full(V, -1, np.int64)
        # Bars each melody ends after (0: free): --bars, or a form drawn for it.
        self.row_bars = np.full(B, config.bars or 0, np.int64)
        if config.form:
            self._cadence()

    def follow(self, bars) -> None:
        """Each melody ends after its own number of ``bars`` (0: free), from the first
        downbeat, on a cadence: the form drawn for it has that many."""
        self.row_bars = np.where(np.asarray(bars) > 0, bars, self.row_bars)
        self._cadence()

    def _cadence(self) -> None:
        """Melodies with an end in bars end on the tonic of their KEY token."""
        if self.key is None:
            for t in np.flatnonzero(self.is_key):
                key = self.tok.key_of(t)
                self.key_tonic[t] = -1 if key is None else key.tonic

    def _pitch_mask(self) -> np.ndarray:
        c, tok = self.config, self.tok
        low = tok.config.lowest_pitch if c.lowest is None else c.lowest
        high = tok.config.highest_pitch if c.highest is None else c.highest
        ok = self.is_pitch & (self.pitch_of >= low) & (self.pitch_of <= high)
        if self.key is not None:
            ok &= np.isin(self.pitch_of % 12, sorted(self.key.scale_pitch_classes()))
        if not ok.any():
            key = f" in {self.key.name}" if self.key else ""
            raise ValueError(
                f"no pitch{key} between lowest {low} and highest {high}; "
                f"the model knows {tok.config.lowest_pitch}..{tok.config.highest_pitch}"
            )
        return ok

    def _degrees_ok(self, degrees) -> np.ndarray:
        """Allowed pitch tokens on these scale degrees (all pitches without a key)."""
        if self.key is None:
            return self.is_pitch.copy()
        return self.pitch_ok & np.isin((self.pitch_of - self.key.tonic) % 12, degrees)

    def _key_prior(self) -> np.ndarray:
        """Log-weights of the key's pitch classes on the pitch tokens, 0 elsewhere.

        A model's KEY token is a hint it may ignore (folk tunes drift to the
        dominant or a mode); the prior tilts its pitch choices toward how often
        each scale degree sounds in folk melodies in that key.
        """
        profile = _AARDEN_MAJOR if self.key.mode == "major" else _AARDEN_MINOR
        self.profile = profile
        degree = (self.pitch_of - self.key.tonic) % 12
        weights = np.log(profile / profile.max())[degree]
        return np.where(self.is_pitch, self.config.key_strength * weights, 0.0)

    def bias(self):
        """Log-prior [batch, vocab] added to the logits, or None without a key.

        The key profile, plus a pull toward it for pitch classes the melody
        has so far under-used (and away from over-used ones), so the whole
        melody's balance ends near the key's.
        """
        if self.prior is None:
            return None
        target = self.profile / self.profile.sum()
        total = self.pc_steps.sum(axis=1, keepdims=True)
        share = np.divide(self.pc_steps, total, out=np.zeros_like(self.pc_steps), where=total > 0)
        degree_gap = np.roll(target, self.key.tonic)[None, :] - share  # [batch, 12]
        pull = self.config.key_balance * degree_gap[:, self.pitch_of % 12]
        return self.prior[None, :] + np.where(self.is_pitch[None, :], pull, 0.0)

    # -- state ----------------------------------------------------------------
    def update(self, tokens) -> None:
        """Advance every melody by its chosen token."""
        t = np.asarray(tokens, np.int64)
        ts = self.is_ts[t]
        self.bar = np.where(ts, self.bar_of_ts[t], self.bar)
        self.row_bars = np.where(ts & (self.bar == 0), 0, self.row_bars)  # no meter: no bars
        is_bar = t == BAR
        first = is_bar & (self.next_bar < 0)
        self.end = np.where(first & (self.row_bars > 0), self.pos + self.row_bars * self.bar, self.end)
        self.next_bar = np.where(first, self.pos + self.bar, self.next_bar)
        self.next_bar = np.where(is_bar & ~first, self.next_bar + self.bar, self.next_bar)
        self.pos += self.steps[t]
        pitch = self.is_pitch[t]
        self.notes += pitch
        self.last_pitch = np.where(pitch, self.pitch_of[t], self.last_pitch)
        dur = np.flatnonzero(self.is_dur[t] & (self.last_pitch >= 0))
        self.pc_steps[dur, self.last_pitch[dur] % 12] += self.steps[t[dur]]
        self.done |= t == EOS
        self.tokens += 1
        self.last = t
        chosen = self.is_key[t] & (self.key_tonic[t] >= 0) & (self.row_bars > 0)
        self.tonic = np.where(chosen, self.key_tonic[t], self.tonic)

    def start_continuation(self) -> None:
        """Count notes, tokens and bars from here on (after a primer)."""
        self.notes[:] = 0
        self.tokens[:] = 0
        if self.config.bars is not None:
            known = self.next_bar >= 0
            self.end = np.where(known, self.next_bar + (self.config.bars - 1) * self.bar, self.end)

    # -- the mask ---------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """allowed[batch, vocab]: the hard rules, plus the soft ones where they leave a choice."""
        hard = self._hard()
        allowed = hard & self._soft(hard)
        stuck = ~allowed.any(axis=1)
        allowed[stuck] = hard[stuck]
        if not allowed.any(axis=1).all():
            raise RuntimeError("sampler constraints left a melody no valid token")
        return allowed

    def _hard(self) -> np.ndarray:
        tok = self.tok
        allowed = tok.grammar[self.last].copy()
        allowed &= self.header_ok | ~(self.is_key | self.is_ts)
        allowed[:, self.is_pitch] &= self.pitch_ok[self.is_pitch]
        # Rests merge into one token as the tokenizer writes them (REST_max may continue).
        allowed[(self.is_rest[self.last] & (self.last != self.rest_max))[:, None] & self.is_rest] = False
        metered = self.bar > 0
        known = self.next_bar >= 0
        # Before the first BAR comes a pickup, shorter than a bar (the tokenizer
        # writes BAR first when the melody starts on a downbeat).
        pickup = metered & ~known
        note_room = np.where(pickup, self.bar - 1, self.end) - self.pos
        line = np.where(known, np.minimum(self.next_bar, self.end), _NO_LIMIT)
        rest_room = np.where(pickup, self.bar - 1, line) - self.pos
        allowed &= ~(self.is_dur & (self.steps > note_room[:, None]))
        allowed &= ~(self.is_rest & (self.steps > rest_room[:, None]))
        allowed[:, self.is_pitch] &= (note_room >= 1)[:, None]
        at_line = known & (self.pos >= self.next_bar)
        allowed[:, BAR] &= at_line | pickup
        # A bar line reached: BAR now (a long note may still add DUR tokens first).
        forced = at_line[:, None] & ~(self.is_dur[None, :] & (self.last == self.dur_max)[:, None])
        forced[:, BAR] = False
        allowed &= ~forced
        on_line = known & (self.pos == self.next_bar - self.bar) & (self.last == BAR)
        eos_ok = np.where(metered, on_line, True)
        eos_ok &= (self.row_bars == 0) | (self.pos == self.end)
        allowed[:, EOS] &= eos_ok
        # The end of --bars reached, or EOS already out: only EOS.
        only_eos = self.done | (on_line & (self.pos == self.end))
        allowed[only_eos] = False
        allowed[only_eos, EOS] = True
        return allowed

    def _soft(self, hard: np.ndarray) -> np.ndarray:
        c = self.config
        soft = np.ones_like(hard)
        soft[:, EOS] = self.notes >= 1
        if c.max_notes is not None:
            closing = (self.notes >= c.max_notes) | (self.tokens >= self.budget)
            soft[closing[:, None] & self.is_pitch[None, :]] = False
            finish = closing & hard[:, EOS]
            soft[finish] = False
            soft[finish, EOS] = True
            # Otherwise fill the bar with one rest so the melody ends on its line.
            fill = np.minimum(self.next_bar - self.pos, self.tok.config.max_duration)
            rest_fill = self.is_rest[None, :] & (self.steps[None, :] != fill[:, None])
            soft &= ~((closing & ~finish & (self.next_bar >= 0))[:, None] & rest_fill)
            # Without a meter a melody ends after a note, never after a rest.
            soft &= ~((closing & (self.bar == 0))[:, None] & self.is_rest[None, :])
        if self.key is not None:
            # Open on a tonic-triad note: with the final tonic it frames the key.
            soft[(self.notes == 0)[:, None] & self.is_pitch[None, :] & ~self.triad_ok[None, :]] = False
        cadence = self.tonic >= 0
        if cadence.any():  # end on the tonic
            on_tonic = (self.last_pitch >= 0) & (self.last_pitch % 12 == self.tonic)
            soft[:, EOS] &= on_tonic | ~cadence
            other = self.is_pitch[None, :] & (self.pitch_of[None, :] % 12 != self.tonic[:, None])
            other &= cadence[:, None]  # [batch, vocab]: pitches that are not the melody's tonic
            if c.max_notes is not None:
                soft[(self.notes == c.max_notes - 1)[:, None] & other] = False
            if (self.row_bars > 0).any():
                # A note other than the tonic must leave time for one after it.
                room = self.end - self.pos
                soft[(room < 2)[:, None] & other] = False
                ends = (self.is_dur | self.is_rest)[None, :] & (
                    self.pos[:, None] + self.steps[None, :] == self.end[:, None]
                )
                soft &= ~(ends & (cadence & ~on_tonic)[:, None])
        return soft
