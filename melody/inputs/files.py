"""Which files are music, and reading their bytes with one named reason on failure."""

from __future__ import annotations

from pathlib import Path

from melody.errors import SkipFile

MIDI_EXTENSIONS = frozenset({".mid", ".midi", ".kar"})
SCORE_EXTENSIONS = frozenset({".xml", ".musicxml", ".mxl", ".abc", ".krn"})
MUSIC_EXTENSIONS = MIDI_EXTENSIONS | SCORE_EXTENSIONS
MAX_FILE_BYTES = 32 * 2**20


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise SkipFile("unreadable", f"{type(e).__name__}: {e}") from e


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
