"""A primer: the melody that every new one continues, as tokens from BOS on (no EOS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.config import MAX_NOTES
from melody.errors import SkipFile, UsageError
from melody.notes import Melody
from melody.tokenizer import Tokenizer


@dataclass
class Primer:
    """The primer's file (or "melody"), its tokens, the melody they decode to, and
    the step where its last note ends."""

    file: str
    tokens: np.ndarray
    melody: Melody
    steps: int


def read_primer(source, tokenizer: Tokenizer) -> Primer:
    """The primer from a music file's melody or a ``Melody``; unusable -> UsageError."""
    from melody.inputs import read_melody

    if isinstance(source, Melody):
        name, melody = "melody", source
    else:
        name = str(source)
        if not os.path.lexists(source) or (Path(source).is_symlink() and not Path(source).exists()):
            raise UsageError(f"primer {source}: file not found")
        if not Path(source).is_file():  # a folder, a FIFO, a device: never opened
            raise UsageError(f"primer {source}: not a regular file")
        try:
            melody = read_melody(source)
        except (SkipFile, OSError) as e:
            raise UsageError(f"primer {source}: cannot be used ({e})")
    if melody.n_notes > MAX_NOTES:
        raise UsageError(f"primer {name}: {melody.n_notes} notes; a primer may have at most "
                         f"{MAX_NOTES}")
    try:
        tokens = tokenizer.encode(melody)[:-1]
    except ValueError as e:
        raise UsageError(f"primer {name}: cannot be used ({e})")
    decoded = tokenizer.decode(tokens, tempo=melody.tempo, program=melody.program)
    return Primer(name, tokens, decoded, decoded.end)
