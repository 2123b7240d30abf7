"""How fast `prepare` is: all cores vs one, and a second run over an unchanged collection.

    PYTHONPATH=. python bench/prepare.py [--files 2000] [--jobs N] [--rounds 5]

Generates a synthetic collection of small MIDI files (random-walk melodies,
one track each), then prints, as ratios:

- parallel speed-up: prepare with --jobs 1 over prepare with all cores (aim >= 1.7 on 2 cores);
- cache speed-up: the first run over a second run on the unchanged collection (aim >= 20),
  and over a run that re-splits the cached pieces with another seed (nothing parsed).
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody.backend import usable_cores  # noqa: E402
from melody.data import prepare  # noqa: E402

TICKS_PER_QUARTER = 480


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def smf(pitches, durations_in_eighths, tempo_bpm: int = 120) -> bytes:
    """A format-0 Standard MIDI File: tempo, 4/4, then the notes one after another."""
    events = [b"\x00\xff\x51\x03" + int(60e6 / tempo_bpm).to_bytes(3, "big"),
              b"\x00\xff\x58\x04\x04\x02\x18\x08"]
    for pitch, eighths in zip(pitches, durations_in_eighths):
        events.append(b"\x00" + bytes([0x90, int(pitch), 80]))
        events.append(_varlen(int(eighths) * TICKS_PER_QUARTER // 2) + bytes([0x80, int(pitch), 0]))
    events.append(b"\x00\xff\x2f\x00")
    track = b"".join(events)
    header = b"MThd" + struct.pack(">LHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">L", len(track)) + track


def synthetic_collection(folder: Path, n: int, seed: int = 0, per_folder: int = 500) -> Path:
    """``n`` distinct random-walk melodies (16-64 notes) as MIDI files under ``folder``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        length = int(rng.integers(16, 65))
        steps = rng.choice([-4, -3, -2, -1, 1, 2, 3, 4, 5, 7], size=length)
        pitches = np.clip(60 + np.cumsum(steps) % 24, 48, 84)
        durations = rng.choice([1, 1, 2, 2, 3, 4], size=length)
        path = folder / f"part{i // per_folder:03d}" / f"tune{i:06d}.mid"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(smf(pitches, durations))
    return folder


def _cpu_seconds() -> float:
    """CPU time of this process (the workers are the forkserver's children, not ours)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(sources, out, jobs, seed=0) -> tuple[float, dict]:
    start, cpu = time.perf_counter(), _cpu_seconds()
    result = prepare(sources, out, jobs=jobs, val_fraction=0.1, seed=seed, timeout=30,
                     progress=False)
    seconds = time.perf_counter() - start
    result["cpu_seconds"] = _cpu_seconds() - cpu
    return seconds, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="MIDI files to generate")
    parser.add_argument("--jobs", type=int, default=usable_cores(),
                        help="worker processes for the parallel run")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of the first runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        songs = synthetic_collection(tmp / "songs", args.files)
        print(f"generated {args.files:,} MIDI files in {time.perf_counter() - start:.1f} s")
        # Start the worker server (a fresh interpreter, once per process) before
        # timing, so that neither timed run pays for it.
        warm = synthetic_collection(tmp / "warm", 2, seed=1)
        prepare([warm], tmp / "warm-ds", jobs=1, progress=False)
        # The fastest of alternating rounds, so that load from other work on the
        # machine hits both alike.
        ones, manys = [], []
        for n in range(args.rounds):
            ones.append(timed([songs], tmp / f"one-{n}", 1))
            manys.append(timed([songs], tmp / ("many" if n == 0 else f"many-{n}"), args.jobs))
        one, r1 = min(ones, key=lambda t: t[0])
        many, r = min(manys, key=lambda t: t[0])
        again, r2 = timed([songs], tmp / "many", args.jobs)
        resplit, r3 = timed([songs], tmp / "many", args.jobs, seed=1)
        assert r2["parsed"] == r3["parsed"] == 0
        assert r3["tokens"] == r2["tokens"] == r["tokens"] == r1["tokens"]
        print(f"pieces: {r['ok']:,} ok, skipped {r['skipped']}; {r['tokens']:,} tokens")
        print(f"first runs, best of {args.rounds} rounds:")
        for label, seconds, res in (("--jobs 1", one, r1), (f"--jobs {args.jobs}", many, r),
                                    ("second run (unchanged)", again, r2),
                                    ("--seed 1 (re-split)", resplit, r3)):
            print(f"{label:>22}: {seconds:6.2f} s wall, {res['cpu_seconds']:6.2f} s CPU in "
                  f"this process ({args.files / seconds:,.0f} files/s)")
        print(f"load average while running: {os.getloadavg()[0]:.1f} on "
              f"{usable_cores()} cores (other work on the machine skews the wall times)")
        print(f"parallel speed-up ({args.jobs} jobs vs 1): {one / many:.2f}x")
        print(f"cache speed-up (first run vs unchanged second run): {many / again:.1f}x")
        print(f"re-split from the cache (first run vs --seed 1 run): {many / resplit:.1f}x")


if __name__ == "__main__":
    main()
