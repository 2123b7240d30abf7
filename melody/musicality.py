"""Musicality statistics and originality checks for sets of melodies.

Three parts, all NumPy:

- ``features(melodies)``: per-melody features (``FEATURES`` says what each is).
- ``compare(generated, human)``: the set comparison of Yang and Lerch (2018),
  "On the evaluation of generative models in music", Neural Computing and
  Applications 32: per feature, the intra-set distances of the human set and
  the inter-set distances (generated x human) are smoothed by a Gaussian KDE,
  and the overlap area and the KL divergence of the two densities are
  reported.
- ``OriginalityIndex``: runs of notes of a training set, as (interval to the
  previous note, duration) so that transposed copies are found; for a melody,
  the longest run found in the training set and the share of its 8-note runs
  found there, with thresholds taken from held-out human melodies.

>>> from melody.notes import Melody
>>> scale = Melody([60, 62, 64, 65, 67, 69, 71, 72], range(0, 96, 12), [12] * 8)
>>> f = melody_features(scale)
>>> f["pitch_range"], f["scale_consistency"], f["pitch_classes_used"]
(12.0, 1.0, 7.0)
"""

from __future__ import annotations

import contextlib
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from melody.notes import STEPS_PER_QUARTER, Melody

# -- per-melody features ------------------------------------------------------

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
)}


def melody_features(m: Melody) -> dict:
    """Every feature of one melody: floats for scalars, arrays for histograms."""
    return {name: f.function(m) for name, f in FEATURES.items()}


def features(melodies) -> dict[str, np.ndarray]:
    """Each feature over a set: shape (n,) for a scalar, (n, bins) for a histogram."""
    rows = [melody_features(m) for m in melodies]
    return {name: np.array([r[name] for r in rows], dtype=float) for name in FEATURES}


# -- set comparison (Yang and Lerch 2018) -------------------------------------

KDE_GRID = 1024


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between every row of a and every row of b (absolute difference
    for scalars, Euclidean for histograms)."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    if a.shape[1] == 1:
        return np.abs(a - b.T)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def intra_distances(x: np.ndarray) -> np.ndarray:
    """Distances between every pair of different melodies of one set."""
    i, j = np.triu_indices(len(x), k=1)
    return _pairwise(x, x)[i, j]


def inter_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pairwise(x, y).reshape(-1)


def scott_bandwidth(samples: np.ndarray) -> float:
    """Scott's rule for one dimension: std * n^(-1/5), as scipy's gaussian_kde."""
    n = len(samples)
    sd = samples.std(ddof=1) if n > 1 else 0.0
    return float(sd * n ** -0.2)


