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
- ``cache/``: what ``prepare`` read from each file (``index.json`` plus one
  ``tokens-HASH.npy``), reused while a file's size and mtime are unchanged.

A "piece" is one unit read: a file, or one tune of a many-tune ABC file. A
skipped piece's reason is one of ``midi_io.REASONS`` or "timed out", "out of
memory", "crashed", "duplicate", "pitch out of range", "unencodable", "read
error". ``manifest.json`` is written last, so a folder is a dataset
(``is_dataset``) only once all of it is in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melody.fileio import atomic_open, atomic_write_text, remove_written
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


@dataclass
class Dataset:
    folder: Path
    manifest: dict
    tokenizer: Tokenizer

    def split(self, name: str) -> TokenData:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        tokens = np.load(self.folder / f"{name}.tokens.npy", mmap_mode="r")
        offsets = np.load(self.folder / f"{name}.offsets.npy")
        return TokenData(tokens, offsets)

    @property
    def digest(self) -> str:
        """Short hash of the manifest: which data a model was trained on."""
        return hashlib.sha256((self.folder / "manifest.json").read_bytes()).hexdigest()[:16]


def is_dataset(folder) -> bool:
    return (Path(folder) / "manifest.json").is_file()


def load_dataset(folder) -> Dataset:
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    return Dataset(folder, manifest, Tokenizer.load(folder / "tokenizer.json"))


def write_split(folder, name: str, data: TokenData) -> None:
    """Write one split's arrays atomically."""
    for suffix, array in (("tokens", data.tokens), ("offsets", data.offsets)):
        with atomic_open(Path(folder) / f"{name}.{suffix}.npy") as f:
            np.save(f, np.asarray(array))


def write_manifest(folder, manifest: dict) -> None:
    """Write ``manifest.json`` atomically, one top-level key, file or piece per line.

    Streamed line by line through the C encoder: ``indent`` would force the
    pure-Python one (seconds for a large collection) and one big string
    would double the memory the manifest takes.
    """
    with atomic_open(Path(folder) / "manifest.json", "w", encoding="utf-8") as f:
        f.write("{")
        for n, (key, value) in enumerate(manifest.items()):
            f.write(f"{',' if n else ''}\n {json.dumps(key)}: ")
            if isinstance(value, list) and value:
                f.write("[")
                for i, item in enumerate(value):
                    f.write(f"{',' if i else ''}\n  {json.dumps(item)}")
                f.write("\n ]")
            else:
                f.write(json.dumps(value))
        f.write("\n}\n")


# -- prepare: collections -> a dataset folder ----------------------------------------
#
# Each (file, part) unit is read in a worker process of our own, with a deadline
# and a memory cap, so a hang, a memory blow-up or a native crash costs one
# unit, never the run. Results are cached per unit in ``cache/`` (JSON + npy)
# keyed by the file's resolved path, size and mtime, so preparing an unchanged
# collection again reads nothing.

READER = "melody.midi_io:read_melody"
PARTS = "melody.midi_io:parts"
# Reasons the pipeline adds to midi_io.REASONS.
TIMED_OUT, OUT_OF_MEMORY, CRASHED = "timed out", "out of memory", "crashed"
DUPLICATE, PITCH_RANGE, UNENCODABLE, READ_ERROR = (
    "duplicate", "pitch out of range", "unencodable", "read error")
MEMORY_LIMIT = 2 * 2**30  # bytes a worker may grow by beyond its start-up size
CACHE_VERSION = 1
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


@dataclass(slots=True)
class SourceFile:
    """One input music file and the results of its units (None: not read yet)."""

    path: str
    name: str  # short display name, unique in the run
    real: str
    size: int = -1
    mtime_ns: int = -1
    parts: list = field(default_factory=lambda: [None])
    records: list = field(default_factory=list)
    tokens: list = field(default_factory=list)

    def unit_id(self, i: int) -> str:
        part = self.parts[i]
        return self.name if part is None else f"{self.name}#{part}"

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.records)


