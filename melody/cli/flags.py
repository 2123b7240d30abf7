"""Flag types for the command line, and the checks that need more than one flag.

Each error names the allowed values and what was given. The ranges are the
ones ``melody.config`` checks for the Python API (the same functions, the same
constants), so a value the command line takes the API takes too.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from melody import config
from melody.errors import UsageError


def whole(low: int, high: int | None = None):
    """A flag type: a whole number in ``low..high`` (``high`` None: no ceiling)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
        bound = config.int_bound(value, low, high)
        if bound:
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "whole number"  # what argparse names in "invalid ... value"
    return parse


def number(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
    """A flag type: a finite number in the range (``low_open``: ``low`` excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
        try:
            config.check_float("value", value, low, high, low_open, high_open)
        except ValueError:  # also nan and inf
            raise argparse.ArgumentTypeError(
                f"must be {config.float_range(low, high, low_open, high_open)}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = whole(1)
non_negative_int = whole(0)
seed = whole(0, config.MAX_SEED)
positive_float = number(0.0, low_open=True)
fraction = number(0.0, 1.0, high_open=True)  # [0, 1)
probability = number(0.0, 1.0, low_open=True)  # (0, 1]
tempo = number(config.MIN_TEMPO, config.MAX_TEMPO)
timeout = number(config.MIN_TIMEOUT, config.MAX_TIMEOUT)


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


def stem(text: str) -> str:
    """A file name stem (``--name``), as ``config.check_name`` allows."""
    try:
        config.check_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("name "))
    return text


def check_together(args) -> None:
    """Checks that need more than one flag, or the file system; UsageError when one fails."""
    lowest, highest = getattr(args, "lowest", None), getattr(args, "highest", None)
    if lowest is not None and highest is not None and lowest > highest:
        raise UsageError(f"--lowest {lowest} is above --highest {highest}; "
                         "give a lowest pitch at or below the highest")
    n, notes, bars = (getattr(args, k, None) for k in ("n", "notes", "bars"))
    for length, flag, most in ((notes, "--notes", config.MAX_BATCH_NOTES), (bars, "--bars",
                                                                      config.MAX_BATCH_BARS)):
        if length is not None and n * length > most:
            raise UsageError(f"-n {n} x {flag} {length} = {n * length}; at most {most} per "
                             "call: ask for fewer melodies, or shorter ones")
    if getattr(args, "allow_data_change", False) and not args.resume:
        raise UsageError("--allow-data-change only applies with --resume")
    if getattr(args, "out", None):
        _check_folder("--out", args.out)
    if getattr(args, "png", None) and isinstance(args.png, str):  # evaluate's --png FILE
        if os.path.isdir(args.png):
            raise UsageError(f"--png must be a file name, got the folder {args.png}")
        _check_folder("--png", os.path.dirname(args.png) or ".", args.png)
        if os.path.lexists(args.png):
            raise UsageError(f"--png {args.png} exists; evaluate never replaces a file: "
                             "remove it or give a new name")


def _check_folder(flag: str, folder, given=None) -> None:
    """No file where ``folder``, or a folder above it, must be (mkdir would fail)."""
    path = Path(folder)
    for place in (path, *path.parents):
        if os.path.lexists(place):
            if place.is_dir():
                return
            if given is None and place == path:
                raise UsageError(f"{flag} must be a folder, got the file {path}")
            raise UsageError(f"{flag} {given or folder}: {place} is a file, not a folder")