def kde(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE on an even grid, normalised to integrate to 1 on it.

    Samples are linearly binned onto the grid and convolved with the kernel,
    so the cost does not grow with the number of samples times grid points.
    """
    dx = grid[1] - grid[0]
    pos = np.clip((samples - grid[0]) / dx, 0, len(grid) - 1.000001)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    weights = np.bincount(lo, 1 - frac, minlength=len(grid))
    weights += np.bincount(lo + 1, frac, minlength=len(grid) + 1)[:len(grid)]
    half = int(min(np.ceil(4 * bandwidth / dx), len(grid)))
    offsets = np.arange(-half, half + 1) * dx
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    density = np.convolve(weights, kernel)[half:half + len(grid)]
    return density / (density.sum() * dx)


def overlap_and_kl(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Overlap area of the two KDE densities and KL(reference || other) in nats.

    Choices where the paper leaves room (its code, mgeval, differs in places):
    both densities use the larger of the two Scott bandwidths, so that a set
    whose distances are all equal (common for counts such as pitch classes
    used) is not compared as a spike against a smooth bump; the bandwidth is
    never below 1e-3 of the largest distance; both are evaluated on one grid
    covering every sample plus 4 bandwidths, so identical samples give overlap
    1 and KL 0; densities are floored at 1e-12 so that disjoint sets give a
    large but finite KL.
    """
    reference = np.asarray(reference, float)
    other = np.asarray(other, float)
    scale = max(np.abs(reference).max(), np.abs(other).max(), 1e-9)
    bw = max(scott_bandwidth(reference), scott_bandwidth(other), 1e-3 * scale)
    pad = 4 * bw
    low = min(reference.min(), other.min()) - pad
    high = max(reference.max(), other.max()) + pad
    grid = np.linspace(low, high, KDE_GRID)
    dx = grid[1] - grid[0]
    p = kde(reference, grid, bw)
    q = kde(other, grid, bw)
    overlap = float(np.minimum(p, q).sum() * dx)
    p_safe, q_safe = np.maximum(p, 1e-12), np.maximum(q, 1e-12)
    kl = float((p * np.log(p_safe / q_safe)).sum() * dx)
    return min(overlap, 1.0), max(kl, 0.0)


def compare(generated, human) -> dict:
    """Per feature, how well generated melodies blend into the human set.

    Following Yang and Lerch (2018): ``overlap`` is the overlap area
    and ``kl`` the KL divergence KL(human intra || inter) between the density of
    the human set's intra-set distances and that of the inter-set distances
    (each generated melody against each human one). A generated set drawn from
    the same distribution as the human one gives overlap near 1 and KL near 0.
    ``generated_mean``/``human_mean`` are the feature's means (a list for a
    histogram); ``*_distance`` are the mean distances behind the densities.
    """
    generated, human = list(generated), list(human)
    for name, items in (("generated", generated), ("human", human)):
        if len(items) < 2:
            raise ValueError(f"{name} melodies must number at least 2, got {len(items)}")
    g, h = features(generated), features(human)
    out = {}
    for name in FEATURES:
        intra_h = intra_distances(h[name])
        intra_g = intra_distances(g[name])
        inter = inter_distances(g[name], h[name])
        overlap, kl = overlap_and_kl(intra_h, inter)
        out[name] = {
            "overlap": overlap,
            "kl": kl,
            "generated_mean": _plain(g[name].mean(0)),
            "human_mean": _plain(h[name].mean(0)),
            "generated_intra_distance": float(intra_g.mean()),
            "human_intra_distance": float(intra_h.mean()),
            "inter_distance": float(inter.mean()),
        }
    return out


def _plain(value):
    """A float or a list of floats, ready for JSON."""
    value = np.asarray(value, float)
    return float(value) if value.ndim == 0 else [float(v) for v in value]


# -- originality ----------------------------------------------------------------

NGRAM = 8
PERCENTILE = 95
ORIGINALITY_FILE = "originality.npz"
_FORMAT_VERSION = 1
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so every power of it is invertible mod 2^64
_HEAD = np.uint64(0xD6E8FEB86659FD93)  # marks the first note of a run (duration only)
_INVERSE = np.uint64(pow(int(_BASE), -1, 2**64))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads token values over all 64 bits."""
    x = np.asarray(x, np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _powers(n: int) -> np.ndarray:
    """BASE^0 .. BASE^(n-1) mod 2^64 (uint64 arithmetic wraps)."""
    out = np.full(n, _BASE, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


class _Runs:
    """Melodies laid end to end, with prefix hashes that give any run's hash in O(1).

    A run of k notes starting at note i is hashed from the duration of note i
    and the (interval, duration) of notes i+1..i+k-1: pitch-free, so a
    transposed copy hashes the same. Kept lean, for a large training set:
    18 bytes a note (interval, duration, notes left, prefix hash), built in
    chunks so no temporary is the size of the collection.
    """

    CHUNK = 1 << 16

    def __init__(self, intervals: np.ndarray, durations: np.ndarray, offsets: np.ndarray):
        self.intervals = np.asarray(intervals, np.int16)
        self.durations = np.asarray(durations, np.uint32)
        self.offsets = np.asarray(offsets, np.int64)
        n = len(self.durations)
        lengths = np.diff(self.offsets)
        # notes left in its melody from each note on, this one included
        self.room = (np.repeat(self.offsets[1:].astype(np.int32), lengths)
                     - np.arange(n, dtype=np.int32))
        self.pow = _powers(int(lengths.max(initial=0)) + 1)  # no run is longer than its melody
        # prefix[j] = sum_{m<j} body[m] * BASE^(j-1-m), all mod 2^64: per chunk with
        # the cumulative-sum trick, then carried over from the chunk before
        self.prefix = np.zeros(n + 1, np.uint64)
        step = _powers(self.CHUNK + 1)
        inv_step = np.cumprod(np.r_[np.uint64(1), np.full(self.CHUNK, _INVERSE, np.uint64)],
                              dtype=np.uint64)
        for a in range(0, n, self.CHUNK):
            b = min(a + self.CHUNK, n)
            m = b - a
            body = _mix(((self.intervals[a:b].astype(np.int64) + 1024) << 32)
                        | self.durations[a:b].astype(np.int64))
            local = step[:m] * np.cumsum(body * inv_step[:m], dtype=np.uint64)
            self.prefix[a + 1:b + 1] = self.prefix[a] * step[1:m + 1] + local

    @classmethod
    def from_melodies(cls, melodies) -> "_Runs":
        """From any iterable of melodies, read once and not kept."""
        intervals, durations, lengths = array("h"), array("I"), array("q")
        for m in melodies:
            if m.n_notes:
                intervals.append(0)  # a placeholder: no run hash reads the first note's
                intervals.frombytes(np.diff(np.asarray(m.pitches, np.int16)).tobytes())
                durations.frombytes(np.asarray(m.durations, np.uint32).tobytes())
            lengths.append(m.n_notes)
        offsets = np.concatenate([[0], np.cumsum(np.array(lengths, np.int64))]).astype(np.int64)
        return cls(np.array(intervals, np.int16), np.array(durations, np.uint32), offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def starts(self, k: int) -> np.ndarray:
        """Notes where a run of k notes starts without leaving its melody."""
        return np.flatnonzero(self.room >= k)

    def hashes(self, starts: np.ndarray, k: int) -> np.ndarray:
        if not len(starts):  # also when k is longer than every melody
            return np.zeros(0, np.uint64)
        p = self.pow[k - 1]
        head = _mix(self.durations[starts].astype(np.uint64) ^ _HEAD)
        return head * p + self.prefix[starts + k] - self.prefix[starts + 1] * p

    def melody_of(self, starts: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, starts, side="right") - 1


def _as_runs(melodies) -> _Runs:
    return melodies if isinstance(melodies, _Runs) else _Runs.from_melodies(melodies)


def _match(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which query hashes occur among the training hashes, and which training
    hashes occur among the query ones.

    The (few) query hashes are sorted and the training ones searched into them,
    so nothing of the size of the training set is sorted.
    """
    if not len(query) or not len(train):
        return np.zeros(len(query), bool), np.zeros(len(train), bool)
    keys = np.unique(query)
    pos = np.minimum(np.searchsorted(keys, train), len(keys) - 1)
    train_hit = keys[pos] == train
    present = np.zeros(len(keys), bool)
    present[pos[train_hit]] = True
    return present[np.searchsorted(keys, query)], train_hit


@dataclass(frozen=True)
class Thresholds:
    """The human 95th percentiles above which a melody counts as copying."""

    longest_run: float
    share: float

    def to_dict(self) -> dict:
        return {"longest_run": self.longest_run, f"share_{NGRAM}": self.share}


class OriginalityIndex:
    """The training set's runs of notes, for finding what a melody copies.

    >>> from melody.notes import Melody
    >>> tune = Melody(range(60, 70), range(0, 120, 12), [12] * 10)
    >>> index = OriginalityIndex.from_melodies([tune])
    >>> int(index.longest_runs([tune.transpose(5)])[0])
    10
    """

    def __init__(self, runs: _Runs, thresholds: Thresholds | None = None):
        self.runs = runs
        self.thresholds = thresholds

    @classmethod
    def from_melodies(cls, melodies, thresholds: Thresholds | None = None):
        return cls(_Runs.from_melodies(melodies), thresholds)

    def longest_runs(self, melodies) -> np.ndarray:
        """Per melody, the most consecutive notes that also occur in the training set
        (same intervals and durations; 0 when not even one of its durations does)."""
        query, train = _as_runs(melodies), self.runs
        best = np.zeros(len(query.lengths), np.int64)
        # Extend runs one note at a time. A (k+1)-note match can only start
        # where a k-note match did, in the melody and in the training set, so
        # both lists of starts shrink fast and later rounds cost little.
        q_starts, t_starts = query.starts(1), train.starts(1)
        k = 1
        while len(q_starts):
            q_hit, t_hit = _match(query.hashes(q_starts, k), train.hashes(t_starts, k))
            q_starts, t_starts = q_starts[q_hit], t_starts[t_hit]
            best[query.melody_of(q_starts)] = k
            k += 1
            q_starts = q_starts[query.room[q_starts] >= k]
            t_starts = t_starts[train.room[t_starts] >= k]
        return best

    def shares(self, melodies, n: int = NGRAM) -> np.ndarray:
        """Per melody, the share of its n-note runs found in the training set
        (NaN for a melody shorter than n notes)."""
        query = _as_runs(melodies)
        return _shares(query, n, self.hits(query, n))

    def hits(self, query: _Runs, n: int = NGRAM) -> np.ndarray:
        """Per n-note run of ``query`` (at ``query.starts(n)``): found in the training set."""
        starts = query.starts(n)
        return _match(query.hashes(starts, n), self.runs.hashes(self.runs.starts(n), n))[0]

    def measure(self, melodies) -> dict[str, np.ndarray]:
        query = _as_runs(melodies)
        return {"longest_run": self.longest_runs(query), "share": self.shares(query)}

    def thresholds_from(self, heldout) -> Thresholds:
        """95th percentiles of held-out human melodies' figures."""
        figures = self.measure(heldout)
        return _thresholds(figures["longest_run"], figures["share"])

    # -- the file a model folder holds -----------------------------------------
    def save(self, path) -> None:
        """Write the index (and thresholds) as a compressed .npz, atomically."""
        r = self.runs
        _write_npz(path, dict(_header(self.thresholds), intervals=r.intervals.astype(np.int16),
                              durations=r.durations.astype(np.uint32),
                              lengths=r.lengths.astype(np.uint32)), {})

    @classmethod
    def load(cls, path) -> "OriginalityIndex":
        try:
            with np.load(path, allow_pickle=False) as z:
                version = int(z["version"])
                if version != _FORMAT_VERSION or int(z["ngram"]) != NGRAM:
                    raise ValueError(f"version must be {_FORMAT_VERSION}, got {version}")
                lengths = z["lengths"].astype(np.int64)
                runs = _Runs(z["intervals"], z["durations"], np.r_[0, np.cumsum(lengths)])
                limits = z["thresholds"]
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not an originality file ({e})") from None
        thresholds = None if np.isnan(limits).any() else Thresholds(*map(float, limits))
        return cls(runs, thresholds)


TRAIN_CHUNK_NOTES = 1 << 18  # training notes indexed at a time by build_originality_file


def build_originality_file(train_melodies, heldout_melodies, path) -> Thresholds:
    """Save the training melodies' originality file to ``path``, with thresholds
    from the held-out ones; return the thresholds.

    Memory stays the same however large the training set: the training
    melodies (any iterable) are read once, a chunk at a time. A run never
    crosses from one melody to the next, so each chunk is matched against the
    held-out melodies on its own and the results combined (longest: the most
    of any chunk; n-note runs: found in any chunk), and each chunk's notes go
    to the file through temporary files. The file is the one ``save`` writes.
    """
    import tempfile

    query = _as_runs(heldout_melodies)
    best = np.zeros(len(query.lengths), np.int64)
    hit = np.zeros(len(query.starts(NGRAM)), bool)
    names = ("intervals", "durations", "lengths")
    with contextlib.ExitStack() as stack:
        spill = {name: stack.enter_context(tempfile.TemporaryFile()) for name in names}

        def index(chunk: list) -> None:
            nonlocal best, hit
            chunk_index = OriginalityIndex.from_melodies(chunk)
            best = np.maximum(best, chunk_index.longest_runs(query))
            hit |= chunk_index.hits(query)
            r = chunk_index.runs
            for name, values in zip(names, (r.intervals, r.durations, r.lengths.astype(np.uint32))):
                spill[name].write(values.tobytes())

        chunk, notes = [], 0
        for melody in train_melodies:
            chunk.append(melody)
            notes += melody.n_notes
            if notes >= TRAIN_CHUNK_NOTES:
                index(chunk)
                chunk, notes = [], 0
        if chunk:
            index(chunk)
        thresholds = _thresholds(best, _shares(query, NGRAM, hit))
        dtypes = {"intervals": np.int16, "durations": np.uint32, "lengths": np.uint32}
        _write_npz(path, _header(thresholds),
                   {name: (spill[name], np.dtype(dtypes[name])) for name in names})
    return thresholds


def _header(t: Thresholds | None) -> dict:
    """The originality file's small arrays: format, run length, thresholds."""
    return {"version": np.array(_FORMAT_VERSION), "ngram": np.array(NGRAM),
            "thresholds": np.array([t.longest_run, t.share] if t else [np.nan, np.nan])}


def _shares(query: _Runs, n: int, hit: np.ndarray) -> np.ndarray:
    """Per melody of ``query``, the share of its n-note runs that ``hit`` marks
    (NaN for a melody shorter than n notes)."""
    owner = query.melody_of(query.starts(n))
    total = np.bincount(owner, minlength=len(query.lengths))
    found = np.bincount(owner, weights=hit, minlength=len(query.lengths))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, found / np.maximum(total, 1), np.nan)


