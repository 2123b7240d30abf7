"""Reading music files into melodies: the front door of every reader.

``parts(path)`` lists the units of a file to read one by one (``[None]``, or
one id per tune of a many-tune ABC file); ``read_melody(path, part)`` returns
one ``Melody`` or raises ``SkipFile`` whose ``reason`` is one of ``REASONS``.

- ``smf``: Standard MIDI Files, parsed leniently in ticks;
- ``extract``: which MIDI line is the melody, and the grid it is put on;
- ``scores``: MusicXML, ABC and kern through music21;
- ``files``: which suffixes are music, and reading bytes with a named reason.
"""

from __future__ import annotations

from pathlib import Path

from melody.config import MAX_FILE_BYTES
from melody.errors import REASONS, SkipFile
from melody.inputs.extract import MIN_NOTES, melody_from_midi_bytes, skyline
from melody.inputs.files import (
    MIDI_EXTENSIONS,
    MUSIC_EXTENSIONS,
    SCORE_EXTENSIONS,
    file_size,
    read_bytes,
    read_text,
)
from melody.inputs.scores import abc_tunes, read_score
from melody.notes import Melody

__all__ = ["MIDI_EXTENSIONS", "MIN_NOTES", "MUSIC_EXTENSIONS", "REASONS", "SCORE_EXTENSIONS",
           "SkipFile", "melody_from_midi_bytes", "parts", "read_melody", "skyline"]


def parts(path) -> list[str | None]:
    """Units to read separately: one id per tune ("X:12") of a many-tune ABC file, else [None]."""
    path = Path(path)
    if path.suffix.lower() != ".abc":
        return [None]
    try:
        if file_size(path) > MAX_FILE_BYTES:
            return [None]  # read_melody will say it is too large
        text = read_text(path)
    except SkipFile:
        return [None]
    ids = [tune_id for tune_id, _ in abc_tunes(text)[1]]
    return ids if len(ids) > 1 else [None]


def read_melody(path, part: str | None = None) -> Melody:
    """One melody from the file (or the ABC tune ``part``), or raise SkipFile."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MUSIC_EXTENSIONS:
        raise SkipFile(
            "unsupported format",
            f"extension must be one of {' '.join(sorted(MUSIC_EXTENSIONS))}, got {ext or 'none'!r}",
        )
    size = file_size(path)
    if size == 0:
        raise SkipFile("empty", "the file has 0 bytes")
    if size > MAX_FILE_BYTES:
        raise SkipFile("too large", f"{size} bytes; at most {MAX_FILE_BYTES} are read")
    if ext in MIDI_EXTENSIONS:
        melody = melody_from_midi_bytes(read_bytes(path))
    else:
        melody = read_score(path, ext, part)
    melody.source = str(path)
    return melody
