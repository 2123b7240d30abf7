"""Melody <-> event tokens, the vocabulary, and the grammar the sampler obeys.

A piece is ``BOS KEY TS body EOS``. The body is a sequence of events on the
grid of ``notes.STEPS_PER_QUARTER`` steps per quarter note:

- ``REST_d``: silence of d steps (d = 1..max_duration; longer rests repeat the
  token, each full ``REST_max`` may be followed by another REST).
- ``PITCH_p DUR_d``: a note of MIDI pitch p lasting d steps (longer notes add
  ``DUR`` tokens after a full ``DUR_max``).
- ``BAR``: a downbeat has been reached. It is written before the first event
  at or after each bar line (and before EOS when the melody ends exactly on
  one). Timing never depends on it, so decoding ignores it; it tells the model
  where it is in the bar.

``KEY`` is ``KEY_C`` ... ``KEY_Bm`` or ``KEY_none``; ``TS`` is a time signature
from ``TIME_SIGNATURES`` or ``TS_none`` (then no BAR tokens are written).

>>> from melody.notes import Melody
>>> tok = Tokenizer()
>>> ids = tok.encode(Melody([60, 64], [0, 12], [12, 36], time_signature=(4, 4)))
>>> tok.decode_names(ids)
['BOS', 'KEY_none', 'TS_4/4', 'BAR', 'PITCH_60', 'DUR_12', 'PITCH_64', 'DUR_36', 'BAR', 'EOS']
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from melody.notes import PITCH_NAMES, STEPS_PER_QUARTER, Key, Melody, check_range

TIME_SIGNATURES = (
    "2/4", "3/4", "4/4", "5/4", "6/4", "2/2", "3/2", "4/2",
    "3/8", "5/8", "6/8", "7/8", "9/8", "12/8",
)
MAX_DURATION = 1024  # longest DUR/REST token, in steps: bounds the vocabulary (and its grammar)
MAX_METERS = 64
MAX_TOKENIZER_BYTES = 2**20  # a tokenizer.json of the largest vocabulary takes 40 KB
SPECIALS = ("PAD", "BOS", "EOS", "BAR")
PAD, BOS, EOS, BAR = 0, 1, 2, 3


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything that fixes the vocabulary; saved as ``tokenizer.json``."""

    steps_per_quarter: int = STEPS_PER_QUARTER
    max_duration: int = 96
    lowest_pitch: int = 0
    highest_pitch: int = 127
    time_signatures: tuple[str, ...] = TIME_SIGNATURES
    version: int = 1

    def __post_init__(self):
        for name in ("steps_per_quarter", "max_duration", "lowest_pitch", "highest_pitch", "version"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        if self.steps_per_quarter != STEPS_PER_QUARTER:
            raise ValueError(
                f"steps_per_quarter must be {STEPS_PER_QUARTER}, got {self.steps_per_quarter}")
        if self.version != 1:
            raise ValueError(f"version must be 1, got {self.version}")
        check_range("max_duration", self.max_duration, 1, MAX_DURATION)
        check_range("lowest_pitch", self.lowest_pitch, 0, 127)
        check_range("highest_pitch", self.highest_pitch, self.lowest_pitch, 127)
        meters = self.time_signatures
        if len(meters) > MAX_METERS or len(set(meters)) != len(meters):
            raise ValueError(f"time_signatures must be at most {MAX_METERS} different meters, "
                             f"got {len(meters)} ({len(set(meters))} different)")
        for ts in meters:
            num, _, den = str(ts).partition("/")
            if not (num.isdigit() and den.isdigit() and 1 <= int(num) <= 64
                    and int(den) in (1, 2, 4, 8, 16, 32, 64)):
                raise ValueError(f"time_signatures must be meters such as 3/4, got {ts!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "TokenizerConfig":
        if not isinstance(data, dict):
            raise ValueError(f"tokenizer settings must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown tokenizer settings: {', '.join(sorted(unknown))}")
        data = dict(data)
        if "time_signatures" in data:
            if not isinstance(data["time_signatures"], list):
                raise ValueError("time_signatures must be a list of meters such as 3/4")
            data["time_signatures"] = tuple(data["time_signatures"])
        return cls(**data)


class Tokenizer:
    """Event vocabulary for monophonic melodies.

    Args:
        config: a ``TokenizerConfig``; the default is what models are trained on.
    """

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        c = self.config
        names = list(SPECIALS)
        self.key_offset = len(names)
        names += [f"KEY_{PITCH_NAMES[t]}" for t in range(12)]
        names += [f"KEY_{PITCH_NAMES[t]}m" for t in range(12)]
        names.append("KEY_none")
        self.ts_offset = len(names)
        names += [f"TS_{ts}" for ts in c.time_signatures] + ["TS_none"]
        self.pitch_offset = len(names)
        names += [f"PITCH_{p}" for p in range(c.lowest_pitch, c.highest_pitch + 1)]
        self.dur_offset = len(names)
        names += [f"DUR_{d}" for d in range(1, c.max_duration + 1)]
        self.rest_offset = len(names)
        names += [f"REST_{d}" for d in range(1, c.max_duration + 1)]
        self.names = names
        self.ids = {n: i for i, n in enumerate(names)}
        self.grammar = self._grammar()

    # -- vocabulary -------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.names)

    @property
    def n_pitches(self) -> int:
        return self.config.highest_pitch - self.config.lowest_pitch + 1

    def key_id(self, key: Key | None) -> int:
        if key is None:
            return self.key_offset + 24
        return self.key_offset + key.tonic + (12 if key.mode == "minor" else 0)

    def key_of(self, token: int) -> Key | None:
        i = token - self.key_offset
        if not 0 <= i < 24:
            return None
        return Key(i % 12, "minor" if i >= 12 else "major")

    def ts_id(self, ts: tuple[int, int] | None) -> int:
        name = f"{ts[0]}/{ts[1]}" if ts else None
        if name in self.config.time_signatures:
            return self.ts_offset + self.config.time_signatures.index(name)
        return self.ts_offset + len(self.config.time_signatures)

    def ts_of(self, token: int) -> tuple[int, int] | None:
        i = token - self.ts_offset
        if not 0 <= i < len(self.config.time_signatures):
            return None
        num, den = self.config.time_signatures[i].split("/")
        return int(num), int(den)

    def pitch_id(self, pitch: int) -> int:
        return self.pitch_offset + int(pitch) - self.config.lowest_pitch

    def pitch_of(self, ids) -> np.ndarray:
        """The MIDI pitch of each PITCH token id, -1 for every other token."""
        ids = np.asarray(ids, dtype=np.int64)
        return np.where(self.is_pitch(ids), ids - self.pitch_offset + self.config.lowest_pitch, -1)

    def is_pitch(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.pitch_offset) & (ids < self.dur_offset)

    def is_dur(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.dur_offset) & (ids < self.rest_offset)

    def is_rest(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.rest_offset) & (ids < self.vocab_size)

    def steps_of(self, ids) -> np.ndarray:
        """Steps that each token advances time by (0 for all but DUR and REST)."""
        ids = np.asarray(ids, dtype=np.int64)
        steps = np.zeros(ids.shape, dtype=np.int64)
        dur, rest = self.is_dur(ids), self.is_rest(ids)
        steps[dur] = ids[dur] - self.dur_offset + 1
        steps[rest] = ids[rest] - self.rest_offset + 1
        return steps

    def decode_names(self, ids) -> list[str]:
        return [self.names[int(i)] for i in ids]

    # -- encode / decode --------------------------------------------------
    def encode(self, melody: Melody) -> np.ndarray:
        """Tokens of one melody, from BOS to EOS, as an int32 array."""
        c = self.config
        if melody.n_notes and (
            melody.pitches.min() < c.lowest_pitch or melody.pitches.max() > c.highest_pitch
        ):
            raise ValueError(
                f"pitch must be in range {c.lowest_pitch}..{c.highest_pitch}, "
                f"got {int(melody.pitches.min())}..{int(melody.pitches.max())}"
            )
        ts_token = self.ts_id(melody.time_signature)
        has_bars = self.ts_of(ts_token) is not None
        bar = melody.bar_steps if has_bars else None
        out = [BOS, self.key_id(melody.key), ts_token]
        next_bar = melody.bar_phase % bar if bar else None
        pos = 0

        def bars_until(t):
            nonlocal next_bar
            while bar and next_bar <= t:
                out.append(BAR)
                next_bar += bar

        for pitch, onset, dur in zip(melody.pitches, melody.onsets, melody.durations):
            onset, dur = int(onset), int(dur)
            if onset < pos:
                raise ValueError(f"notes must not overlap: onset {onset} before {pos}")
            if dur <= 0:
                raise ValueError(f"duration must be positive, got {dur}")
            while pos < onset:  # rests, split at bar lines so BAR lands exactly
                bars_until(pos)
                stop = min(onset, next_bar) if bar else onset
                self._add_steps(out, self.rest_offset, stop - pos)
                pos = stop
            bars_until(onset)
            out.append(self.pitch_id(pitch))
            self._add_steps(out, self.dur_offset, dur)
            pos = onset + dur
        bars_until(pos)
        out.append(EOS)
        return np.asarray(out, dtype=np.int32)

    def _add_steps(self, out: list, offset: int, steps: int) -> None:
        m = self.config.max_duration
        while steps > m:
            out.append(offset + m - 1)
            steps -= m
        if steps > 0:
            out.append(offset + steps - 1)

    def decode(self, ids, **meta) -> Melody:
        """The melody that tokens describe; tokens after EOS are ignored.

        ``meta`` sets Melody fields the tokens do not carry (tempo, program).
        """
        ids = np.asarray(ids, dtype=np.int64)
        pitches, onsets, durations = [], [], []
        key, ts, bar_phase = None, None, None
        pos = 0
        extend = False  # the next DUR token belongs to the last note
        for t in ids:
            t = int(t)
            if t == EOS:
                break
            if self.key_offset <= t < self.ts_offset:
                key = self.key_of(t)
            elif self.ts_offset <= t < self.pitch_offset:
                ts = self.ts_of(t)
            elif t == BAR and bar_phase is None:
                bar_phase = pos
            elif self.pitch_offset <= t < self.dur_offset:
                pitches.append(t - self.pitch_offset + self.config.lowest_pitch)
                onsets.append(pos)
                durations.append(0)
                extend = True
                continue
            elif self.dur_offset <= t < self.rest_offset and extend:
                d = t - self.dur_offset + 1
                durations[-1] += d
                pos = onsets[-1] + durations[-1]
                extend = d == self.config.max_duration
                continue
            elif t >= self.rest_offset:
                pos += t - self.rest_offset + 1
            extend = False
        # A note cut off before its DUR token has no length; drop it.
        keep = [i for i, d in enumerate(durations) if d > 0]
        meta.setdefault("time_signature", ts)
        return Melody(
            pitches=[pitches[i] for i in keep],
            onsets=[onsets[i] for i in keep],
            durations=[durations[i] for i in keep],
            key=key,
            bar_phase=bar_phase or 0,
            **meta,
        )

    # -- grammar ------------------------------------------------------------
    def _grammar(self) -> np.ndarray:
        """``grammar[a, b]`` is True when token b may follow token a."""
        V = self.vocab_size
        g = np.zeros((V, V), dtype=bool)
        keys = slice(self.key_offset, self.ts_offset)
        tss = slice(self.ts_offset, self.pitch_offset)
        pitches = slice(self.pitch_offset, self.dur_offset)
        durs = slice(self.dur_offset, self.rest_offset)
        rests = slice(self.rest_offset, V)
        g[BOS, keys] = True
        g[keys, tss] = True
        body_start = np.zeros(V, dtype=bool)
        body_start[BAR] = True
        body_start[pitches] = True
        body_start[rests] = True
        g[tss] = body_start
        g[BAR] = body_start
        g[BAR, BAR] = True  # a long note can span several bar lines
        g[BAR, EOS] = True
        g[pitches, durs] = True
        after_note = body_start.copy()
        after_note[EOS] = True
        g[durs] = after_note
        g[rests] = body_start
        g[rests, EOS] = False
        m = self.config.max_duration
        g[self.dur_offset + m - 1, durs] = True  # DUR_max may be extended
        g[self.rest_offset + m - 1, rests] = True
        g[EOS, EOS] = True
        g[EOS, PAD] = True
        g[PAD, PAD] = True
        return g

    def is_valid(self, ids) -> bool:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0 or ids[0] != BOS:
            return False
        return bool(self.grammar[ids[:-1], ids[1:]].all())

    # -- augmentation ---------------------------------------------------------
    def transpose_table(self, semitones: int) -> np.ndarray:
        """Lookup array mapping every token to its transposition by ``semitones``.

        Pitches pushed outside the vocabulary's range are clamped to it.
        """
        table = np.arange(self.vocab_size, dtype=np.int32)
        p = np.arange(self.n_pitches) + semitones
        table[self.pitch_offset:self.dur_offset] = self.pitch_offset + np.clip(
            p, 0, self.n_pitches - 1
        )
        for i in range(24):
            key = self.key_of(self.key_offset + i).transpose(semitones)
            table[self.key_offset + i] = self.key_id(key)
        return table

    # -- persistence ------------------------------------------------------------
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self.config)
        data["time_signatures"] = list(self.config.time_signatures)
        return data

    def save(self, path) -> None:
        from melody.fileio import atomic_write_text

        payload = {"config": self.to_dict(), "vocab": self.names}
        atomic_write_text(path, json.dumps(payload, indent=1) + "\n")

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """The tokenizer saved in ``path`` (ValueError when it is over MAX_TOKENIZER_BYTES)."""
        with open(path, "rb") as f:
            data = f.read(MAX_TOKENIZER_BYTES + 1)
        if len(data) > MAX_TOKENIZER_BYTES:
            raise ValueError(f"{path}: over {MAX_TOKENIZER_BYTES} bytes; not a tokenizer file")
        return cls.from_dict(json.loads(data), path)

    @classmethod
    def from_dict(cls, data: dict, where="tokenizer") -> "Tokenizer":
        """The tokenizer a ``tokenizer.json``'s contents describe (``where`` names it in errors)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {"config", "vocab"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(map(repr, unknown[:5]))}; a "
                             "tokenizer file holds 'config' and 'vocab'")
        tok = cls(TokenizerConfig.from_dict(data["config"]))
        if data.get("vocab") not in (None, tok.names):
            raise ValueError(f"{where}: vocabulary does not match its tokenizer settings")
        return tok

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.config == other.config

    def __hash__(self) -> int:
        return hash(self.config)