def _thresholds(longest: np.ndarray, share: np.ndarray) -> Thresholds:
    if not len(longest):
        raise ValueError("held-out melodies must number at least 1, got 0")
    share = share[~np.isnan(share)]
    return Thresholds(
        longest_run=float(np.percentile(longest, PERCENTILE)),
        share=float(np.percentile(share, PERCENTILE)) if len(share) else 1.0,
    )


def _write_npz(path, arrays: dict, spilled: dict) -> None:
    """A compressed .npz, written atomically: ``arrays`` from memory, and each of
    ``spilled`` (name -> (file, dtype)) copied from a file of raw values."""
    import zipfile

    from melody.fileio import atomic_path, write_npy

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, value in arrays.items():
                with z.open(f"{name}.npy", "w") as entry:
                    np.lib.format.write_array(entry, value)
            for name, (f, dtype) in spilled.items():
                size = f.seek(0, 2)
                f.seek(0)
                with z.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    write_npy(entry, dtype, size // dtype.itemsize,
                              iter(lambda: f.read(2**20), b""))


def load_originality(path) -> OriginalityIndex:
    return OriginalityIndex.load(path)


def check(melodies, index: OriginalityIndex) -> list[dict]:
    """Per melody: longest run, 8-note share and whether it is flagged."""
    if index.thresholds is None:
        raise ValueError("originality index has no thresholds; build it with held-out melodies")
    figures = index.measure(melodies)
    t = index.thresholds
    out = []
    for run, share in zip(figures["longest_run"], figures["share"]):
        share = None if np.isnan(share) else float(share)
        flagged = run > t.longest_run or (share is not None and share > t.share)
        out.append({"longest_run": int(run), f"share_{NGRAM}": share, "flagged": bool(flagged)})
    return out


