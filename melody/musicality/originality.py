"""Originality: how much of a melody is also in the training set.

Runs of notes of a training set are kept as (interval to the previous note,
duration), so that transposed copies are found; for a melody, the longest
run found in the training set and the share of its 8-note runs found there,
with thresholds taken from held-out human melodies (their 95th percentiles).
A model folder keeps its training set's runs in ``originality.npz``.
"""

from __future__ import annotations

import contextlib
from array import array
from dataclasses import dataclass

import numpy as np

from melody.notes import Melody

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
        """The index in ``path``; ValueError naming the damage. Its members' sizes are
        checked in the zip's directory before any is unpacked."""
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    if info.filename not in _MEMBERS or info.file_size > MAX_MEMBER_BYTES:
                        raise ValueError(f"holds {info.filename} of {info.file_size} bytes; "
                                         f"an originality file holds only {', '.join(_MEMBERS)}, "
                                         f"each at most {MAX_MEMBER_BYTES} bytes")
            with np.load(path, allow_pickle=False) as z:
                version = int(z["version"])
                if version != _FORMAT_VERSION or int(z["ngram"]) != NGRAM:
                    raise ValueError(f"version must be {_FORMAT_VERSION}, got {version}")
                lengths = z["lengths"].astype(np.int64)
                intervals, durations = z["intervals"], z["durations"]
                if lengths.ndim != 1 or (lengths < 0).any() or not (
                        len(intervals) == len(durations) == lengths.sum()):
                    raise ValueError("its melody lengths do not add up to its notes")
                runs = _Runs(intervals, durations, np.r_[0, np.cumsum(lengths)])
                limits = z["thresholds"]
                if limits.shape != (2,):
                    raise ValueError(f"thresholds must be 2 numbers, got shape {limits.shape}")
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not an originality file ({e})") from None
        thresholds = None if np.isnan(limits).any() else Thresholds(*map(float, limits))
        return cls(runs, thresholds)


_MEMBERS = tuple(f"{name}.npy" for name in
                 ("version", "ngram", "intervals", "durations", "lengths", "thresholds"))
MAX_MEMBER_BYTES = 2**28  # 256 MB: the durations of 64 million training notes

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


def originality_report(generated, human, index: OriginalityIndex) -> dict:
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