def prepare(sources, out, jobs=None, val_fraction=0.1, seed=0, timeout=30.0,
            progress=True, reader=READER) -> dict:
    """Read ``sources`` (files or folders; none: the built-in folk corpus) into the
    dataset folder ``out``; return the summary (the ``--json`` of ``prepare``).

    Raises UsageError for a missing source or a collection without music files.
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


class _Prepare:
    def __init__(self, sources, out, config, progress):
        self.sources, self.out, self.config, self.progress = sources, out, config, progress
        self.tokenizer = Tokenizer()
        self.parsed = self.cached = 0

    def run(self) -> dict:
        start = time.monotonic()
        self._check_paths()
        found = discover(self.sources, exclude=self.out)
        if not found.files:
            raise _usage_error(
                f"no music files in {', '.join(map(str, self.sources))} "
                f"(looked for {' '.join(sorted(_music_extensions()))}; "
                f"{found.ignored} other files ignored)")
        cache = _Cache(self.out / "cache", self._cache_header())
        files = [self._plan(path, name, real, cache) for path, name, real in found.files]
        try:
            self._read_all(files, cache)
        finally:
            if self.parsed or cache.stale(files):
                cache.save(files)
        manifest = self._write(files, found)
        result = dict(manifest["counts"], dataset=str(self.out), parsed=self.parsed,
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

    # -- reading -----------------------------------------------------------------
    def _plan(self, path: str, name: str, real: str, cache: "_Cache") -> SourceFile:
        """The file with its cached unit results, or with its units still to read."""
        f = SourceFile(path, name, real)
        try:
            st = os.stat(path)
        except OSError as e:
            f.records = [_skipped("unreadable", f"{type(e).__name__}: {e.strerror or e}")]
            f.tokens = [None]
            return f
        f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        if cache.restore(f, self.config.timeout):
            self.cached += sum(r is not None for r in f.records)
            return f
        f.parts = _list_parts(path)
        f.records, f.tokens = [None] * len(f.parts), [None] * len(f.parts)
        return f

    def _read_all(self, files: list, cache: "_Cache") -> None:
        tasks = [(k, i) for k, f in enumerate(files) for i, r in enumerate(f.records) if r is None]
        if not tasks:
            return
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="piece", desc="prepare", file=sys.stderr,
                   disable=None if self.progress else True, dynamic_ncols=True)
        last_save = time.monotonic()

        def done(task, record, tokens):
            nonlocal last_save
            k, i = task
            files[k].records[i], files[k].tokens[i] = record, tokens
            self.parsed += 1
            bar.update()
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                cache.save(files)  # so an interrupted first run keeps its work
                last_save = time.monotonic()

        work = [(task, str(files[task[0]].path), files[task[0]].parts[task[1]]) for task in tasks]
        jobs = self.config.jobs or len(os.sched_getaffinity(0))
        try:
            WorkerPool(min(jobs, len(work)), self.config, self.tokenizer).run(work, done)
        finally:
            bar.close()

    # -- writing -----------------------------------------------------------------
    def _write(self, files: list, found: "Found") -> dict:
        units = _dedupe(files)
        kept = [u for u in units if u["status"] == "ok"]
        split = split_pieces([u["id"] for u in kept], self.config.val_fraction, self.config.seed)
        data = {}
        for name in SPLITS:
            chosen = [u for u in kept if split[u["id"]] == name]
            for index, u in enumerate(chosen):
                u["split"], u["index"] = name, index
            data[name] = TokenData.from_pieces([u["tokens_array"] for u in chosen])
        manifest = self._manifest(files, units, found, data)
        self.out.mkdir(parents=True, exist_ok=True)
        # Everything is written aside first, so a full disk or Ctrl-C leaves the
        # previous dataset as it was; then the manifest goes, the new files move
        # in, and the manifest comes back last: a folder counts as a dataset
        # (is_dataset) only when all of it is in place.
        staging = Path(tempfile.mkdtemp(prefix=".new-", suffix=".tmp", dir=self.out))
        try:
            self.tokenizer.save(staging / "tokenizer.json")
            for name in SPLITS:
                write_split(staging, name, data[name])
            write_manifest(staging, manifest)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.out / "manifest.json")
            for path in sorted(staging.iterdir(), key=lambda p: p.name == "manifest.json"):
                os.replace(path, self.out / path.name)
        finally:
            remove_written(list(staging.iterdir()))
            with contextlib.suppress(OSError):  # never hide the error that got us here
                staging.rmdir()
        return manifest

    def _manifest(self, files, units, found, data) -> dict:
        skipped = Counter(u["reason"] for u in units if u["status"] == "skipped")
        kept = [u for u in units if u["status"] == "ok"]
        counts = {
            "files": len(files), "pieces": len(units), "ok": len(kept),
            "skipped": dict(sorted(skipped.items())), "duplicates": skipped.get(DUPLICATE, 0),
            "ignored": found.ignored, "notes": sum(u["notes"] for u in kept),
            "tokens": sum(len(u["tokens_array"]) for u in kept),
            "train_pieces": len(data["train"]), "val_pieces": len(data["val"]),
            "train_tokens": int(data["train"].offsets[-1]), "val_tokens": int(data["val"].offsets[-1]),
        }
        return {
            "sources": [str(s) for s in self.sources],
            "counts": counts,
            "split": {"val_fraction": self.config.val_fraction, "seed": self.config.seed,
                      "rule": "validation = the pieces with the lowest sha256('SEED:ID')"},
            "tokenizer": dict(self.tokenizer.to_dict(), vocab_size=self.tokenizer.vocab_size),
            "unreadable_folders": found.errors,
            "files": _file_entries(files, units),
            "pieces": [_piece_entry(u) for u in units if u["status"] == "ok" or u.get("duplicate_of")],
        }


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


def _dedupe(files: list) -> list[dict]:
    """Every unit as a dict, in discovery order; later repeats of a melody in any
    key become skipped."""
    units = []
    for f in files:
        for i, record in enumerate(f.records):
            units.append(dict(record, id=f.unit_id(i), file=str(f.path), part=f.parts[i],
                              tokens_array=f.tokens[i]))
    first = {}
    for u in units:
        if u["status"] != "ok":
            continue
        kept = first.setdefault(u["signature"], u["id"])
        if kept != u["id"]:
            u.update(status="skipped", reason=DUPLICATE, detail=f"same melody as {kept}",
                     duplicate_of=kept)
    return units


def split_pieces(ids: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Piece id -> "train" or "val": validation takes the ids with the lowest seeded hash.

    At least one validation piece once there are two pieces and a fraction
    above 0; adding pieces to a collection moves none of the others.
    """
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    rank = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    val = set(rank[:n_val])
    return {i: "val" if i in val else "train" for i in ids}