def flag(melody: Melody, index: OriginalityIndex) -> bool:
    """True when the melody copies the training set more than 95 in 100 human
    melodies do: its longest run or its 8-note share is above the human 95th
    percentile stored in ``index.thresholds``."""
    return check([melody], index)[0]["flagged"]


def _summary(values: np.ndarray) -> dict:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if not len(values):
        return {"mean": None, "median": None, "p95": None}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, PERCENTILE)),
    }


def originality(generated, human, index: OriginalityIndex) -> dict:
    """Originality of generated melodies beside held-out human ones.

    Thresholds are the human set's 95th percentiles; ``flagged`` is the share of
    each set above them (for the human set at most about 5 in 100 by design).
    """
    generated, human = list(generated), list(human)
    thresholds = index.thresholds_from(human)
    report = {"ngram": NGRAM, "thresholds": thresholds.to_dict()}
    for name, items in (("generated", generated), ("human", human)):
        f = index.measure(items)
        share = f["share"]
        above = (f["longest_run"] > thresholds.longest_run) | (
            np.nan_to_num(share, nan=0.0) > thresholds.share
        )
        report[name] = {
            "melodies": len(items),
            "longest_run": _summary(f["longest_run"]),
            f"share_{NGRAM}": _summary(share),
            "flagged": float(above.mean()) if len(items) else None,
        }
    return report


