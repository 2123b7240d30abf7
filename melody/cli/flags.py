"""Flag types for the command line: each error names the allowed values and what was given."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in range [0, 1), got {text}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in range (0, 1], got {text}")
    return value


def midi_pitch(text: str) -> int:
    """A MIDI note number 0..127 or a name such as C4, F#3, Bb5 (C4 = 60)."""
    try:
        value = int(text)
    except ValueError:
        import re

        m = re.fullmatch(r"([A-Ga-g])([#b]?)(-?\d)", text.strip())
        if not m:
            raise argparse.ArgumentTypeError(
                f"must be a MIDI note 0..127 or a name such as C4 or F#3, got {text!r}"
            )
        base = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}[m[1].upper()]
        value = base + {"": 0, "#": 1, "b": -1}[m[2]] + 12 * (int(m[3]) + 1)
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(f"must be in range 0..127, got {value}")
    return value


def bar_distances(text: str) -> tuple[int, ...]:
    """Bar distances such as ``1,2,4,8``, or ``none``."""
    if text.strip().lower() == "none":
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be bar distances such as 1,2,4,8 or none, got {text!r}")
    if len(values) > 8 or len(set(values)) != len(values) or not all(1 <= v <= 64 for v in values):
        raise argparse.ArgumentTypeError(f"must be at most 8 different distances of 1..64 bars, "
                                         f"got {text!r}")
    return values


def form_letters(text: str) -> str:
    """Section letters such as AABB."""
    from melody.config import MAX_SECTIONS

    if not (text.isascii() and text.isalpha() and 1 <= len(text) <= MAX_SECTIONS):
        raise argparse.ArgumentTypeError(
            f"must be 1 to {MAX_SECTIONS} section letters such as AABB or ABA, got {text!r}")
    return text.upper()


def key_name(text: str) -> str:
    from melody.notes import Key

    try:
        return Key.parse(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def program_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a General MIDI program 0..127, got {text!r}")
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(f"must be in range 0..127, got {value}")
    return value