_UNIT_KEYS = ("status", "reason", "detail", "notes", "track", "duplicate_of")
_PIECE_KEYS = ("id", "file", "part", "split", "index", "notes", "tokens", "tempo",
               "time_signature", "key", "program", "status", "reason", "duplicate_of")


def _unit_entry(u: dict) -> dict:
    return {k: u[k] for k in _UNIT_KEYS if u.get(k) not in (None, "")}


def _file_entries(files: list, units: list) -> list[dict]:
    """One entry per file; ``units`` are in file order, as ``_dedupe`` returns them."""
    entries, at = [], 0
    for f in files:
        entries.append(_file_entry(f, units[at:at + len(f.records)]))
        at += len(f.records)
    return entries


def _file_entry(f: SourceFile, mine: list) -> dict:
    if f.parts == [None]:
        return dict({"path": str(f.path)}, **_unit_entry(mine[0]))
    ok = [u for u in mine if u["status"] == "ok"]
    entry = {"path": str(f.path), "status": "ok" if ok else "skipped",
             "notes": sum(u["notes"] for u in ok)}
    if not ok:
        entry["reason"] = Counter(u["reason"] for u in mine).most_common(1)[0][0]
        entry["detail"] = f"none of its {len(mine)} tunes was kept"
    entry["pieces"] = [dict({"id": u["id"], "part": u["part"]}, **_unit_entry(u)) for u in mine]
    return entry


def _piece_entry(u: dict) -> dict:
    u = dict(u, tokens=len(u["tokens_array"]))
    if u["status"] == "ok":
        u = {k: v for k, v in u.items() if k not in ("status", "reason")}
    return {k: u[k] for k in _PIECE_KEYS if k in u}


# -- discovery ---------------------------------------------------------------------------