# -- drawing ----------------------------------------------------------------------

FIGSIZE = (12, 9)
DPI = 100  # so a PNG is 1200 x 900 pixels
_COLOURS = {"generated": "#d95f02", "human": "#1b9e77"}


def draw(generated, human, path, title: str | None = None, stats: dict | None = None) -> Path:
    """Draw every feature, generated against human, as a 3 x 3 grid in one PNG.

    Histogram features show the sets' mean histograms as paired bars; scalar
    features show each set's distribution of per-melody values. With ``stats``
    (from ``compare``) each panel also names its overlap and KL. The PNG is
    1200 x 900 pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from melody.fileio import atomic_path

    sets = {"generated": features(generated), "human": features(human)}
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3).ravel()
    for ax, (name, feature) in zip(axes, FEATURES.items()):
        if feature.labels:
            _draw_histogram(ax, sets, name, feature.labels)
        else:
            _draw_scalar(ax, sets, name)
        label = name.replace("_", " ")
        if stats and name in stats:
            label += f"  (overlap {stats[name]['overlap']:.2f}, KL {stats[name]['kl']:.2f})"
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(feature.axis, fontsize=8)
        ax.tick_params(labelsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=2, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _draw_histogram(ax, sets: dict, name: str, labels) -> None:
    x = np.arange(len(labels))
    for i, (who, values) in enumerate(sets.items()):
        mean = values[name].mean(0) if len(values[name]) else np.zeros(len(labels))
        ax.bar(x + (i - 0.5) * 0.4, mean, width=0.4, color=_COLOURS[who],
               label=f"{who} ({len(values[name])})")
    step = 1 if len(labels) <= 13 else 3
    ax.set_xticks(x[::step])
    ax.set_xticklabels(labels[::step])
    ax.set_ylabel("share", fontsize=8)


def _draw_scalar(ax, sets: dict, name: str) -> None:
    values = [v[name] for v in sets.values()]
    both = np.concatenate(values)
    low, high = (both.min(), both.max()) if len(both) else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 21)
    for who, v in sets.items():
        ax.hist(v[name], bins=bins, density=True, histtype="stepfilled", alpha=0.45,
                color=_COLOURS[who], label=who)
    ax.set_ylabel("density", fontsize=8)


# -- a model's melodies against human ones (evaluate) ------------------------------

HUMAN_LIMIT = 1000  # human melodies compared at most; pairwise distances grow as n^2
MAX_SAMPLE_NOTES = 512


def evaluate_report(model_folder, data, tokenizer, samples: int, seed: int = 0,
                    png=None) -> dict:
    """Musicality and originality of ``samples`` melodies of the model against ``data``.

    ``data`` is the token data evaluate scores (``TokenData``); its pieces,
    decoded, are the human set (a seeded subset of ``HUMAN_LIMIT`` when there
    are more). Melodies are sampled with the NumPy sampler at temperature 1.0
    and end by themselves, except that each is cut to a length drawn from the
    human pieces' note counts: pitch range, pitch classes used and repetition
    grow with length, so both sets must share one spread of lengths for the
    comparison to be about style. The training set's index comes from the
    model folder's ``originality.npz``, else from its training split; without
    either, ``originality_note`` says why. With ``png`` the features are drawn
    there. ``samples`` of 0 gives ``{}``.
    """
    if not samples:
        return {}
    rng = np.random.default_rng(seed)
    human = human_melodies(data, tokenizer, rng)
    if len(human) < 2:
        return {"musicality_note": f"musicality needs at least 2 pieces to compare with, "
                                   f"got {len(human)}"}
    lengths = np.array([m.n_notes for m in human])
    caps = np.clip(rng.choice(lengths, samples), 1, MAX_SAMPLE_NOTES)
    generated, cut = sample_melodies(model_folder, tokenizer, caps, seed)
    stats = compare(generated, human)
    report = {
        "musicality": stats,
        "musicality_sets": {
            "generated": len(generated),
            "human": len(human),
            "generated_notes_mean": float(np.mean([m.n_notes for m in generated])),
            "human_notes_mean": float(lengths.mean()),
            "cut": cut,  # share of generated melodies cut to their drawn length
        },
    }
    index, where = training_index(model_folder, tokenizer)
    if index is None:
        report["originality_note"] = where
    else:
        report["originality"] = dict(originality(generated, human, index), index=where)
    if png:
        title = f"{model_folder}: {len(generated)} generated vs {len(human)} human melodies"
        report["png"] = str(draw(generated, human, png, title=title, stats=stats))
    return report


def human_melodies(data, tokenizer, rng) -> list[Melody]:
    """The pieces of ``data`` decoded, at most ``HUMAN_LIMIT`` of them (a seeded choice)."""
    chosen = np.arange(len(data))
    if len(chosen) > HUMAN_LIMIT:
        chosen = np.sort(rng.choice(chosen, HUMAN_LIMIT, replace=False))
    return [tokenizer.decode(data.piece(int(i))) for i in chosen]


def sample_melodies(model_folder, tokenizer, caps: np.ndarray, seed: int):
    """One melody per cap, sampled at temperature 1.0 and cut to at most its cap's notes.

    Returns the melodies and the share that were cut (that had not ended by then).
    """
    from melody.model import read_config
    from melody.sample import NumpyGRU, SampleConfig, key_prior, sample

    model = NumpyGRU.load(model_folder)
    config = SampleConfig(n=len(caps), notes=int(caps.max()), temperature=1.0, seed=seed)
    prior = key_prior(read_config(model_folder), tokenizer)
    melodies = [tokenizer.decode(p) for p in sample(model, tokenizer, config, key_logp=prior)]
    cut = [m.n_notes > cap for m, cap in zip(melodies, caps)]
    return [first_notes(m, int(cap)) for m, cap in zip(melodies, caps)], float(np.mean(cut))


def first_notes(m: Melody, count: int) -> Melody:
    if m.n_notes <= count:
        return m
    velocities = None if m.velocities is None else m.velocities[:count]
    return replace(m, pitches=m.pitches[:count], onsets=m.onsets[:count],
                               durations=m.durations[:count], velocities=velocities)


def training_index(model_folder, tokenizer) -> tuple[OriginalityIndex | None, str]:
    """The model's training melodies indexed, and where from; or None and why not."""
    from melody.evaluate import baseline_training_data
    from melody.model import read_config

    path = Path(model_folder) / ORIGINALITY_FILE
    damaged = ""
    if path.is_file():
        try:
            return load_originality(path), str(path)
        except ValueError as e:
            damaged = f"{e}; "
    config = read_config(model_folder)
    train, why_not = baseline_training_data(config)
    if train is None:
        return None, f"{damaged}no usable {path} and {why_not}"
    melodies = [tokenizer.decode(p) for p in train.pieces()]
    folder = config["data"]["folder"]
    where = f"built from {len(melodies)} training pieces of {folder}"
    return OriginalityIndex.from_melodies(melodies), where
