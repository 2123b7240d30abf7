"""Collections -> prepared datasets, and the readers that stream them.

A dataset folder holds:

- ``manifest.json``: sources, every input file (path, status, reason, track,
  notes), every piece (id, file, split, notes, tokens, tempo, time signature,
  key, program, duplicate_of), counts, split settings and tokenizer settings;
- ``tokenizer.json``;
- ``{train,val}.tokens.npy`` (uint16, the pieces' tokens end to end, each
  piece from BOS to EOS) and ``{train,val}.offsets.npy`` (int64, piece i is
  ``tokens[offsets[i]:offsets[i+1]]``). They are memory-mapped, so a dataset
  larger than memory streams from disk.
- ``cache/``: what ``prepare`` read from each file (``index.jsonl`` plus one
  ``tokens-NAME.u16``), reused while a file's size and mtime are unchanged,
  and ``dataset.json``, the hash of everything the dataset was made from, so
  that a rerun over an unchanged collection with the same settings stops
  after looking at the files.

A "piece" is one unit read: a file, or one tune of a many-tune ABC file. A
skipped piece's reason is one of ``midi_io.REASONS`` or "timed out", "out of
memory", "crashed", "duplicate", "pitch out of range", "unencodable", "read
error". ``manifest.json`` is written last, so a folder is a dataset
(``is_dataset``) only once all of it is in place.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import importlib
import itertools
import json
import os
import select
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from types import GeneratorType

import numpy as np

from melody.backend import usable_cores
from melody.fileio import atomic_open, atomic_write_text, remove_written, write_npy
from melody.notes import Melody
from melody.tokenizer import Tokenizer, TokenizerConfig

SPLITS = ("train", "val")


@dataclass
class TokenData:
    """The pieces of one split: a token array and piece offsets, memory-mapped."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def piece(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def pieces(self):
        for i in range(len(self)):
            yield self.piece(i)

    @classmethod
    def from_pieces(cls, pieces) -> "TokenData":
        pieces = [np.asarray(p) for p in pieces]
        lengths = [len(p) for p in pieces]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.concatenate(pieces).astype(np.uint16) if pieces else np.zeros(0, np.uint16)
        return cls(tokens, offsets)


class Dataset:
    """A prepared dataset folder. The manifest (tens of MB for a large
    collection) is read only when asked for: training and evaluation need just
    the token arrays, the tokenizer and the digest."""

    def __init__(self, folder, manifest: dict | None = None, tokenizer: Tokenizer | None = None):
        self.folder = Path(folder)
        self._manifest = manifest
        self.tokenizer = tokenizer or Tokenizer.load(self.folder / "tokenizer.json")

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = json.loads((self.folder / "manifest.json").read_text())
        return self._manifest

    def split(self, name: str) -> TokenData:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        tokens = np.load(self.folder / f"{name}.tokens.npy", mmap_mode="r")
        offsets = np.load(self.folder / f"{name}.offsets.npy")
        return TokenData(tokens, offsets)

    @property
    def digest(self) -> str:
        """Short hash of the manifest: which data a model was trained on."""
        h = hashlib.sha256()
        with open(self.folder / "manifest.json", "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]


def is_dataset(folder) -> bool:
    return (Path(folder) / "manifest.json").is_file()


def load_dataset(folder) -> Dataset:
    return Dataset(folder)


def write_split(folder, name: str, data: TokenData) -> None:
    """Write one split's arrays atomically."""
    _write_split(folder, name, data.offsets, [data.tokens])


def _write_split(folder, name: str, offsets, blocks) -> None:
    """One split's arrays, atomically, its tokens from ``blocks`` as they come."""
    with atomic_open(Path(folder) / f"{name}.tokens.npy") as f:
        write_npy(f, np.uint16, int(offsets[-1]), blocks)
    with atomic_open(Path(folder) / f"{name}.offsets.npy") as f:
        np.save(f, np.asarray(offsets, np.int64))


def write_manifest(folder, manifest: dict) -> None:
    """Write ``manifest.json`` atomically, one top-level key, file or piece per line.

    A value may be a list or a generator of entries (``prepare`` streams them
    from disk). Streamed line by line through the C encoder: ``indent`` would
    force the pure-Python one (seconds for a large collection) and one big
    string would double the memory the manifest takes.
    """
    with atomic_open(Path(folder) / "manifest.json", "w", encoding="utf-8") as f:
        f.write("{")
        for n, (key, value) in enumerate(manifest.items()):
            f.write(f"{',' if n else ''}\n {json.dumps(key)}: ")
            if isinstance(value, (list, GeneratorType)):
                f.write("[")
                i = -1
                for i, item in enumerate(value):
                    f.write(f"{',' if i else ''}\n  {json.dumps(item)}")
                f.write("\n ]" if i >= 0 else "]")
            else:
                f.write(json.dumps(value))
        f.write("\n}\n")


# -- prepare: collections -> a dataset folder ----------------------------------------
#
# Each (file, part) unit is read in a worker process of our own, with a deadline
# and a memory cap, so a hang, a memory blow-up or a native crash costs one
# unit, never the run. Results are cached per unit in ``cache/`` keyed by the
# file's resolved path, size and mtime, so preparing an unchanged collection
# again reads nothing. The main process keeps its lists (files, unit results)
# in temporary files and only numbers in memory: a few dozen bytes a file.

READER = "melody.midi_io:read_melody"
PARTS = "melody.midi_io:parts"
# Reasons the pipeline adds to midi_io.REASONS.
TIMED_OUT, OUT_OF_MEMORY, CRASHED = "timed out", "out of memory", "crashed"
DUPLICATE, PITCH_RANGE, UNENCODABLE, READ_ERROR = (
    "duplicate", "pitch out of range", "unencodable", "read error")
MEMORY_LIMIT = 2 * 2**30  # bytes a worker may grow by beyond its start-up size
CACHE_VERSION = 2
CHECKPOINT_SECONDS = 60.0
OUR_FILES = ("manifest.json", "tokenizer.json", "cache") + tuple(
    f"{s}.{k}.npy" for s in SPLITS for k in ("tokens", "offsets"))


@dataclass
class PrepareConfig:
    """How a collection is read and split (the CLI flags of ``prepare``)."""

    jobs: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    timeout: float = 30.0
    memory_limit: int = MEMORY_LIMIT
    reader: str = READER  # "module:function"; tests name a stub here


_decode = json.JSONDecoder().decode  # json.loads less its checks: the lines are ours


class _Lines:
    """JSON values, a line each, in a nameless temporary file, read back in order
    or by number; in memory only each line's end (8 bytes), so a list of a
    million files costs 8 MB rather than a gigabyte of Python objects."""

    CHUNK = 2**16  # read at a time: its lines, as objects, take a few times as much

    def __init__(self, folder=None):
        self.file = tempfile.TemporaryFile(dir=folder)  # nameless: nothing to clean up
        self.ends = array("q", [0])

    def append(self, value) -> int:
        """Store ``value``; return its number."""
        line = json.dumps(value).encode() + b"\n"
        self.file.write(line)  # reads use os.pread, so the file stays at its end
        self.ends.append(self.ends[-1] + len(line))
        return len(self.ends) - 2

    def __len__(self) -> int:
        return len(self.ends) - 1

    def __getitem__(self, i: int):
        self.file.flush()
        return _decode(os.pread(self.file.fileno(), self.ends[i + 1] - self.ends[i],
                                self.ends[i]).decode())

    def __iter__(self):
        """The values in order (not those appended while iterating)."""
        self.file.flush()
        at, end, rest = 0, self.ends[-1], b""
        while at < end:
            chunk = os.pread(self.file.fileno(), min(self.CHUNK, end - at), at)
            if not chunk:
                raise OSError(f"temporary file cut short at byte {at} of {end}")
            at += len(chunk)
            *lines, rest = (rest + chunk).split(b"\n")
            yield from (_decode(line.decode()) for line in lines)

    def close(self) -> None:
        self.file.close()
        self.ends = array("q", [0])


class _Units:
    """This run's unit results, on disk rather than on the heap, so the main
    process does not grow with the collection: records as JSON lines, tokens
    as uint16 bytes (a record's ``tokens_at`` is ``[start, count]``)."""

    def __init__(self, folder: Path):
        self.records = _Lines(folder)
        self.tokens = tempfile.TemporaryFile(dir=folder)
        self.n_tokens = 0

    def add(self, record: dict, tokens) -> int:
        """Store one unit's results; return its slot."""
        if tokens is not None:
            record = dict(record, tokens_at=[self.n_tokens, len(tokens)])
            self.tokens.write(np.asarray(tokens, np.uint16).tobytes())
            self.n_tokens += len(tokens)
        return self.records.append(record)

    def record(self, slot: int) -> dict:
        return self.records[slot]

    def tokens_of(self, record: dict):
        """The record's tokens (None for a skipped unit)."""
        return self.read_tokens(*record["tokens_at"]) if "tokens_at" in record else None

    def read_tokens(self, start: int, n: int) -> np.ndarray:
        self.tokens.flush()
        return np.frombuffer(os.pread(self.tokens.fileno(), 2 * n, 2 * start), np.uint16)

    def close(self) -> None:
        self.records.close()
        self.tokens.close()


class _Files:
    """The collection's files as this run knows them, on disk but for two
    numbers a file and one a unit: ``lines`` holds each file's ``[path, name,
    real path, size, mtime_ns, parts]`` (size -1: it could not be looked at);
    file k's units are numbers ``first[k]`` to ``first[k + 1] - 1``, and
    ``slots[u]`` is unit u's slot in ``_Units`` (-1: not read yet)."""

    PATH, NAME, REAL, SIZE, MTIME, PARTS = range(6)

    def __init__(self, folder: Path):
        self.lines = _Lines(folder)
        self.first = array("q", [0])
        self.slots = array("q")

    def add(self, entry: list, slots) -> None:
        self.lines.append(entry)
        self.slots.extend(slots)
        self.first.append(len(self.slots))

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self):
        """Each file's entry and the range of its unit numbers."""
        for k, entry in enumerate(self.lines):
            yield entry, range(self.first[k], self.first[k + 1])

    def done(self, us: range) -> bool:
        """Whether the units numbered ``us`` are all read."""
        return all(self.slots[u] >= 0 for u in us)

    def unit_id(self, u: int) -> str:
        k = bisect.bisect_right(self.first, u) - 1
        entry = self.lines[k]
        return _unit_id(entry[self.NAME], entry[self.PARTS], u - self.first[k])

    def close(self) -> None:
        self.lines.close()


