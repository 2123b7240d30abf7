"""Per-melody features: pitch range and classes, intervals, durations, density, scale, repetition,
and the form figures of ``melody.musicality.form`` (bars and phrases heard again).

>>> from melody.notes import Melody
>>> scale = Melody([60, 62, 64, 65, 67, 69, 71, 72], range(0, 96, 12), [12] * 8)
>>> f = melody_features(scale)
>>> f["pitch_range"], f["scale_consistency"], f["pitch_classes_used"]
(12.0, 1.0, 7.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from melody.musicality import form
from melody.notes import STEPS_PER_QUARTER, Melody

INTERVAL_CLIP = 12
INTERVAL_LABELS = tuple(str(i) for i in range(-INTERVAL_CLIP, INTERVAL_CLIP + 1))
# Upper edges, in grid steps, of the duration bins; the last bin holds longer notes.
# They land on the common values: 16th = 3, triplet 8th = 4, 8th = 6, ... whole = 48.
DURATION_EDGES = (2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 36, 48)
DURATION_LABELS = ("≤2",) + tuple(str(e) for e in DURATION_EDGES[1:]) + (">48",)
PITCH_CLASS_LABELS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
REPETITION_NOTES = 4

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


def _scale_masks() -> np.ndarray:
    """24 seven-note scales: the major scales (which also hold every church mode,
    natural minor included) and the harmonic minor scales."""
    masks = np.zeros((24, 12))
    for tonic in range(12):
        masks[tonic, [(tonic + s) % 12 for s in _MAJOR]] = 1
        masks[12 + tonic, [(tonic + s) % 12 for s in _HARMONIC_MINOR]] = 1
    return masks


_SCALES = _scale_masks()


def pitch_range(m: Melody) -> float:
    return float(m.pitches.max() - m.pitches.min()) if m.n_notes else 0.0


def pitch_class_histogram(m: Melody) -> np.ndarray:
    counts = np.bincount(m.pitches.astype(np.int64) % 12, minlength=12).astype(float)
    return counts / max(counts.sum(), 1.0)


def pitch_classes_used(m: Melody) -> float:
    return float(np.count_nonzero(pitch_class_histogram(m)))


def pitch_class_entropy(m: Melody) -> float:
    p = pitch_class_histogram(m)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def interval_histogram(m: Melody) -> np.ndarray:
    iv = np.clip(m.intervals(), -INTERVAL_CLIP, INTERVAL_CLIP) + INTERVAL_CLIP
    counts = np.bincount(iv, minlength=2 * INTERVAL_CLIP + 1).astype(float)
    return counts / max(counts.sum(), 1.0)


def duration_histogram(m: Melody) -> np.ndarray:
    bins = np.searchsorted(DURATION_EDGES, m.durations, side="left")
    counts = np.bincount(bins, minlength=len(DURATION_EDGES) + 1).astype(float)
    return counts / max(counts.sum(), 1.0)


def note_density(m: Melody) -> float:
    if not m.n_notes:
        return 0.0
    unit = m.bar_steps or STEPS_PER_QUARTER
    return m.n_notes * unit / float(m.end - m.onsets[0])


def scale_consistency(m: Melody) -> float:
    if not m.n_notes:
        return 0.0
    counts = np.bincount(m.pitches.astype(np.int64) % 12, minlength=12)
    return float((_SCALES @ counts).max() / m.n_notes)


def repetition(m: Melody) -> float:
    n = REPETITION_NOTES
    if m.n_notes < n:
        return 0.0
    iv, d = m.intervals(), m.durations
    count = m.n_notes - n + 1
    windows = np.stack(
        [iv[i:i + count] for i in range(n - 1)] + [d[i:i + count] for i in range(n)], axis=1
    )
    _, inverse, counts = np.unique(windows, axis=0, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse.reshape(-1)] > 1))


@dataclass(frozen=True)
class Feature:
    name: str
    function: Callable
    doc: str
    axis: str  # what the x axis of its panel shows
    labels: tuple[str, ...] | None = None  # bin labels for a histogram, None for a scalar


FEATURES = {f.name: f for f in (
    Feature("pitch_classes", pitch_class_histogram,
            "share of notes on each pitch class C..B", "pitch class", PITCH_CLASS_LABELS),
    Feature("intervals", interval_histogram,
            "share of melodic intervals, in semitones clipped to -12..+12", "semitones",
            INTERVAL_LABELS),
    Feature("durations", duration_histogram,
            "share of note durations in bins of grid steps (12 = a quarter note)",
            "steps (12 = quarter note)", DURATION_LABELS),
    Feature("pitch_range", pitch_range, "highest minus lowest pitch, in semitones", "semitones"),
    Feature("pitch_classes_used", pitch_classes_used, "number of distinct pitch classes",
            "pitch classes"),
    Feature("pitch_class_entropy", pitch_class_entropy,
            "entropy of the pitch-class histogram, in bits (0..log2 12)", "bits"),
    Feature("note_density", note_density,
            "notes per bar (per quarter note when there is no meter), first onset to end",
            "notes per bar"),
    Feature("scale_consistency", scale_consistency,
            "largest share of notes inside one of 24 scales (12 major, 12 harmonic minor)",
            "share of notes"),
    Feature("repetition", repetition,
            "share of 4-note patterns (intervals and durations) that occur again in the melody",
            "share of patterns"),
    Feature("bar_repeats", form.bar_repeats,
            "share of bars that repeat an earlier bar of the melody exactly", "share of bars"),
    Feature("bar_repeats_transposed", form.bar_repeats_transposed,
            "share of bars that repeat an earlier bar, allowing a transposition", "share of bars"),
    Feature("recurrence", form.recurrence,
            f"share of {form.RECURRENCE_NOTES}-note patterns (intervals and durations) heard "
            "earlier in the melody", "share of patterns"),
    Feature("longest_repeat", form.longest_repeat,
            "most consecutive notes that occur twice without overlapping (any transposition)",
            "notes"),
)}


def melody_features(m: Melody) -> dict:
    """Every feature of one melody: floats for scalars, arrays for histograms."""
    return {name: f.function(m) for name, f in FEATURES.items()}


def features(melodies) -> dict[str, np.ndarray]:
    """Each feature over a set: shape (n,) for a scalar, (n, bins) for a histogram."""
    rows = [melody_features(m) for m in melodies]
    return {name: np.array([r[name] for r in rows], dtype=float) for name in FEATURES}
