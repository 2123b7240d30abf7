"""One call at a time in a worker process of our own, under a deadline and a memory cap.

``render`` reads each file through a ``Worker`` as ``prepare`` reads each file
through its pool (``melody.data.pool``, which shares the cap and the muting
here): a file that hangs, blows up the memory or crashes the process costs
that file, never the run or the machine. Workers come from a forkserver (a
fresh interpreter), so they inherit neither the parent's memory nor any
TensorFlow it loaded.
"""

from __future__ import annotations

import os
import signal
import time

from melody.errors import RunError


class WorkerLost(Exception):
    """The call did not come back: it ran past its deadline, or its worker died."""


def start_forkserver(preload) -> None:
    """Start the forkserver now, the modules ``preload`` names imported in it (only
    the first call in a process decides them)."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    forkserver.ensure_running()


class Worker:
    """Calls of the function ``spec`` ("module:function"), each within ``timeout``
    seconds, in a process whose address space may grow by ``memory_limit``
    bytes. Its exceptions come back as ValueError (with its message), OSError
    (errno, text and file name) or RuntimeError ("Type: message"); a call that
    does not come back raises WorkerLost, and the next call gets a fresh worker.
    """

    def __init__(self, spec: str, timeout: float, memory_limit: int, preload=()):
        self.spec, self.timeout, self.memory_limit = spec, timeout, memory_limit
        self.preload = list(preload)  # imported before the worker says it is ready
        self.process = self.conn = None

    def call(self, *args):
        from multiprocessing.connection import wait

        if self.process is None:
            self._start()
        try:
            self.conn.send(args)
            deadline = time.monotonic() + self.timeout
            while not wait([self.conn], timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise WorkerLost(f"took over {self.timeout:g} s (the time limit)")
            reply = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            why = self._death()
            self.stop()
            raise WorkerLost(why) from None
        except BaseException:
            self.stop()  # past the deadline, or Ctrl-C: the worker goes, mid-call
            raise
        kind, *rest = reply
        if kind == "ok":
            return rest[0]
        if kind == "memory":
            self.stop()
            raise WorkerLost(f"out of memory (over its cap of {self.memory_limit / 2**20:.0f} MB)")
        if kind == "value":
            raise ValueError(rest[0])
        if kind == "os":
            raise OSError(*rest)
        raise RuntimeError(rest[0])

    def _start(self) -> None:
        import multiprocessing

        start_forkserver([__name__, *self.preload])
        ctx = multiprocessing.get_context("forkserver")
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=_main, daemon=True,
                                   args=(child, self.spec, self.memory_limit, self.preload,
                                         os.getpid()))
        self.process.start()
        child.close()  # so the worker's death reads as end-of-file here
        self.conn = parent
        try:
            ready = self.conn.poll(60) and self.conn.recv() is None
        except (EOFError, OSError):
            ready = False
        if not ready:  # no file's fault: every worker would fail the same way
            why = self._death() if not self.process.is_alive() else "not ready within 60 s"
            self.stop()
            raise RunError(f"worker processes cannot start: {why.replace('crashed ', '')}")

    def _death(self) -> str:
        self.process.join(5)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"crashed (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f"crashed (killed by signal {-code})"
        return f"crashed (the worker exited with code {code})"

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()
        self.process = self.conn = None

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _main(conn, spec: str, memory_limit: int, preload, parent: int) -> None:
    import faulthandler
    import importlib

    faulthandler.disable()  # a worker's crash is reported by the parent, not dumped
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    die_with(parent)
    mute_output()
    module, _, name = spec.partition(":")
    function = getattr(importlib.import_module(module), name)
    for library in preload:  # before the clock of the first call starts
        importlib.import_module(library)
    limit_memory(memory_limit)
    conn.send(None)  # ready
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", function(*args))
        except MemoryError:
            reply = ("memory",)
        except ValueError as e:
            reply = ("value", str(e))
        except OSError as e:
            reply = ("os", e.errno, e.strerror or str(e), e.filename)
        except Exception as e:  # a library's bug costs this call, and says what it was
            reply = ("error", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("memory",))
        if reply[0] == "memory":
            return  # its heap may be past saving


def die_with(pid: int) -> None:
    """End this worker when process ``pid`` (the run it works for) is gone, even in
    the middle of a call: a run killed by SIGKILL cannot stop its workers, and
    their forkserver parent may outlive it."""
    import threading

    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def limit_memory(extra: int) -> None:
    """Cap this process's address space at its present size plus ``extra`` bytes."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + extra, size + extra))
    except (OSError, ValueError, ImportError):
        pass  # not Linux: no cap, the deadline still holds


def mute_output() -> None:
    """music21 and friends print warnings that would tear the progress bar."""
    import warnings

    warnings.simplefilter("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