def _unit_id(name: str, parts: list, i: int) -> str:
    """A unit's id: the file's display name, and its tune for a many-tune file."""
    return name if parts[i] is None else f"{name}#{parts[i]}"


def prepare(sources, out, jobs=None, val_fraction=0.1, seed=0, timeout=30.0,
            progress=True, reader=READER) -> dict:
    """Read ``sources`` (files or folders; none: the built-in folk corpus) into the
    dataset folder ``out``; return the summary (the ``--json`` of ``prepare``).

    Raises UsageError for a missing source or a collection without music files.
    The workers start from a fresh interpreter (a forkserver), which imports
    the main script as multiprocessing's spawn does: a script that calls this
    must do so under ``if __name__ == "__main__":``.
    """
    if not sources:
        from melody import corpus

        try:
            sources = corpus.files()
        except FileNotFoundError as e:
            raise _usage_error(str(e))
    config = PrepareConfig(jobs, val_fraction, seed, timeout, reader=reader)
    return _Prepare([Path(s) for s in sources], Path(out), config, progress).run()


def _usage_error(message: str):
    from melody.cli import UsageError

    return UsageError(message)


def _run_error(message: str):
    from melody.cli import RunError

    return RunError(message)


class _Prepare:
    def __init__(self, sources, out, config, progress):
        self.sources, self.out, self.config, self.progress = sources, out, config, progress
        self.tokenizer = Tokenizer()
        self.parsed = self.cached = 0
        self.server_started = False

    def run(self) -> dict:
        start = time.monotonic()
        self._check_paths()
        made = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)  # the file list waits there, not in /tmp
        try:
            return self._build(start)
        except BaseException:
            if made:  # a run that failed leaves no empty folder (only work worth keeping)
                with contextlib.suppress(OSError):
                    self.out.rmdir()
            raise

    def _build(self, start: float) -> dict:
        with contextlib.ExitStack() as scratch:  # closing a nameless file deletes it
            found = discover(self.sources, exclude=self.out, folder=self.out)
            scratch.callback(found.files.close)
            if not len(found.files):
                raise _usage_error(
                    f"no music files in {', '.join(map(str, self.sources))} "
                    f"(looked for {' '.join(sorted(_music_extensions()))}; "
                    f"{found.ignored} other files ignored)")
            header = self._cache_header()
            sizes, mtimes, stat_errors, stamp = self._look(found, header)
            counts = self._up_to_date(stamp)
            if counts is not None:  # nothing changed since the last run made this dataset
                return dict(counts, dataset=str(self.out), parsed=0, cached=counts["pieces"],
                            seconds=round(time.monotonic() - start, 2),
                            unreadable_folders=found.errors)
            units, files = _Units(self.out), _Files(self.out)
            cache = _Cache(self.out / "cache", header)
            for closing in (units, files, cache):
                scratch.callback(closing.close)
            for i, (path, name, real) in enumerate(found.files):
                files.add(*self._plan(path, name, real, sizes[i], mtimes[i],
                                      stat_errors.get(i), cache, units))
            found.files.close()  # ``files`` has it all now
            del sizes, mtimes
            try:
                self._read_all(files, cache, units)
            finally:
                if self.parsed or cache.stale():
                    cache.save(files, units)
            counts = self._write(files, found, units, stamp)
        result = dict(counts, dataset=str(self.out), parsed=self.parsed,
                      cached=self.cached, seconds=round(time.monotonic() - start, 2))
        result["unreadable_folders"] = found.errors
        return result

    def _check_paths(self) -> None:
        for source in self.sources:
            if not os.path.lexists(source):
                raise _usage_error(f"source not found: {source}")
        if self.out.exists() and not self.out.is_dir():
            raise _usage_error(f"--out must be a folder, got the file {self.out}")
        if self.out.is_dir() and not is_dataset(self.out):
            strangers = [p.name for p in self.out.iterdir()
                         if p.name not in OUR_FILES and not p.name.endswith(".tmp")]
            if strangers:
                raise _usage_error(
                    f"--out must be a dataset folder or empty, got {self.out} "
                    f"holding {strangers[0]!r}")

    def _cache_header(self) -> dict:
        return {"version": CACHE_VERSION, "tokenizer": self.tokenizer.to_dict(),
                "reader": self.config.reader, "code": _code_digest(self.config.reader)}

    # -- the unchanged collection ---------------------------------------------------
    def _look(self, found: "Found", header: dict) -> tuple[array, array, dict, str | None]:
        """One ``os.stat`` per discovered file: sizes and modification times (-1
        where it failed), by file number what made it fail, and the stamp: a hash
        of everything the dataset is made from (settings, code, and each file's
        path, size and modification time; None when a file could not be looked at)."""
        h = hashlib.sha256(json.dumps(
            [header, [str(s) for s in self.sources], self.config.val_fraction, self.config.seed,
             self.config.timeout, found.ignored, found.errors]).encode())
        sizes, mtimes, errors = array("q"), array("q"), {}
        for i, (path, name, real) in enumerate(found.files):
            try:
                st = os.stat(path)
            except OSError as e:
                errors[i] = f"{type(e).__name__}: {e.strerror or e}"
                sizes.append(-1)
                mtimes.append(-1)
                continue
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
            h.update(f"{path}\0{name}\0{real}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
                "utf-8", "surrogateescape"))  # a name in no encoding still hashes
        return sizes, mtimes, errors, None if errors else h.hexdigest()

    @staticmethod
    def _dataset_files(folder: Path) -> dict:
        """Size, modification time and inode of each file of the dataset in ``folder``."""
        return {name: [st.st_size, st.st_mtime_ns, st.st_ino] for name in OUR_FILES if name != "cache"
                for st in [os.stat(folder / name)]}

    def _up_to_date(self, stamp: str | None) -> dict | None:
        """The counts of the dataset in ``out`` when the last run made it from
        exactly these inputs and settings and it is untouched since; else None."""
        try:
            last = json.loads((self.out / "cache" / "dataset.json").read_text())
            if stamp and last["stamp"] == stamp and last["files"] == self._dataset_files(self.out):
                return last["counts"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _remember(self, stamp: str | None, counts: dict, staging: Path) -> None:
        """Note what the dataset in ``staging`` is made from, so an unchanged rerun
        is instant (a rename keeps a file's size and time, so the note holds once
        the files move in, and not before). A crashed file is read again next time
        (the crash may have been the machine's), so such a dataset is never taken
        as up to date."""
        note = self.out / "cache" / "dataset.json"
        if stamp and not counts["skipped"].get(CRASHED):
            note.parent.mkdir(exist_ok=True)
            atomic_write_text(note, json.dumps(
                {"stamp": stamp, "files": self._dataset_files(staging), "counts": counts}) + "\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                note.unlink()

    # -- reading -----------------------------------------------------------------
    def _plan(self, path: str, name: str, real: str, size: int, mtime_ns: int,
              stat_error: str | None, cache: "_Cache", units: _Units) -> tuple[list, list]:
        """The file's entry for ``_Files`` and its units' slots: cached results,
        or -1 for each unit still to read."""
        if stat_error is not None:
            return [path, name, real, -1, -1, [None]], [
                units.add(_skipped("unreadable", stat_error), None)]
        restored = cache.restore(real, size, mtime_ns, self.config.timeout, units)
        if restored is None:
            parts = _list_parts(path)
            slots = [-1] * len(parts)
        else:
            parts, slots = restored
        self.cached += sum(slot >= 0 for slot in slots)
        if not self.server_started and -1 in slots:
            _start_forkserver()  # a file to read: its imports overlap the rest of the planning
            self.server_started = True
        return [path, name, real, size, mtime_ns, parts], slots

    def _read_all(self, files: _Files, cache: "_Cache", units: _Units) -> None:
        n_tasks = files.slots.count(-1)
        if not n_tasks:
            return
        from tqdm import tqdm

        bar = tqdm(total=n_tasks, unit="piece", desc="prepare", file=sys.stderr,
                   disable=None if self.progress else True, dynamic_ncols=True)
        last_save = time.monotonic()

        def done(u, record, tokens):
            nonlocal last_save
            files.slots[u] = units.add(record, tokens)
            self.parsed += 1
            bar.update()
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                cache.save(files, units)  # so an interrupted first run keeps its work
                last_save = time.monotonic()

        # A generator: a large collection's list of work is never built whole.
        work = ((u, entry[_Files.PATH], entry[_Files.PARTS][i]) for entry, us in files
                for i, u in enumerate(us) if files.slots[u] < 0)
        jobs = self.config.jobs or usable_cores()
        try:
            WorkerPool(min(jobs, n_tasks), self.config, self.tokenizer).run(work, done)
        finally:
            bar.close()

    # -- writing -----------------------------------------------------------------
    def _write(self, files: _Files, found: "Found", units: _Units, stamp: str | None) -> dict:
        choice = _choose(files, units, self.config.val_fraction, self.config.seed)
        manifest = self._manifest(files, units, choice, found)
        # Everything is written aside first, so a full disk or Ctrl-C leaves the
        # previous dataset as it was; then the manifest goes, the new files move
        # in, and the manifest comes back last: a folder counts as a dataset
        # (is_dataset) only when all of it is in place.
        staging = Path(tempfile.mkdtemp(prefix=".new-", suffix=".tmp", dir=self.out))
        try:
            self.tokenizer.save(staging / "tokenizer.json")
            for name in SPLITS:
                choice.write_split(staging, name, units)
            write_manifest(staging, manifest)
            self._remember(stamp, manifest["counts"], staging)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.out / "manifest.json")
            for path in sorted(staging.iterdir(), key=lambda p: p.name == "manifest.json"):
                os.replace(path, self.out / path.name)
        finally:
            remove_written(list(staging.iterdir()))
            with contextlib.suppress(OSError):  # never hide the error that got us here
                staging.rmdir()
        return manifest["counts"]

    def _manifest(self, files: _Files, units: _Units, choice: "_Choice", found: "Found") -> dict:
        """The manifest, its file and piece entries as generators read from ``units``."""
        lengths = {name: choice.lengths[choice.chosen(name)] for name in SPLITS}
        counts = {
            "files": len(files), "pieces": choice.n_units, "ok": len(choice.kept),
            "skipped": dict(sorted(choice.skipped.items())),
            "duplicates": choice.skipped.get(DUPLICATE, 0),
            "ignored": found.ignored, "notes": choice.notes,
            "tokens": int(choice.lengths.sum()),
            "train_pieces": len(lengths["train"]), "val_pieces": len(lengths["val"]),
            "train_tokens": int(lengths["train"].sum()), "val_tokens": int(lengths["val"].sum()),
        }
        return {
            "sources": [str(s) for s in self.sources],
            "counts": counts,
            "split": {"val_fraction": self.config.val_fraction, "seed": self.config.seed,
                      "rule": "validation = the pieces with the lowest sha256('SEED:ID')"},
            "tokenizer": dict(self.tokenizer.to_dict(), vocab_size=self.tokenizer.vocab_size),
            "unreadable_folders": found.errors,
            "files": (_file_entry(entry, mine)
                      for entry, mine in choice.units_by_file(files, units)),
            "pieces": (_piece_entry(u) for _, mine in choice.units_by_file(files, units)
                       for u in mine if u["status"] == "ok" or u.get("duplicate_of")),
        }


def _start_forkserver() -> None:
    """Workers come from a forkserver, a fresh interpreter started now, so they
    inherit neither a grown parent (a large collection's bookkeeping) nor any
    TensorFlow it loaded."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["melody.data", "melody.midi_io"])
    forkserver.ensure_running()


def _code_digest(reader: str) -> str:
    """Hash of the reading code, so results cached by older code are not reused."""
    h = hashlib.sha256()
    for name in (reader.partition(":")[0], "melody.midi_io", "melody.notes", "melody.tokenizer"):
        source = getattr(importlib.import_module(name), "__file__", None)
        if source:
            h.update(Path(source).read_bytes())
    return h.hexdigest()[:16]


def _list_parts(path: Path) -> list:
    """The file's units; a file whose parts cannot be listed is read as one unit."""
    parts = _resolve(PARTS)
    try:
        found = list(parts(path))
    except Exception:  # the worker reading it names the problem
        return [None]
    return found or [None]


def _skipped(reason: str, detail: str = "") -> dict:
    return {"status": "skipped", "reason": reason, "detail": detail, "notes": 0}


@dataclass
class _Choice:
    """Which units become pieces, and in which split, as arrays of numbers: a
    few dozen bytes a piece; the records stay in ``_Units``."""

    n_units: int
    kept: np.ndarray  # unit numbers (discovery order) of the kept pieces
    lengths: np.ndarray  # their token counts
    starts: np.ndarray  # where their tokens are in ``_Units``
    val: np.ndarray  # per kept piece: in the validation split
    duplicates: np.ndarray  # unit numbers of the later repeats of a melody, ascending
    originals: np.ndarray  # per repeat, the unit number of the melody's first unit
    skipped: Counter
    notes: int

    def chosen(self, name: str) -> np.ndarray:
        return self.val if name == "val" else ~self.val

    def write_split(self, folder: Path, name: str, units: _Units) -> None:
        """Write one split's arrays, the tokens streamed piece by piece from ``units``."""
        chosen = self.chosen(name)
        starts, lengths = self.starts[chosen], self.lengths[chosen]

        def pieces():
            for at in range(0, len(lengths), 4096):  # a chunk at a time: lists of ints are big
                for start, n in zip(starts[at:at + 4096].tolist(), lengths[at:at + 4096].tolist()):
                    yield units.read_tokens(start, n)

        _write_split(folder, name, np.concatenate([[0], np.cumsum(lengths)]), pieces())

    def units_by_file(self, files: _Files, units: _Units):
        """Per file, its entry and its units as dicts (record, id, file, part,
        split, duplicate)."""
        index = np.zeros(len(self.kept), np.int64)  # each kept piece's index in its split
        for chosen in (self.val, ~self.val):
            index[chosen] = np.arange(chosen.sum())
        p = d = 0  # the next kept piece and the next repeat: both in unit order
        for entry, us in files:
            mine = []
            parts = entry[_Files.PARTS]
            for i, u in enumerate(us):
                unit = dict(units.record(files.slots[u]), id=_unit_id(entry[_Files.NAME], parts, i),
                            file=entry[_Files.PATH], part=parts[i])
                if d < len(self.duplicates) and self.duplicates[d] == u:
                    original = files.unit_id(int(self.originals[d]))
                    unit.update(status="skipped", reason=DUPLICATE,
                                detail=f"same melody as {original}", duplicate_of=original)
                    d += 1
                elif p < len(self.kept) and self.kept[p] == u:
                    unit.update(split="val" if self.val[p] else "train", index=int(index[p]))
                    p += 1
                mine.append(unit)
            yield entry, mine


def _choose(files: _Files, units: _Units, val_fraction: float, seed: int) -> _Choice:
    """Dedupe (later repeats of a melody in any key are skipped) and split, one
    record read at a time into arrays of numbers (44 bytes a piece); the first
    unit of each melody is found by sorting the melody signatures."""
    ok, starts, keys, high = array("q"), array("q"), array("Q"), array("Q")
    lengths, notes, low = array("i"), array("i"), array("I")
    skipped = Counter()
    for entry, us in files:
        for i, u in enumerate(us):
            record = units.record(files.slots[u])
            if record["status"] != "ok":
                skipped[record["reason"]] += 1
                continue
            ok.append(u)
            start, n = record["tokens_at"]
            starts.append(start)
            lengths.append(n)
            notes.append(record["notes"])
            signature = record["signature"]  # 24 hex digits
            high.append(int(signature[:16], 16))
            low.append(int(signature[16:24] or "0", 16))
            keys.append(_split_key(seed, _unit_id(entry[_Files.NAME], entry[_Files.PARTS], i)))
    high_v, low_v = np.frombuffer(high, np.uint64), np.frombuffer(low, np.uint32)
    order = np.lexsort((low_v, high_v))  # stable: a melody's units stay in unit order
    sorted_high, sorted_low = high_v[order], low_v[order]
    same = sorted_high[1:] == sorted_high[:-1]
    same &= sorted_low[1:] == sorted_low[:-1]
    del sorted_high, sorted_low
    repeats, originals = array("q"), array("q")  # as indices into ``ok``
    last = -2
    for at in (np.flatnonzero(same) + 1).tolist():  # repeats are few: a loop will do
        if at != last + 1:
            original = int(order[at - 1])
        repeats.append(int(order[at]))
        originals.append(original)
        last = at
    del order, same
    by_unit = np.argsort(np.frombuffer(repeats, np.int64), kind="stable")
    keep = np.ones(len(ok), bool)
    keep[np.frombuffer(repeats, np.int64)] = False
    if repeats:
        skipped[DUPLICATE] += len(repeats)
    ok_v = np.frombuffer(ok, np.int64)
    return _Choice(
        n_units=len(files.slots), kept=ok_v[keep],
        lengths=np.frombuffer(lengths, np.int32)[keep].astype(np.int64),
        starts=np.frombuffer(starts, np.int64)[keep],
        val=_validation(np.frombuffer(keys, np.uint64)[keep], val_fraction),
        duplicates=ok_v[np.frombuffer(repeats, np.int64)[by_unit]],
        originals=ok_v[np.frombuffer(originals, np.int64)[by_unit]],
        skipped=skipped, notes=int(np.frombuffer(notes, np.int32)[keep].sum(dtype=np.int64)))


def _split_key(seed: int, piece_id: str) -> int:
    key = f"{seed}:{piece_id}".encode("utf-8", "surrogateescape")  # a file name in no encoding too
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def _validation(keys, val_fraction: float) -> np.ndarray:
    """Per piece, whether it is a validation piece: the ones with the lowest keys."""
    n = len(keys)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    val = np.zeros(n, bool)
    val[np.argsort(np.array(keys, np.uint64), kind="stable")[:n_val]] = True
    return val


def split_pieces(ids: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Piece id -> "train" or "val": validation takes the ids with the lowest seeded hash.

    At least one validation piece once there are two pieces and a fraction
    above 0; adding pieces to a collection moves none of the others.
    """
    val = _validation([_split_key(seed, i) for i in ids], val_fraction)
    return {i: "val" if v else "train" for i, v in zip(ids, val)}


_UNIT_KEYS = ("status", "reason", "detail", "notes", "track", "duplicate_of")
_PIECE_KEYS = ("id", "file", "part", "split", "index", "notes", "tokens", "tempo",
               "time_signature", "key", "program", "status", "reason", "duplicate_of")


def _unit_entry(u: dict) -> dict:
    return {k: u[k] for k in _UNIT_KEYS if u.get(k) not in (None, "")}


def _file_entry(entry: list, mine: list) -> dict:
    path = entry[_Files.PATH]
    if entry[_Files.PARTS] == [None]:
        return dict({"path": path}, **_unit_entry(mine[0]))
    ok = [u for u in mine if u["status"] == "ok"]
    summary = {"path": path, "status": "ok" if ok else "skipped",
               "notes": sum(u["notes"] for u in ok)}
    if not ok:
        summary["reason"] = Counter(u["reason"] for u in mine).most_common(1)[0][0]
        summary["detail"] = f"none of its {len(mine)} tunes was kept"
    summary["pieces"] = [dict({"id": u["id"], "part": u["part"]}, **_unit_entry(u)) for u in mine]
    return summary


def _piece_entry(u: dict) -> dict:
    u = dict(u, tokens=u["tokens_at"][1])
    if u["status"] == "ok":
        u = {k: v for k, v in u.items() if k not in ("status", "reason")}
    return {k: u[k] for k in _PIECE_KEYS if k in u}


# -- discovery ---------------------------------------------------------------------------


@dataclass
class Found:
    files: _Lines  # [path, unique display name, resolved path] each
    ignored: int = 0
    errors: list = field(default_factory=list)  # folders that could not be listed


def _music_extensions() -> frozenset:
    from melody.midi_io import MUSIC_EXTENSIONS

    return frozenset(MUSIC_EXTENSIONS)


def discover(sources, exclude=None, folder=None) -> Found:
    """Music files under ``sources`` (files or folders, recursively, any letter case).

    Each real folder and file is visited once, so symlink loops end; folders
    that cannot be listed are reported, not fatal; ``exclude`` (the dataset
    folder) is never searched. A file's display name is its path from its
    source's name; a source named like an earlier one is named by its full
    resolved path, so names stay unique. The list is kept in a temporary file
    in ``folder`` (``Found.files``; the caller closes it).
    """
    walk = _Walk(_music_extensions(), folder)
    if exclude is not None:
        walk.folders.add(os.path.realpath(exclude))
    names = set()
    for source in sources:
        source = os.fspath(source)
        name, real = os.path.basename(os.path.abspath(source)), os.path.realpath(source)
        if name in names:
            name = real  # two sources of the same name
        names.add(name)
        if os.path.isdir(source):
            walk.folder(source, name, real)
        else:
            walk.file(source, name, real, linked=True)
    return walk.found


class _Walk:
    """Visits each real folder once, and each real file once, the first time it
    is reached, holding nothing per file: a folder's own entries are new unless
    a link or a source reached them first (``linked``: the few files reached
    that way), and a linked file was reached before when its folder was listed."""

    def __init__(self, extensions, folder=None):
        self.extensions, self.found = extensions, Found(_Lines(folder))
        self.folders, self.linked = set(), set()  # real paths

    def file(self, path: str, name: str, real: str, linked: bool = False) -> None:
        if real in self.linked:
            return
        if linked:
            if os.path.dirname(real) in self.folders and os.path.exists(real):
                return
            self.linked.add(real)
        if os.path.splitext(path)[1].lower() not in self.extensions:
            self.found.ignored += 1
            return
        self.found.files.append([path, name, real])

    def folder(self, top: str, top_name: str, top_real: str) -> None:
        stack = [(top, top_name, top_real)]
        while stack:
            folder, name, real = stack.pop()
            if real in self.folders:
                continue
            self.folders.add(real)
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self.found.errors.append({"path": folder, "detail": e.strerror or str(e)})
                continue
            subfolders = []
            for entry in entries:
                path, inner = os.path.join(folder, entry.name), f"{name}/{entry.name}"
                # Only a link can lead elsewhere; other entries live in this real folder.
                link = entry.is_symlink()
                entry_real = os.path.realpath(path) if link else os.path.join(real, entry.name)
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append((path, inner, entry_real))
                else:
                    self.file(path, inner, entry_real, linked=link)
            stack.extend(reversed(subfolders))  # popped in name order


# -- the unit cache -----------------------------------------------------------------------


class _Cache:
    """Unit results of earlier runs: ``index.jsonl`` plus one ``tokens-NAME.u16``.

    The index's first line is the header and the name of its token file; then
    one line per input file, ``JSON(real path) TAB JSON([size, mtime_ns, parts,
    records])``. In memory only a sorted array of path hashes and line offsets
    is kept, so a large cache costs 16 bytes a file until a line is needed.
    The index is replaced after its token file, so the pair is always
    consistent; any mismatch means an empty cache.
    """

    def __init__(self, folder: Path, header: dict):
        self.folder, self.header = folder, header
        self.restored = 0
        self._empty()
        try:
            self._load()
        except (OSError, ValueError, KeyError, TypeError):
            self.close()
            self._empty()

    def _empty(self) -> None:
        self.index, self.tokens = None, np.zeros(0, np.uint16)
        self.keys, self.offsets = np.zeros(0, np.int64), np.zeros(0, np.int64)

    def _load(self) -> None:
        self.index = open(self.folder / "index.jsonl", "rb")
        first = json.loads(self.index.readline())
        if first.get("header") != self.header:
            raise ValueError("cache of other settings or code")
        if os.path.getsize(self.folder / first["tokens"]):
            self.tokens = np.memmap(self.folder / first["tokens"], np.uint16, "r")
        keys, offsets, at = array("q"), array("q"), self.index.tell()
        for line in iter(self.index.readline, b""):
            keys.append(hash(line[:line.index(b"\t")]))
            offsets.append(at)
            at += len(line)
        order = np.argsort(np.array(keys, np.int64), kind="stable")
        self.keys, self.offsets = np.array(keys, np.int64)[order], np.array(offsets, np.int64)[order]

    def _entry(self, real: str):
        """The cached ``[size, mtime_ns, parts, records]`` of a file, or None."""
        wanted = json.dumps(real).encode()  # hashed as written, so loading parses no JSON
        at = int(np.searchsorted(self.keys, hash(wanted)))
        if at == len(self.keys) or self.keys[at] != hash(wanted):
            return None
        self.index.seek(int(self.offsets[at]))
        key, _, entry = self.index.readline().partition(b"\t")
        return json.loads(entry) if key == wanted else None  # a hash collision: read again

    def restore(self, real: str, size: int, mtime_ns: int, timeout: float,
                units: _Units) -> tuple[list, list] | None:
        """The parts of the file and the slots of its units' results, put in
        ``units``, when the file is unchanged (else None); units that crashed, or
        timed out under a shorter limit than ``timeout``, get -1: read them again."""
        entry = self._entry(real)
        if not entry or tuple(entry[:2]) != (size, mtime_ns):
            return None
        self.restored += 1
        slots = []
        for record in entry[3]:
            start, n = record.pop("tokens_at", (0, -1))
            if record["reason"] == CRASHED or (
                    record["reason"] == TIMED_OUT and record.get("timeout", 0) < timeout):
                slots.append(-1)  # a crash may have been the machine's, not the file's
                continue
            slots.append(units.add(record, self.tokens[start:start + n] if n >= 0 else None))
        return entry[2], slots

    def stale(self) -> bool:
        """Whether the cache holds other files than the ones restored from it
        (nothing new was read, so they are all the files it should hold)."""
        return self.restored != len(self.keys)

    def save(self, files: _Files, units: _Units) -> None:
        """Write the results of every finished file, streaming them from ``units``."""
        name = f"tokens-{os.urandom(8).hex()}.u16"
        self.folder.mkdir(parents=True, exist_ok=True)
        at = 0
        with atomic_open(self.folder / "index.jsonl") as index:
            with atomic_open(self.folder / name) as tokens:
                index.write(json.dumps({"header": self.header, "tokens": name}).encode() + b"\n")
                for entry, us in files:
                    if entry[_Files.SIZE] < 0 or not files.done(us):
                        continue
                    records = []
                    for u in us:
                        record = units.record(files.slots[u])
                        piece = units.tokens_of(record)
                        if piece is not None:
                            record["tokens_at"] = [at, len(piece)]
                            tokens.write(piece.tobytes())
                            at += len(piece)
                        records.append(record)
                    index.write(json.dumps(entry[_Files.REAL]).encode() + b"\t" + json.dumps(
                        [entry[_Files.SIZE], entry[_Files.MTIME], entry[_Files.PARTS],
                         records]).encode() + b"\n")
        for old in (*self.folder.glob("tokens-*"), self.folder / "index.json"):  # index.json: v1
            if old.name != name:
                with contextlib.suppress(OSError):
                    old.unlink()

    def close(self) -> None:
        if self.index is not None:
            self.index.close()


# -- worker processes -----------------------------------------------------------------------


class _Worker:
    """One worker process, its pipe, and the units sent to it, oldest first."""

    def __init__(self, process, conn):
        self.process, self.conn = process, conn
        self.started = False  # it said it is ready (its reader imported)
        self.sent: deque = deque()
        self.since = 0.0  # when the oldest sent unit began (the previous one came back)
        self.unit_seconds = 0.0  # how long its units take, a moving average (0: not known)

    def took(self, seconds: float) -> None:
        """A unit came back, read in ``seconds`` (the worker's own clock)."""
        self.unit_seconds = seconds if not self.unit_seconds else (
            0.8 * self.unit_seconds + 0.2 * seconds)

    def wants_more(self, gap: float, most: int) -> bool:
        """Whether to send it another unit: it keeps the one it reads and enough
        for twice ``gap`` after it (at most ``most``), as long as they fit in
        half a pipe, so that the parent never blocks writing to a worker that
        is itself blocked writing results to the parent."""
        depth = 2 if not self.unit_seconds else min(
            most, 2 + int(2 * gap / max(self.unit_seconds, 1e-5)))
        return len(self.sent) < depth and sum(
            4 * len(item[1]) + 100 for item in self.sent) < 32768  # bytes, UTF-8 at its widest

    def lasts(self) -> float:
        """Seconds its units in hand surely keep it busy (half the estimate)."""
        return (len(self.sent) - 1) * self.unit_seconds / 2

    def send(self, item) -> None:
        if not self.sent:
            self.since = time.monotonic()
        self.conn.send((item[1], item[2]))
        self.sent.append(item)

    def death(self) -> str:
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"worker killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"worker killed by signal {-code}"
        return f"worker exited with code {code}"

    def stop(self, gently: bool = False) -> None:
        if gently:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class _Pending:
    """Units still to send: first those a retired worker gave back, then the
    rest of ``work``, drawn only as needed."""

    def __init__(self, work):
        self.back, self.rest = deque(), iter(work)

    def peek(self):
        if not self.back:
            self.back.extend(itertools.islice(self.rest, 1))
        return self.back[0] if self.back else None

    def __bool__(self) -> bool:
        return self.peek() is not None

    def popleft(self):
        return self.back.popleft()

    def extendleft(self, items) -> None:
        self.back.extendleft(items)


class WorkerPool:
    """``jobs`` worker processes reading units, each unit under its own deadline.

    The parent wakes at most once every ``GAP`` seconds and takes every result
    that came meanwhile: on a busy machine each wake-up costs more than the
    bookkeeping of a unit. So that no worker waits for it, each holds enough
    units to last the gap (from how long its units take); it reads them in
    order, so the oldest one's clock starts when the one before it came back.
    A unit past its deadline has its worker killed ("timed out"); a worker that
    dies mid-unit makes it "crashed"; the units queued behind it go to another
    worker, and a fresh worker takes its place.
    A worker first says it is ready; workers that cannot get that far are no
    fault of any file, and stop the run with the reason (``RunError``).

    Workers come from a forkserver (see ``_start_forkserver``): a fresh
    interpreter, so neither the parent's memory nor its TensorFlow is passed on.
    """

    GAP = 0.005
    MAX_DEPTH = 64
    START_TRIES = 3  # workers in a row dying before they are ready: give up

    def __init__(self, jobs: int, config: PrepareConfig, tokenizer: Tokenizer):
        import multiprocessing

        self.jobs, self.config = max(1, jobs), config
        self.tokenizer_config = tokenizer.to_dict()
        self.failed_starts = 0
        _start_forkserver()
        self.ctx = multiprocessing.get_context("forkserver")

    def run(self, work, done) -> None:
        """Read every ``(task, path, part)`` of the iterable ``work``; call
        ``done(task, record, tokens)`` for each."""
        from multiprocessing.connection import wait

        pending, workers, woke = _Pending(work), [], 0.0
        try:
            while pending or any(w.sent for w in workers):
                self._dispatch(pending, workers)
                busy = [w for w in workers if w.sent]
                if not busy:  # every worker died while idle: start others
                    continue
                # Sleep out the gap, if the units each worker holds last that long.
                rest = min([woke + self.GAP - time.monotonic()] + [w.lasts() for w in busy])
                if rest > 0:
                    time.sleep(rest)
                nearest = min(w.since for w in busy) + self.config.timeout
                ready = wait([w.conn for w in busy], timeout=max(0.0, nearest - time.monotonic()))
                woke = time.monotonic()
                for w in busy:
                    if w.conn in ready:
                        self._collect(w, pending, workers, done)
                    elif time.monotonic() >= w.since + self.config.timeout:
                        self._time_out(w, pending, workers, done)
        finally:
            for w in workers:
                w.stop(gently=not w.sent)

    def _dispatch(self, pending: "_Pending", workers: list) -> None:
        while pending and len(workers) < self.jobs:
            workers.append(self._start())
        for w in list(workers):
            while pending and w.wants_more(self.GAP, self.MAX_DEPTH):
                try:
                    w.send(pending.peek())
                except OSError:
                    # It died. With units in hand, the results it sent before dying
                    # and its end-of-file are still to be read: _collect says which
                    # unit killed it.
                    if not w.sent:
                        self._lost(w, pending, workers, None)
                    break
                pending.popleft()

    def _collect(self, w: _Worker, pending: "_Pending", workers: list, done) -> None:
        """Take every result ``w`` has sent."""
        n = 0
        while w.sent and (n == 0 or select.select([w.conn], [], [], 0)[0]):  # (conn.poll is slower)
            try:
                message = w.conn.recv()
            except (EOFError, OSError):
                self._lost(w, pending, workers, done)
                return
            if not w.started:  # its first message: ready, or why it cannot be
                if message is not None:
                    raise _run_error(f"worker processes cannot start: {message}")
                w.started, self.failed_starts = True, 0
                n += 1
                continue
            record, tokens, seconds = message
            done(w.sent.popleft()[0], record, tokens)
            w.took(seconds)
            n += 1
            if record["reason"] == OUT_OF_MEMORY:  # its heap may be past saving
                self._retire(w, pending, workers, None, None)
                return
        w.since = time.monotonic()

    def _lost(self, w: _Worker, pending: "_Pending", workers: list, done) -> None:
        """``w`` died: the unit it was reading (its oldest) "crashed"."""
        if w.started:
            self._retire(w, pending, workers, done, _skipped(CRASHED, w.death()))
        else:
            self._failed_start(w, pending, workers, w.death())

    def _time_out(self, w: _Worker, pending: "_Pending", workers: list, done) -> None:
        limit = f"{self.config.timeout:g} s"
        if w.started:
            record = _skipped(TIMED_OUT, f"reading took over {limit}")
            self._retire(w, pending, workers, done, dict(record, timeout=self.config.timeout))
        else:
            self._failed_start(w, pending, workers, f"not ready within {limit}")

    def _failed_start(self, w: _Worker, pending: "_Pending", workers: list, why: str) -> None:
        """``w`` never got ready: no unit's fault, so its units go to the next worker;
        ``START_TRIES`` such workers in a row stop the run."""
        self._retire(w, pending, workers, None, None)
        self.failed_starts += 1
        if self.failed_starts >= self.START_TRIES:
            raise _run_error(f"worker processes cannot start: {why}")

    @staticmethod
    def _retire(w: _Worker, pending: "_Pending", workers: list, done, record) -> None:
        """Stop ``w``; its oldest unit gets ``record`` (if any), the rest are read again."""
        w.stop()
        workers.remove(w)
        if record is not None and w.sent:
            done(w.sent.popleft()[0], record, None)
        pending.extendleft(reversed(w.sent))
        w.sent.clear()

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_worker_main, daemon=True,
            args=(child, self.config.reader, self.tokenizer_config, self.config.memory_limit))
        process.start()
        child.close()  # so the worker's death reads as end-of-file here
        return _Worker(process, parent)


def _worker_main(conn, reader_spec: str, tokenizer_config: dict, memory_limit: int) -> None:
    """Read units sent over ``conn`` until told to stop (None) or the pipe closes."""
    import faulthandler

    faulthandler.disable()  # a forked worker's crash is reported by the parent, not dumped
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _limit_memory(memory_limit)
    _mute_output()
    try:
        from melody.midi_io import SkipFile

        reader = _resolve(reader_spec)
        tokenizer = Tokenizer(TokenizerConfig.from_dict(tokenizer_config))
    except Exception as e:  # the same in every worker: the parent stops the run
        conn.send(f"{type(e).__name__}: {e}")
        return
    conn.send(None)  # ready
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        start = time.monotonic()
        record, tokens = read_unit(reader, tokenizer, SkipFile, *item)
        conn.send((record, tokens, time.monotonic() - start))
        if record["reason"] == OUT_OF_MEMORY:
            return


def read_unit(reader, tokenizer: Tokenizer, skip_type, path: str, part) -> tuple[dict, object]:
    """One unit's record (status, reason, notes, metadata, signature) and tokens."""
    try:
        melody = reader(path, part)
    except MemoryError:
        return _skipped(OUT_OF_MEMORY, "the worker's memory cap was reached"), None
    except skip_type as e:
        return _skipped(e.reason, e.detail), None
    except OSError as e:
        return _skipped("unreadable", f"{type(e).__name__}: {e}"), None
    except Exception as e:  # a reader bug must cost one file, and say what it was
        return _skipped(READ_ERROR, f"{type(e).__name__}: {e}"), None
    track = {"name": melody.track_name, "index": int(melody.track_index)}
    if melody.n_notes == 0:
        return dict(_skipped("no notes", "the melody has no notes"), track=track), None
    try:
        tokens = tokenizer.encode(melody)
    except ValueError as e:
        reason = PITCH_RANGE if str(e).startswith("pitch") else UNENCODABLE
        return dict(_skipped(reason, str(e)), track=track), None
    ts = melody.time_signature
    record = {
        "status": "ok", "reason": None, "detail": "", "notes": melody.n_notes, "track": track,
        "tempo": round(float(melody.tempo), 3),
        "time_signature": f"{ts[0]}/{ts[1]}" if ts else None,
        "key": melody.key.name if melody.key else None,
        "program": int(melody.program),
        "signature": melody_signature(melody),
    }
    return record, tokens.astype(np.uint16)


def melody_signature(melody: Melody) -> str:
    """Hash of the notes in any key: pitches from the first pitch, onsets from the first onset."""
    pitches = melody.pitches.astype(np.int64)
    onsets = melody.onsets.astype(np.int64)
    h = hashlib.sha256()
    for array in (pitches - pitches[0], onsets - onsets[0], melody.durations.astype(np.int64)):
        h.update(array.tobytes())
        h.update(b"|")
    return h.hexdigest()[:24]


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _limit_memory(extra: int) -> None:
    """Cap the worker's address space at its start-up size plus ``extra`` bytes."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))
    except (OSError, ValueError, ImportError):
        pass  # not Linux: no cap, the deadline still holds


def _mute_output() -> None:
    """music21 and friends print warnings that would tear the progress bar."""
    import warnings

    warnings.simplefilter("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


# -- the command -------------------------------------------------------------------------------


def default_out(sources) -> Path:
    """datasets/NAME of the first source (its file name without the suffix for a file)."""
    first = Path(os.path.abspath(sources[0]))
    name = first.stem if first.is_file() else first.name
    return Path("datasets") / (name or "dataset")


def run_prepare(args):
    """``melody prepare``: the built-in folk corpus, or the given sources."""
    from melody import corpus

    sources = list(args.sources)
    if args.out:
        out = Path(args.out)
    else:
        out = default_out(sources) if sources else corpus.DATASET
    result = prepare(sources, out, args.jobs, args.val_fraction, args.seed, args.timeout,
                     progress=True)
    return result, summary_text(result)


def summary_text(r: dict) -> str:
    skipped = sum(r["skipped"].values())
    reasons = ", ".join(f"{n:,} {reason}" for reason, n in
                        sorted(r["skipped"].items(), key=lambda kv: -kv[1]))
    lines = [
        f"prepared {r['dataset']}: {r['files']:,} files, {r['pieces']:,} pieces "
        f"({r['parsed']:,} read, {r['cached']:,} from cache) in {r['seconds']:.1f} s",
        f"  ok {r['ok']:,}, skipped {skipped:,}" + (f" ({reasons})" if reasons else ""),
        f"  {r['notes']:,} notes, {r['tokens']:,} tokens; "
        f"{r['train_pieces']:,} train / {r['val_pieces']:,} val pieces",
    ]
    if r["ignored"]:
        lines.append(f"  {r['ignored']:,} other file{'s' if r['ignored'] > 1 else ''} ignored "
                     "(not music by their suffix)")
    for folder in r["unreadable_folders"]:
        lines.append(f"  could not list {folder['path']}: {folder['detail']}")
    return "\n".join(lines)