@dataclass
class Found:
    files: list  # (path, unique display name, resolved path)
    ignored: int = 0
    errors: list = field(default_factory=list)  # folders that could not be listed


def _music_extensions() -> frozenset:
    from melody.midi_io import MUSIC_EXTENSIONS

    return frozenset(MUSIC_EXTENSIONS)


def discover(sources, exclude=None) -> Found:
    """Music files under ``sources`` (files or folders, recursively, any letter case).

    Each real folder and file is visited once, so symlink loops end; folders
    that cannot be listed are reported, not fatal; ``exclude`` (the dataset
    folder) is never searched.
    """
    walk = _Walk(_music_extensions())
    if exclude is not None:
        walk.seen.add(os.path.realpath(exclude))
    for source in sources:
        source = os.fspath(source)
        name = os.path.basename(os.path.abspath(source))
        if os.path.isdir(source):
            walk.folder(source, name)
        else:
            walk.file(source, name, os.path.realpath(source))
    return walk.found


class _Walk:
    def __init__(self, extensions):
        self.extensions, self.found = extensions, Found([])
        self.seen, self.names = set(), set()

    def file(self, path: str, name: str, real: str) -> None:
        if real in self.seen:
            return
        self.seen.add(real)
        if os.path.splitext(path)[1].lower() not in self.extensions:
            self.found.ignored += 1
            return
        if name in self.names:
            name = real  # two sources with the same inner layout
        self.names.add(name)
        self.found.files.append((path, name, real))

    def folder(self, top: str, top_name: str) -> None:
        stack = [(top, top_name, os.path.realpath(top))]
        while stack:
            folder, name, real = stack.pop()
            if real in self.seen:
                continue
            self.seen.add(real)
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
                entry_real = (os.path.realpath(path) if entry.is_symlink()
                              else os.path.join(real, entry.name))
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append((path, inner, entry_real))
                else:
                    self.file(path, inner, entry_real)
            stack.extend(reversed(subfolders))  # popped in name order


# -- the unit cache -----------------------------------------------------------------------


class _Cache:
    """Unit results of earlier runs: ``index.json`` plus one ``tokens-HASH.npy``.

    The index names the token file it belongs to and is replaced after it, so
    the pair is always consistent; any mismatch means an empty cache.
    """

    def __init__(self, folder: Path, header: dict):
        self.folder, self.header = folder, header
        self.files, self.tokens = {}, None
        try:
            index = json.loads((folder / "index.json").read_text())
            if index.get("header") == header:
                self.tokens = np.load(folder / index["tokens"], mmap_mode="r")
                self.files = index["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.files, self.tokens = {}, None

    def restore(self, f: SourceFile, timeout: float) -> bool:
        """Fill ``f`` from the cache when its file is unchanged; units that crashed,
        or timed out under a shorter limit than ``timeout``, are left to read again."""
        entry = self.files.get(f.real)
        if not entry or (entry["size"], entry["mtime_ns"]) != (f.size, f.mtime_ns):
            return False
        f.parts = entry["parts"]
        f.records, f.tokens = [], []
        for record in entry["units"]:
            record = dict(record)
            start, n = record.pop("tokens_at", (0, -1))
            if record["reason"] == CRASHED or (
                    record["reason"] == TIMED_OUT and record.get("timeout", 0) < timeout):
                record = None  # a crash may have been the machine's, not the file's
            f.records.append(record)
            f.tokens.append(np.array(self.tokens[start:start + n]) if n >= 0 else None)
        return True

    def stale(self, files: list) -> bool:
        """Whether the cache holds other files than these."""
        return set(self.files) != {f.real for f in files if f.size >= 0 and f.done}

    def save(self, files: list) -> None:
        entries, chunks, at = {}, [], 0
        for f in files:
            if f.size < 0 or not f.done:
                continue
            units = []
            for record, tokens in zip(f.records, f.tokens):
                record = dict(record)
                if tokens is not None:
                    record["tokens_at"] = [at, len(tokens)]
                    chunks.append(tokens)
                    at += len(tokens)
                units.append(record)
            entries[f.real] = {"size": f.size, "mtime_ns": f.mtime_ns, "parts": f.parts,
                               "units": units}
        tokens = np.concatenate(chunks).astype(np.uint16) if chunks else np.zeros(0, np.uint16)
        name = f"tokens-{hashlib.sha256(tokens.tobytes()).hexdigest()[:16]}.npy"
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.folder / name) as out:
            np.save(out, tokens)
        index = {"header": self.header, "tokens": name, "files": entries}
        atomic_write_text(self.folder / "index.json", json.dumps(index) + "\n")
        for old in self.folder.glob("tokens-*.npy"):
            if old.name != name:
                with contextlib.suppress(OSError):
                    old.unlink()


