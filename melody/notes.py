"""The melody type every stage shares: notes on a beat grid, plus metadata.

Time is counted in grid steps of ``STEPS_PER_QUARTER`` per quarter note, fine
enough for sixteenths (3 steps) and eighth-note triplets (4 steps). A melody
converts to ``pretty_midi``, ``music21`` and MIDI bytes.

>>> m = Melody(pitches=[60, 62], onsets=[0, 12], durations=[12, 12])
>>> m.n_notes, m.end
(2, 24)
>>> m.to_midi_bytes()[:4], len(m.to_pretty_midi().instruments[0].notes)
(b'MThd', 2)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

STEPS_PER_QUARTER = 12

PITCH_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
_LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
# Natural minor plus the raised sixth and seventh that minor melodies use.
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 9, 10, 11)


@dataclass(frozen=True)
class Key:
    """A key as tonic pitch class (0 = C) and mode ("major" or "minor")."""

    tonic: int
    mode: str

    def __post_init__(self):
        check_range("tonic", self.tonic, 0, 11)
        if self.mode not in ("major", "minor"):
            raise ValueError(f"mode must be 'major' or 'minor', got {self.mode!r}")

    @property
    def name(self) -> str:
        return PITCH_NAMES[self.tonic] + ("m" if self.mode == "minor" else "")

    def transpose(self, semitones: int) -> "Key":
        return Key((self.tonic + semitones) % 12, self.mode)

    def scale_pitch_classes(self) -> set[int]:
        steps = MAJOR_SCALE if self.mode == "major" else MINOR_SCALE
        return {(self.tonic + s) % 12 for s in steps}

    @classmethod
    def parse(cls, text: str) -> "Key":
        """Read a key name such as ``D``, ``F#m``, ``Bb minor`` or ``c# major``.

        >>> Key.parse("Bb minor").name
        'Bbm'
        """
        words = text.strip().replace("-", " ").split()
        if not words:
            raise ValueError("key must be a name such as D, F#m or 'Bb minor', got ''")
        head, rest = words[0], [w.lower() for w in words[1:]]
        mode = "major"
        if rest in (["minor"], ["min"], ["m"]):
            mode = "minor"
        elif rest not in ([], ["major"], ["maj"]):
            raise ValueError(f"key must be a name such as D, F#m or 'Bb minor', got {text!r}")
        if len(head) > 1 and head.endswith("m") and head[:-1].lower() != "":
            if head.lower().endswith("min"):
                head = head[:-3]
            else:
                head = head[:-1]
            mode = "minor"
        letter = head[:1].upper()
        if letter not in _LETTER_PC:
            raise ValueError(f"key must be a name such as D, F#m or 'Bb minor', got {text!r}")
        pc = _LETTER_PC[letter]
        for accidental in head[1:]:
            if accidental == "#":
                pc += 1
            elif accidental in ("b", "-"):
                pc -= 1
            else:
                raise ValueError(
                    f"key must be a name such as D, F#m or 'Bb minor', got {text!r}"
                )
        return cls(pc % 12, mode)


@dataclass
class Melody:
    """One monophonic line: parallel arrays of pitch, onset and duration in steps.

    Notes are sorted by onset and never overlap. ``bar_phase`` is the onset of
    the first downbeat (non-zero for a pickup). ``time_signature`` and ``key``
    are None when the source does not say and analysis could not tell.
    """

    pitches: np.ndarray
    onsets: np.ndarray
    durations: np.ndarray
    tempo: float = 120.0
    time_signature: tuple[int, int] | None = (4, 4)
    key: Key | None = None
    program: int = 0
    bar_phase: int = 0
    source: str = ""
    track_name: str = ""
    track_index: int = 0
    velocities: np.ndarray | None = field(default=None, repr=False)
    steps_per_quarter: ClassVar[int] = STEPS_PER_QUARTER

    def __post_init__(self):
        self.pitches = np.asarray(self.pitches, dtype=np.int16).reshape(-1)
        self.onsets = np.asarray(self.onsets, dtype=np.int64).reshape(-1)
        self.durations = np.asarray(self.durations, dtype=np.int64).reshape(-1)
        if not (len(self.pitches) == len(self.onsets) == len(self.durations)):
            raise ValueError("pitches, onsets and durations must have the same length")

    @property
    def n_notes(self) -> int:
        return int(len(self.pitches))

    @property
    def end(self) -> int:
        if not self.n_notes:
            return 0
        return int(self.onsets[-1] + self.durations[-1])

    @property
    def bar_steps(self) -> int | None:
        """Length of one bar in grid steps, or None without a meter."""
        if self.time_signature is None:
            return None
        num, den = self.time_signature
        return num * STEPS_PER_QUARTER * 4 // den

    def seconds(self, steps: float) -> float:
        return float(steps) / STEPS_PER_QUARTER * 60.0 / self.tempo

    def transpose(self, semitones: int) -> "Melody":
        key = self.key.transpose(semitones) if self.key else None
        return dataclasses.replace(self, pitches=self.pitches + semitones, key=key)

    def intervals(self) -> np.ndarray:
        return np.diff(self.pitches.astype(np.int64))

    @property
    def lead_in_steps(self) -> int:
        """Silence written before a pickup so that MIDI bar lines fall on the downbeats."""
        bar = self.bar_steps
        if not bar or self.bar_phase % bar == 0:
            return 0
        return (-self.bar_phase) % bar

    # -- conversions (melody.outputs does the work, imported only when asked) --------
    def to_pretty_midi(self):
        """A ``pretty_midi.PrettyMIDI``: one instrument, tempo, time and key signature."""
        from melody.outputs.midi import to_pretty_midi

        return to_pretty_midi(self)

    def to_midi_bytes(self) -> bytes:
        """The Standard MIDI File, deterministic byte for byte."""
        from melody.outputs.midi import midi_bytes

        return midi_bytes(self)

    def to_music21(self, title: str | None = None):
        """A ``music21`` Score, quantised to sixteenths and triplets."""
        from melody.outputs.score import to_music21

        return to_music21(self.to_pretty_midi(), title)

    def write_midi(self, path) -> None:
        """Write the MIDI file to ``path`` atomically."""
        from melody.outputs.midi import write_midi

        write_midi(self, path)


def check_range(name: str, value, low, high) -> None:
    """Raise ValueError naming the parameter, its range and the value given."""
    if not (low <= value <= high):
        raise ValueError(f"{name} must be in range {low}..{high}, got {value}")


# Krumhansl-Kessler profiles, as music21's KrumhanslSchmuckler ('key') uses.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(pitches, durations) -> Key | None:
    """Krumhansl-Schmuckler key estimate from duration-weighted pitch classes."""
    hist = np.zeros(12)
    np.add.at(hist, np.asarray(pitches, dtype=np.int64) % 12, np.asarray(durations, float))
    if hist.sum() == 0:
        return None
    best, best_r = None, -2.0
    for mode, profile in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for tonic in range(12):
            r = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if np.isfinite(r) and r > best_r:
                best, best_r = Key(tonic, mode), r
    return best
