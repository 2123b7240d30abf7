"""Which files are music, and reading their bytes with one named reason on failure."""

from __future__ import annotations

import stat
from pathlib import Path

from melody.errors import SkipFile

MIDI_EXTENSIONS = frozenset({".mid", ".midi", ".kar"})
SCORE_EXTENSIONS = frozenset({".xml", ".musicxml", ".mxl", ".abc", ".krn"})
MUSIC_EXTENSIONS = MIDI_EXTENSIONS | SCORE_EXTENSIONS


def file_size(path: Path) -> int:
    """The size of a regular file; anything else (a FIFO, a device, a folder) is
    skipped before it is opened: opening a FIFO would wait for a writer forever."""
    try:
        st = path.stat()
    except OSError as e:
        raise SkipFile("unreadable", f"{type(e).__name__}: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else (
            "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket")
        raise SkipFile("unreadable", f"{kind}, not a regular file")
    return st.st_size


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SkipFile("unreadable", f"{type(e).__name__}: {e}") from e


def read_text(path: Path) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # older ABC collections are Latin-1