# -- worker processes -----------------------------------------------------------------------


class _Worker:
    """One worker process, its pipe, and the units sent to it, oldest first."""

    def __init__(self, process, conn):
        self.process, self.conn = process, conn
        self.sent: deque = deque()
        self.since = 0.0  # when the oldest sent unit began (the previous one came back)

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


class WorkerPool:
    """``jobs`` worker processes reading units, each unit under its own deadline.

    Each worker holds up to ``DEPTH`` units so it never waits for the parent;
    it reads them in order, so the oldest one's clock starts when the one
    before it came back. A unit past its deadline has its worker killed
    ("timed out"); a worker that dies mid-unit makes it "crashed"; the units
    queued behind it go to another worker, and a fresh worker takes its place.

    Workers are forked from this process when it has not loaded TensorFlow
    (fast), else from a clean forkserver, so none of TensorFlow is passed on.
    """

    DEPTH = 2

    def __init__(self, jobs: int, config: PrepareConfig, tokenizer: Tokenizer):
        import multiprocessing

        self.jobs, self.config = max(1, jobs), config
        self.tokenizer_config = tokenizer.to_dict()
        heavy = any(m in sys.modules for m in ("tensorflow", "keras", "torch", "jax"))
        self.ctx = multiprocessing.get_context("forkserver" if heavy else "fork")
        if heavy:
            self.ctx.set_forkserver_preload(["melody.data", "melody.midi_io"])

    def run(self, work: list, done) -> None:
        """Read every ``(task, path, part)``; call ``done(task, record, tokens)`` for each."""
        from multiprocessing.connection import wait

        pending, workers = deque(work), []
        try:
            while pending or any(w.sent for w in workers):
                self._dispatch(pending, workers)
                busy = [w for w in workers if w.sent]
                nearest = min(w.since for w in busy) + self.config.timeout
                ready = wait([w.conn for w in busy], timeout=max(0.0, nearest - time.monotonic()))
                for w in busy:
                    if w.conn in ready:
                        self._collect(w, pending, workers, done)
                    elif time.monotonic() >= w.since + self.config.timeout:
                        record = _skipped(TIMED_OUT, f"reading took over {self.config.timeout:g} s")
                        self._retire(w, pending, workers, done, dict(record, timeout=self.config.timeout))
        finally:
            for w in workers:
                w.stop(gently=not w.sent)

    def _dispatch(self, pending: deque, workers: list) -> None:
        while pending and len(workers) < self.jobs:
            workers.append(self._start())
        for w in list(workers):
            while pending and len(w.sent) < self.DEPTH:
                try:
                    w.send(pending[0])
                except OSError:  # it died while idle: its units go elsewhere
                    self._retire(w, pending, workers, None, None)
                    break
                pending.popleft()

    def _collect(self, w: _Worker, pending: deque, workers: list, done) -> None:
        try:
            record, tokens = w.conn.recv()
        except (EOFError, OSError):
            self._retire(w, pending, workers, done, _skipped(CRASHED, w.death()))
            return
        done(w.sent.popleft()[0], record, tokens)
        w.since = time.monotonic()
        if record["reason"] == OUT_OF_MEMORY:  # its heap may be past saving
            self._retire(w, pending, workers, None, None)

    @staticmethod
    def _retire(w: _Worker, pending: deque, workers: list, done, record) -> None:
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
    from melody.midi_io import SkipFile

    reader = _resolve(reader_spec)
    tokenizer = Tokenizer(TokenizerConfig.from_dict(tokenizer_config))
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        record, tokens = read_unit(reader, tokenizer, SkipFile, *item)
        conn.send((record, tokens))
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
