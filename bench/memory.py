"""Peak memory of `prepare` and of a training epoch as the collection grows.

    PYTHONPATH=. python bench/memory.py [--files 50000] [--small 5000]

Prepares two synthetic MIDI collections (``--small`` and ``--files`` files),
each in a fresh process, and prints the peak resident memory of the process
that runs ``prepare`` and of its largest worker, next to the token data the
dataset holds. The workers should not grow at all with the collection; the
main process keeps its lists on disk and grows only by a few numbers a file
and a piece, which the "per extra file" line shows next to the token data. Then one training epoch of
the default model runs on each dataset (``--train-steps`` batches, since a
full pass over 50,000 files takes an hour here, plus the full validation
split); its peak should not grow beyond the token data, which is
memory-mapped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

MIB = 2**20


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (workers are children of the forkserver, not of us)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        frontier += kids
    return found


def _peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakWatcher(threading.Thread):
    """Samples the peak RSS of every descendant process twice a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            for pid in _descendants(os.getpid()):
                self.peaks[pid] = max(self.peaks.get(pid, 0), _peak_rss(pid))


def measure_prepare(songs: str, out: str) -> dict:
    """Run prepare here and report peak memory (called in a fresh process)."""
    from melody.data import load_dataset, prepare

    watcher = PeakWatcher()
    watcher.start()
    start = time.perf_counter()
    result = prepare([songs], out, jobs=None, val_fraction=0.1, seed=0, timeout=30, progress=False)
    seconds = time.perf_counter() - start
    watcher.stop.set()
    watcher.join()
    dataset = load_dataset(out)
    token_bytes = sum(dataset.split(s).tokens.nbytes + dataset.split(s).offsets.nbytes
                      for s in ("train", "val"))
    workers = sorted(watcher.peaks.values(), reverse=True)
    return {
        "files": result["files"], "tokens": result["tokens"], "seconds": round(seconds, 1),
        "main_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak": workers[0] if workers else 0,
        "token_bytes": token_bytes,
        "manifest_bytes": os.path.getsize(Path(out) / "manifest.json"),
    }


def prepare_in_fresh_process(n: int, tmp: Path) -> dict:
    from prepare import synthetic_collection

    songs = synthetic_collection(tmp / f"songs{n}", n)
    code = ("import json, sys; from memory import measure_prepare; "
            "print(json.dumps(measure_prepare(sys.argv[1], sys.argv[2])))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(BENCH)]))
    done = subprocess.run([sys.executable, "-c", code, str(songs), str(tmp / f"ds{n}")],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"prepare of {n} files failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_training_epoch(dataset: Path, tmp: Path, steps: int) -> dict:
    """Peak memory of one training epoch (``steps`` batches plus the full
    validation pass) of the default model on ``dataset``, in a fresh process."""
    code = ("import resource, subprocess, sys; "
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = tmp / f"model-{dataset.name}"
    cmd = [sys.executable, str(ROOT / "app.py"), "train", "--data", str(dataset), "--out", str(out),
           "--epochs", "1", "--steps-per-epoch", str(steps)]
    done = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                          cwd=ROOT)
    rc, peak_kib = done.stdout.split()
    if rc != "0":
        sys.exit(f"training on {dataset} failed (exit {rc})")
    return {"peak": int(peak_kib) * 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000, help="files in the large collection")
    parser.add_argument("--small", type=int, default=5_000, help="files in the small collection")
    parser.add_argument("--train-steps", type=int, default=20,
                        help="batches in the measured training epoch (0: skip training)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [prepare_in_fresh_process(n, Path(tmp)) for n in (args.small, args.files)]
        print(f"{'files':>8} {'tokens':>10} {'seconds':>8} {'main peak':>10} "
              f"{'worker peak':>11} {'token data':>10} {'manifest':>9}")
        for r in rows:
            print(f"{r['files']:>8,} {r['tokens']:>10,} {r['seconds']:>8} "
                  f"{r['main_peak'] / MIB:>8.0f} M {r['worker_peak'] / MIB:>9.0f} M "
                  f"{r['token_bytes'] / MIB:>8.1f} M {r['manifest_bytes'] / MIB:>7.1f} M")
        small, large = rows
        extra = large["files"] - small["files"]
        print(f"main process per extra file: {(large['main_peak'] - small['main_peak']) / extra:,.0f} "
              f"bytes (token data per file: {(large['token_bytes'] - small['token_bytes']) / extra:,.0f})")
        print(f"worker peak ratio large/small: {large['worker_peak'] / max(small['worker_peak'], 1):.2f}")
        if args.train_steps:
            epochs = [measure_training_epoch(Path(tmp) / f"ds{n}", Path(tmp), args.train_steps)
                      for n in (args.small, args.files)]
            print(f"training epoch peak ({args.train_steps} batches + full validation): "
                  f"{epochs[0]['peak'] / MIB:,.0f} M on {small['files']:,} files, "
                  f"{epochs[1]['peak'] / MIB:,.0f} M on {large['files']:,} files "
                  f"(ratio {epochs[1]['peak'] / epochs[0]['peak']:.2f}; token data "
                  f"{small['token_bytes'] / MIB:.1f} M and {large['token_bytes'] / MIB:.1f} M)")


if __name__ == "__main__":
    main()
