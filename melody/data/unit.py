"""Reading one unit (a file, or one tune of a many-tune file) into a record and tokens.

A record says ``status`` ("ok" or "skipped"), the ``reason`` and ``detail`` of
a skip, the notes and track, the metadata the manifest keeps and the melody's
signature for finding duplicates.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import numpy as np

from melody.notes import Melody
from melody.tokenizer import Tokenizer

PARTS = "melody.inputs:parts"


# Reasons the pipeline adds to midi_io.REASONS.
TIMED_OUT, OUT_OF_MEMORY, CRASHED = "timed out", "out of memory", "crashed"
DUPLICATE, PITCH_RANGE, UNENCODABLE, READ_ERROR = (
    "duplicate", "pitch out of range", "unencodable", "read error")


def read_unit(reader, tokenizer: Tokenizer, skip_type, path: str, part) -> tuple[dict, object]:
    """One unit's record (status, reason, notes, metadata, signature) and tokens."""
    try:
        melody = reader(path, part)
    except MemoryError:
        return skipped(OUT_OF_MEMORY, "the worker's memory cap was reached"), None
    except skip_type as e:
        return skipped(e.reason, e.detail), None
    except OSError as e:
        return skipped("unreadable", f"{type(e).__name__}: {e}"), None
    except Exception as e:  # a reader bug must cost one file, and say what it was
        return skipped(READ_ERROR, f"{type(e).__name__}: {e}"), None
    track = {"name": melody.track_name, "index": int(melody.track_index)}
    if melody.n_notes == 0:
        return dict(skipped("no notes", "the melody has no notes"), track=track), None
    try:
        tokens = tokenizer.encode(melody)
    except ValueError as e:
        reason = PITCH_RANGE if str(e).startswith("pitch") else UNENCODABLE
        return dict(skipped(reason, str(e)), track=track), None
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


def resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def list_parts(path: Path) -> list:
    """The file's units; a file whose parts cannot be listed is read as one unit."""
    parts = resolve(PARTS)
    try:
        found = list(parts(path))
    except Exception:  # the worker reading it names the problem
        return [None]
    return found or [None]


def skipped(reason: str, detail: str = "") -> dict:
    return {"status": "skipped", "reason": reason, "detail": detail, "notes": 0}
