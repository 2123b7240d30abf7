"""Which read units become pieces, and in which split: duplicates out, then a seeded split.

Duplicates (the same notes in any key) are kept once, before the split, so no
tune sits on both sides. Validation takes the pieces with the lowest
``sha256("SEED:ID")``, so adding pieces to a collection moves none of the others.
The manifest's file and piece entries are made here too.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.data.dataset import write_split_blocks
from melody.data.scratch import Files, Units, unit_id
from melody.data.unit import DUPLICATE


@dataclass
class Choice:
    """Which units become pieces, and in which split, as arrays of numbers: a
    few dozen bytes a piece; the records stay in ``Units``."""

    n_units: int
    kept: np.ndarray  # unit numbers (discovery order) of the kept pieces
    lengths: np.ndarray  # their token counts
    starts: np.ndarray  # where their tokens are in ``Units``
    val: np.ndarray  # per kept piece: in the validation split
    duplicates: np.ndarray  # unit numbers of the later repeats of a melody, ascending
    originals: np.ndarray  # per repeat, the unit number of the melody's first unit
    skipped: Counter
    notes: int

    def chosen(self, name: str) -> np.ndarray:
        return self.val if name == "val" else ~self.val

    def write_split(self, folder: Path, name: str, units: Units) -> None:
        """Write one split's arrays, the tokens streamed piece by piece from ``units``."""
        chosen = self.chosen(name)
        starts, lengths = self.starts[chosen], self.lengths[chosen]

        def pieces():
            for at in range(0, len(lengths), 4096):  # a chunk at a time: lists of ints are big
                for start, n in zip(starts[at:at + 4096].tolist(), lengths[at:at + 4096].tolist()):
                    yield units.read_tokens(start, n)

        write_split_blocks(folder, name, np.concatenate([[0], np.cumsum(lengths)]), pieces())

    def units_by_file(self, files: Files, units: Units):
        """Per file, its entry and its units as dicts (record, id, file, part,
        split, duplicate)."""
        index = np.zeros(len(self.kept), np.int64)  # each kept piece's index in its split
        for chosen in (self.val, ~self.val):
            index[chosen] = np.arange(chosen.sum())
        p = d = 0  # the next kept piece and the next repeat: both in unit order
        for entry, us in files:
            mine = []
            parts = entry[Files.PARTS]
            for i, u in enumerate(us):
                unit = dict(units.record(files.slots[u]), id=unit_id(entry[Files.NAME], parts, i),
                            file=entry[Files.PATH], part=parts[i])
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


def choose(files: Files, units: Units, val_fraction: float, seed: int) -> Choice:
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
            keys.append(_split_key(seed, unit_id(entry[Files.NAME], entry[Files.PARTS], i)))
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
    return Choice(
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


def file_entry(entry: list, mine: list) -> dict:
    path = entry[Files.PATH]
    if entry[Files.PARTS] == [None]:
        return dict({"path": path}, **_unit_entry(mine[0]))
    ok = [u for u in mine if u["status"] == "ok"]
    summary = {"path": path, "status": "ok" if ok else "skipped",
               "notes": sum(u["notes"] for u in ok)}
    if not ok:
        summary["reason"] = Counter(u["reason"] for u in mine).most_common(1)[0][0]
        summary["detail"] = f"none of its {len(mine)} tunes was kept"
    summary["pieces"] = [dict({"id": u["id"], "part": u["part"]}, **_unit_entry(u)) for u in mine]
    return summary


def piece_entry(u: dict) -> dict:
    u = dict(u, tokens=u["tokens_at"][1])
    if u["status"] == "ok":
        u = {k: v for k, v in u.items() if k not in ("status", "reason")}
    return {k: u[k] for k in _PIECE_KEYS if k in u}
