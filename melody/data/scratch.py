"""prepare's lists of files and unit results, kept in nameless temporary files.

The main process holds only numbers per file in memory (a few dozen bytes), so
it does not grow with the collection; closing a nameless file deletes it.
"""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from array import array
from pathlib import Path

import numpy as np

_decode = json.JSONDecoder().decode  # json.loads less its checks: the lines are ours


class Lines:
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


class Units:
    """This run's unit results, on disk rather than on the heap, so the main
    process does not grow with the collection: records as JSON lines, tokens
    as uint16 bytes (a record's ``tokens_at`` is ``[start, count]``)."""

    def __init__(self, folder: Path):
        self.records = Lines(folder)
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


class Files:
    """The collection's files as this run knows them, on disk but for two
    numbers a file and one a unit: ``lines`` holds each file's ``[path, name,
    real path, size, mtime_ns, parts]`` (size -1: it could not be looked at);
    file k's units are numbers ``first[k]`` to ``first[k + 1] - 1``, and
    ``slots[u]`` is unit u's slot in ``Units`` (-1: not read yet)."""

    PATH, NAME, REAL, SIZE, MTIME, PARTS = range(6)

    def __init__(self, folder: Path):
        self.lines = Lines(folder)
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
        return unit_id(entry[self.NAME], entry[self.PARTS], u - self.first[k])

    def close(self) -> None:
        self.lines.close()


def unit_id(name: str, parts: list, i: int) -> str:
    """A unit's id: the file's display name, and its tune for a many-tune file."""
    return name if parts[i] is None else f"{name}#{parts[i]}"
