"""prepare's worker processes: each unit read under its own deadline and memory cap.

Each (file, part) unit is read in a worker process of our own, so a hang, a
memory blow-up or a native crash costs one unit, never the run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import time
from collections import deque

from melody import worker
from melody.config import PrepareConfig
from melody.data.unit import (
    CRASHED,
    OUT_OF_MEMORY,
    TIMED_OUT,
    read_unit,
    resolve,
    skipped,
)
from melody.errors import RunError
from melody.tokenizer import Tokenizer, TokenizerConfig
from melody.worker import die_with, limit_memory, mute_output


def start_forkserver() -> None:
    """Workers come from a forkserver, a fresh interpreter started now, so they
    inherit neither a grown parent (a large collection's bookkeeping) nor any
    TensorFlow it loaded."""
    worker.start_forkserver(["melody.data.pool", "melody.inputs"])


class _Worker:
    """One worker process, its pipe, and the units sent to it, oldest first."""

    def __init__(self, process, conn):
        self.process, self.conn = process, conn
        self.started = False  # it said it is ready (its reader imported)
        self.sent: deque = deque()
        self.since = 0.0  # when the oldest sent unit began (the previous one came back)
        self.unit_seconds = 0.0  # how long its units take, a moving average (0: not known)

    def took(self, seconds: float) -> None:
        """A unit came back, read in ``seconds`` (the worker's own clock)."""
        self.unit_seconds = seconds if not self.unit_seconds else (
            0.8 * self.unit_seconds + 0.2 * seconds)

    def wants_more(self, gap: float, most: int) -> bool:
        """Whether to send it another unit: it keeps the one it reads and enough
        for twice ``gap`` after it (at most ``most``), as long as they fit in
        half a pipe, so that the parent never blocks writing to a worker that
        is itself blocked writing results to the parent."""
        depth = 2 if not self.unit_seconds else min(
            most, 2 + int(2 * gap / max(self.unit_seconds, 1e-5)))
        return len(self.sent) < depth and sum(
            4 * len(item[1]) + 100 for item in self.sent) < 32768  # bytes, UTF-8 at its widest

    def lasts(self) -> float:
        """Seconds its units in hand surely keep it busy (half the estimate)."""
        return (len(self.sent) - 1) * self.unit_seconds / 2

    def send(self, item) -> None:
        if not self.sent:
            self.since = time.monotonic()
        self.conn.send((item[1], item[2]))
        self.sent.append(item)

    def death(self) -> str:
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"worker killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"worker killed by signal {-code}"
        return f"worker exited with code {code}"

    def stop(self, gently: bool = False) -> None:
        if gently:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.process.join(1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class _Pending:
    """Units still to send: first those a retired worker gave back, then the
    rest of ``work``, drawn only as needed."""

    def __init__(self, work):
        self.back, self.rest = deque(), iter(work)

    def peek(self):
        if not self.back:
            self.back.extend(itertools.islice(self.rest, 1))
        return self.back[0] if self.back else None

    def __bool__(self) -> bool:
        return self.peek() is not None

    def popleft(self):
        return self.back.popleft()

    def extendleft(self, items) -> None:
        self.back.extendleft(items)


class WorkerPool:
    """``jobs`` worker processes reading units, each unit under its own deadline.

    The parent wakes at most once every ``GAP`` seconds and takes every result
    that came meanwhile: on a busy machine each wake-up costs more than the
    bookkeeping of a unit. So that no worker waits for it, each holds enough
    units to last the gap (from how long its units take); it reads them in
    order, so the oldest one's clock starts when the one before it came back.
    A unit past its deadline has its worker killed ("timed out"); a worker that
    dies mid-unit makes it "crashed"; the units queued behind it go to another
    worker, and a fresh worker takes its place.
    A worker first says it is ready; workers that cannot get that far are no
    fault of any file, and stop the run with the reason (``RunError``).

    Workers come from a forkserver (see ``start_forkserver``): a fresh
    interpreter, so neither the parent's memory nor its TensorFlow is passed on.
    """

    GAP = 0.005
    MAX_DEPTH = 64
    START_TRIES = 3  # workers in a row dying before they are ready: give up

    def __init__(self, jobs: int, config: PrepareConfig, tokenizer: Tokenizer):
        import multiprocessing

        self.jobs, self.config = max(1, jobs), config
        self.tokenizer_config = tokenizer.to_dict()
        self.failed_starts = 0
        start_forkserver()
        self.ctx = multiprocessing.get_context("forkserver")

    def run(self, work, done) -> None:
        """Read every ``(task, path, part)`` of the iterable ``work``; call
        ``done(task, record, tokens)`` for each."""
        from multiprocessing.connection import wait

        pending, workers, woke = _Pending(work), [], 0.0
        try:
            while pending or any(w.sent for w in workers):
                self._dispatch(pending, workers)
                busy = [w for w in workers if w.sent]
                if not busy:  # every worker died while idle: start others
                    continue
                # Sleep out the gap, if the units each worker holds last that long.
                rest = min([woke + self.GAP - time.monotonic()] + [w.lasts() for w in busy])
                if rest > 0:
                    time.sleep(rest)
                nearest = min(w.since for w in busy) + self.config.timeout
                ready = wait([w.conn for w in busy], timeout=max(0.0, nearest - time.monotonic()))
                woke = time.monotonic()
                for w in busy:
                    if w.conn in ready:
                        self._collect(w, pending, workers, done)
                    elif time.monotonic() >= w.since + self.config.timeout:
                        self._time_out(w, pending, workers, done)
        finally:
            for w in workers:
                w.stop(gently=not w.sent)

    def _dispatch(self, pending: "_Pending", workers: list) -> None:
        while pending and len(workers) < self.jobs:
            workers.append(self._start())
        for w in list(workers):
            while pending and w.wants_more(self.GAP, self.MAX_DEPTH):
                try:
                    w.send(pending.peek())
                except OSError:
                    # It died. With units in hand, the results it sent before dying
                    # and its end-of-file are still to be read: _collect says which
                    # unit killed it.
                    if not w.sent:
                        self._lost(w, pending, workers, None)
                    break
                pending.popleft()

    def _collect(self, w: _Worker, pending: "_Pending", workers: list, done) -> None:
        """Take every result ``w`` has sent."""
        n = 0
        while w.sent and (n == 0 or select.select([w.conn], [], [], 0)[0]):  # (conn.poll is slower)
            try:
                message = w.conn.recv()
            except (EOFError, OSError):
                self._lost(w, pending, workers, done)
                return
            if not w.started:  # its first message: ready, or why it cannot be
                if message is not None:
                    raise RunError(f"worker processes cannot start: {message}")
                w.started, self.failed_starts = True, 0
                n += 1
                continue
            record, tokens, seconds = message
            done(w.sent.popleft()[0], record, tokens)
            w.took(seconds)
            n += 1
            if record["reason"] == OUT_OF_MEMORY:  # its heap may be past saving
                self._retire(w, pending, workers, None, None)
                return
        w.since = time.monotonic()

    def _lost(self, w: _Worker, pending: "_Pending", workers: list, done) -> None:
        """``w`` died: the unit it was reading (its oldest) "crashed"."""
        if w.started:
            self._retire(w, pending, workers, done, skipped(CRASHED, w.death()))
        else:
            self._failed_start(w, pending, workers, w.death())

    def _time_out(self, w: _Worker, pending: "_Pending", workers: list, done) -> None:
        limit = f"{self.config.timeout:g} s"
        if w.started:
            record = skipped(TIMED_OUT, f"reading took over {limit}")
            self._retire(w, pending, workers, done, dict(record, timeout=self.config.timeout))
        else:
            self._failed_start(w, pending, workers, f"not ready within {limit}")

    def _failed_start(self, w: _Worker, pending: "_Pending", workers: list, why: str) -> None:
        """``w`` never got ready: no unit's fault, so its units go to the next worker;
        ``START_TRIES`` such workers in a row stop the run."""
        self._retire(w, pending, workers, None, None)
        self.failed_starts += 1
        if self.failed_starts >= self.START_TRIES:
            raise RunError(f"worker processes cannot start: {why}")

    @staticmethod
    def _retire(w: _Worker, pending: "_Pending", workers: list, done, record) -> None:
        """Stop ``w``; its oldest unit gets ``record`` (if any), the rest are read again."""
        w.stop()
        workers.remove(w)
        if record is not None and w.sent:
            done(w.sent.popleft()[0], record, None)
        pending.extendleft(reversed(w.sent))
        w.sent.clear()

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_worker_main, daemon=True,
            args=(child, self.config.reader, self.tokenizer_config, self.config.memory_limit,
                  os.getpid()))
        process.start()
        child.close()  # so the worker's death reads as end-of-file here
        return _Worker(process, parent)


def _worker_main(conn, reader_spec: str, tokenizer_config: dict, memory_limit: int,
                 parent: int) -> None:
    """Read units sent over ``conn`` until told to stop (None) or the pipe closes
    (or the run it reads for is gone)."""
    import faulthandler

    faulthandler.disable()  # a forked worker's crash is reported by the parent, not dumped
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    die_with(parent)
    limit_memory(memory_limit)
    mute_output()
    try:
        from melody.errors import SkipFile

        reader = resolve(reader_spec)
        tokenizer = Tokenizer(TokenizerConfig.from_dict(tokenizer_config))
    except Exception as e:  # the same in every worker: the parent stops the run
        conn.send(f"{type(e).__name__}: {e}")
        return
    conn.send(None)  # ready
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        start = time.monotonic()
        record, tokens = read_unit(reader, tokenizer, SkipFile, *item)
        conn.send((record, tokens, time.monotonic() - start))
        if record["reason"] == OUT_OF_MEMORY:
            return
