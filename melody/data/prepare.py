"""``prepare``: a collection of music files -> a dataset folder.

Files are found (``discover``), looked at once (size and modification time),
read in worker processes (``pool``) unless the cache (``cache``) has them, then
deduplicated and split (``split``) and written aside before they move in, the
manifest last. The main process keeps its lists (files, unit results) in
temporary files (``scratch``) and only numbers in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
from array import array
from pathlib import Path

from melody.backend import usable_cores
from melody.config import SMALL_COLLECTION, PrepareConfig
from melody.data.cache import Cache
from melody.data.dataset import SPLITS, default_folder, is_dataset, write_manifest
from melody.data.discover import Found, discover
from melody.data.pool import WorkerPool, start_forkserver
from melody.data.scratch import Files, Units
from melody.data.split import Choice, choose, file_entry, piece_entry
from melody.data.unit import CRASHED, DUPLICATE, list_parts, skipped
from melody.errors import UsageError
from melody.fileio import atomic_write_text, process_tag, remove_written, sweep
from melody.inputs.files import MUSIC_EXTENSIONS
from melody.lock import LOCK_FILE, FolderLock
from melody.tokenizer import Tokenizer

CACHE_VERSION = 2
READING_CODE = ("melody.inputs", "melody.inputs.files", "melody.inputs.smf", "melody.inputs.extract",
                "melody.inputs.scores", "melody.notes", "melody.tokenizer", "melody.data.unit")
CHECKPOINT_SECONDS = 60.0
OUR_FILES = ("manifest.json", "tokenizer.json", "cache") + tuple(
    f"{s}.{k}.npy" for s in SPLITS for k in ("tokens", "offsets"))


def prepare(sources=(), out=None, *, progress: bool = True, **settings) -> dict:
    """Read ``sources`` (files or folders; none: the built-in folk corpus) into the
    dataset folder ``out``; return the summary (the ``--json`` of ``prepare``).

    ``out`` defaults to ``datasets/folk`` for the built-in corpus, else
    ``datasets/NAME`` of the first source. ``settings`` are the fields of
    ``PrepareConfig`` (``jobs``, ``val_fraction``, ``seed``, ``timeout``).
    Raises UsageError for a missing source or a collection without music files.
    The workers start from a fresh interpreter (a forkserver), which imports
    the main script as multiprocessing's spawn does: a script that calls this
    must do so under ``if __name__ == "__main__":``.
    """
    from melody import corpus

    sources = [Path(s) for s in sources]
    if out is None:
        out = default_folder(sources) if sources else corpus.DATASET
    if not sources:
        try:
            sources = corpus.files()
        except FileNotFoundError as e:
            raise UsageError(str(e))
    return _Prepare(sources, Path(out), PrepareConfig(**settings), progress).run()


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
        try:
            # One run at a time writes a dataset folder; the file list waits there, not in /tmp.
            with FolderLock(self.out, "prepare"):
                # Holding the lock, every temporary in the folder is a killed run's.
                for folder in (self.out, self.out / "cache"):
                    sweep(folder, everything=True)
                result = self._build(start)
        except BaseException:
            if made:  # a run that failed leaves no empty folder (only work worth keeping)
                with contextlib.suppress(OSError):
                    self.out.rmdir()
            raise
        if not result["ok"]:
            raise NoMelody(result, self.sources)
        return result

    def _build(self, start: float) -> dict:
        with contextlib.ExitStack() as scratch:  # closing a nameless file deletes it
            found = discover(self.sources, exclude=self.out, folder=self.out)
            scratch.callback(found.files.close)
            if not len(found.files):
                raise UsageError(
                    f"no music files in {', '.join(map(str, self.sources))} "
                    f"(looked for {' '.join(sorted(MUSIC_EXTENSIONS))}; "
                    f"{found.ignored} other files ignored)")
            header = self._cache_header()
            sizes, mtimes, stat_errors, stamp = self._look(found, header)
            counts = self._up_to_date(stamp)
            if counts is not None:  # nothing changed since the last run made this dataset
                return dict(counts, dataset=str(self.out), parsed=0, cached=counts["pieces"],
                            seconds=round(time.monotonic() - start, 2),
                            unreadable_folders=found.errors)
            units, files = Units(self.out), Files(self.out)
            cache = Cache(self.out / "cache", header)
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
                raise UsageError(f"source not found: {source}")
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out must be a folder, got the file {self.out}")
        if self.out.is_dir() and not is_dataset(self.out):
            strangers = [p.name for p in self.out.iterdir()
                         if p.name not in OUR_FILES + (LOCK_FILE,) and not p.name.endswith(".tmp")]
            if strangers:
                raise UsageError(
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
              stat_error: str | None, cache: "Cache", units: Units) -> tuple[list, list]:
        """The file's entry for ``Files`` and its units' slots: cached results,
        or -1 for each unit still to read."""
        if stat_error is not None:
            return [path, name, real, -1, -1, [None]], [
                units.add(skipped("unreadable", stat_error), None)]
        restored = cache.restore(real, size, mtime_ns, self.config.timeout, units)
        if restored is None:
            parts = list_parts(path)
            slots = [-1] * len(parts)
        else:
            parts, slots = restored
        self.cached += sum(slot >= 0 for slot in slots)
        if not self.server_started and -1 in slots:
            start_forkserver()  # a file to read: its imports overlap the rest of the planning
            self.server_started = True
        return [path, name, real, size, mtime_ns, parts], slots

    def _read_all(self, files: Files, cache: "Cache", units: Units) -> None:
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
        work = ((u, entry[Files.PATH], entry[Files.PARTS][i]) for entry, us in files
                for i, u in enumerate(us) if files.slots[u] < 0)
        jobs = self.config.jobs or usable_cores()
        try:
            WorkerPool(min(jobs, n_tasks), self.config, self.tokenizer).run(work, done)
        finally:
            bar.close()

    # -- writing -----------------------------------------------------------------
    def _write(self, files: Files, found: "Found", units: Units, stamp: str | None) -> dict:
        choice = choose(files, units, self.config.val_fraction, self.config.seed)
        manifest = self._manifest(files, units, choice, found)
        # Everything is written aside first, so a full disk or Ctrl-C leaves the
        # previous dataset as it was; then the manifest goes, the new files move
        # in, and the manifest comes back last: a folder counts as a dataset
        # (is_dataset) only when all of it is in place.
        staging = Path(tempfile.mkdtemp(prefix=f".new.{process_tag()}-", suffix=".tmp",
                                        dir=self.out))
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

    def _manifest(self, files: Files, units: Units, choice: Choice, found: Found) -> dict:
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
            "files": (file_entry(entry, mine)
                      for entry, mine in choice.units_by_file(files, units)),
            "pieces": (piece_entry(u) for _, mine in choice.units_by_file(files, units)
                       for u in mine if u["status"] == "ok" or u.get("duplicate_of")),
        }


def _code_digest(reader: str) -> str:
    """Hash of the reading code, so results cached by older code are not reused."""
    h = hashlib.sha256()
    for name in (reader.partition(":")[0], *READING_CODE):
        source = getattr(importlib.import_module(name), "__file__", None)
        if source:
            h.update(Path(source).read_bytes())
    return h.hexdigest()[:16]


class NoMelody(UsageError):
    """No file of the collection yields a melody; ``reasons`` counts why (the dataset
    is written all the same, its manifest saying why for each file)."""

    def __init__(self, result: dict, sources):
        self.result = result
        self.reasons = ", ".join(f"{n} {reason}" for reason, n in
                                 sorted(result["skipped"].items(), key=lambda kv: -kv[1]))
        super().__init__(
            f"no melody in {', '.join(map(str, sources))}: {counted(result['pieces'], 'piece')} "
            f"of {counted(result['files'], 'file')}, all skipped ({self.reasons or 'none'}); "
            f"each file's reason is in {Path(result['dataset']) / 'manifest.json'}")


def counted(n: int, what: str) -> str:
    """'1 file', '3 files'."""
    return f"{n:,} {what}{'' if n == 1 else 's'}"


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
    advice = small_collection_advice(r["train_pieces"], r["val_pieces"])
    if advice:
        lines.append(f"  {advice}")
    return "\n".join(lines)


def small_collection_advice(train_pieces: int, val_pieces: int) -> str | None:
    """What to expect of a collection too small to train a model from scratch."""
    if train_pieces + val_pieces >= SMALL_COLLECTION:
        return None
    if not val_pieces:
        return (f"{train_pieces} piece{'s' if train_pieces != 1 else ''} and none held out: "
                "training needs at least 2 pieces, one of them to check the model on")
    return (f"a small collection: fine-tune the shipped model on it (train --from pretrained), "
            f"which learns far more from {train_pieces + val_pieces} pieces than a model trained "
            f"from scratch; the validation score of {val_pieces} piece"
            f"{'s' if val_pieces != 1 else ''} is a rough guide")
