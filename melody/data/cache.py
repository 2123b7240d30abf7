"""prepare's cache of unit results, so an unchanged file is never read twice."""

from __future__ import annotations

import contextlib
import json
import os
from array import array
from pathlib import Path

import numpy as np

from melody.data.scratch import Files, Units
from melody.data.unit import CRASHED, TIMED_OUT
from melody.fileio import atomic_open


class Cache:
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
                units: Units) -> tuple[list, list] | None:
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

    def save(self, files: Files, units: Units) -> None:
        """Write the results of every finished file, streaming them from ``units``."""
        name = f"tokens-{os.urandom(8).hex()}.u16"
        self.folder.mkdir(parents=True, exist_ok=True)
        at = 0
        with atomic_open(self.folder / "index.jsonl") as index:
            with atomic_open(self.folder / name) as tokens:
                index.write(json.dumps({"header": self.header, "tokens": name}).encode() + b"\n")
                for entry, us in files:
                    if entry[Files.SIZE] < 0 or not files.done(us):
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
                    index.write(json.dumps(entry[Files.REAL]).encode() + b"\t" + json.dumps(
                        [entry[Files.SIZE], entry[Files.MTIME], entry[Files.PARTS],
                         records]).encode() + b"\n")
        for old in (*self.folder.glob("tokens-*"), self.folder / "index.json"):  # index.json: v1
            if old.name != name:
                with contextlib.suppress(OSError):
                    old.unlink()

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
