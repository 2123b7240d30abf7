"""The processes of a ``--strategy multi-worker`` run: who they are, how they meet,
and what each says when the run is lost.

Every process gets the same command and learns its place from Keras's
distribution variables: ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator,
process 0, as host:port; or every process's address, the coordinator's first),
``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``.
They meet through ``keras.distribution.initialize`` on the JAX backend, with
Gloo for the collectives between CPUs.

When one process dies, the others learn it at their next collective (a Gloo
connection reset) or from JAX's coordination service, which ends them from a
native thread with a page of log. So each process starts a watcher beside it
(a small Python process reading a pipe): when the trainer ends without saying
it finished, the watcher prints the one line the trainer left it, and JAX's
native log goes to a file nobody reads unless ``TF_CPP_MIN_LOG_LEVEL`` is set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from melody.config import MAX_PROCESSES
from melody.errors import UsageError

ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
INSTALL = "pip install 'melody[jax]'"

# The watcher prints the last line it was sent unless the last one is "ok".
WATCHER = ("import os, sys\n"
           "last = b''\n"
           "for line in sys.stdin.buffer:\n"
           "    last = line\n"
           "if last.strip() != b'ok':\n"
           "    os.write(2, last)\n")


@dataclass(frozen=True)
class Cluster:
    """One process's view of the run: the coordinator, how many, and which one it is.

    >>> Cluster.from_env({ADDRESSES: "10.0.0.1:1234", PROCESSES: "2", PROCESS_ID: "1"})
    Cluster(coordinator='10.0.0.1:1234', processes=2, rank=1)
    """

    coordinator: str
    processes: int
    rank: int

    @property
    def is_chief(self) -> bool:
        """Process 0 writes the checkpoints and the model folder; the others only train."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ=os.environ) -> "Cluster":
        missing = [name for name in (ADDRESSES, PROCESSES, PROCESS_ID) if not environ.get(name)]
        if missing:
            raise UsageError(f"--strategy multi-worker needs {', '.join(missing)} set on every "
                             f"process ({ADDRESSES}=HOST:PORT of process 0, {PROCESSES}=N, "
                             f"{PROCESS_ID}=0..N-1)")
        processes = _whole(environ, PROCESSES, 1, MAX_PROCESSES)
        rank = _whole(environ, PROCESS_ID, 0, processes - 1)
        addresses = [a.strip() for a in environ[ADDRESSES].split(",")]
        if len(addresses) > 1 and len(addresses) != processes:
            raise UsageError(f"{ADDRESSES} lists {len(addresses)} addresses but {PROCESSES} is "
                             f"{processes}: give one per process, or only the coordinator's")
        host, _, port = addresses[0].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"{ADDRESSES} must start with HOST:PORT (port 1..65535) of "
                             f"process 0, got {addresses[0]!r}")
        return cls(addresses[0], processes, rank)

    def describe(self) -> str:
        return f"process {self.rank} of {self.processes} (coordinator {self.coordinator})"


def _whole(environ, name: str, low: int, high: int) -> int:
    text = environ[name].strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"{name} must be a whole number in {low}..{high}, got {text!r}")
    return int(text)


def use_jax() -> None:
    """Make JAX Keras's backend, before Keras is imported; a UsageError that says what
    to do when JAX is missing or Keras already runs on another backend."""
    if importlib.util.find_spec("jax") is None:
        raise UsageError(f"--strategy multi-worker trains on JAX, which is not installed: {INSTALL}")
    chosen = os.environ.get("KERAS_BACKEND", "jax")
    if "keras" in sys.modules:
        chosen = sys.modules["keras"].backend.backend()
    if chosen != "jax":
        raise UsageError(f"--strategy multi-worker trains on the jax Keras backend, but this "
                         f"process has {chosen}: unset KERAS_BACKEND or set KERAS_BACKEND=jax")
    os.environ["KERAS_BACKEND"] = "jax"


def join(cluster: Cluster) -> None:
    """Meet the other processes (each waits here until all have come)."""
    import jax

    from melody.backend import keras

    k = keras()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    k.distribution.initialize(cluster.coordinator, cluster.processes, cluster.rank)


class Watcher:
    """A process beside this one that prints ``say``'s last line if this one ends
    without ``finish`` (killed, or ended by JAX when another process died)."""

    def __init__(self):
        self._proc = subprocess.Popen([sys.executable, "-c", WATCHER], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL)

    def say(self, line: str) -> None:
        """The line printed if this process ends abruptly from now on."""
        with contextlib.suppress(OSError):
            self._proc.stdin.write(line.replace("\n", " ").encode() + b"\n")
            self._proc.stdin.flush()

    def finish(self) -> None:
        self.say("ok")
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)


@contextlib.contextmanager
def native_log_aside():
    """Send file descriptors 1 and 2 (where JAX's, XLA's and Gloo's native code log)
    to a temporary file, while Python's ``sys.stdout`` and ``sys.stderr`` keep
    writing where they did."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3":  # the user asked for the native log
        yield
        return
    streams = {1: "stdout", 2: "stderr"}
    saved = {}
    with tempfile.TemporaryFile() as sink:
        for fd, name in streams.items():
            stream = getattr(sys, name)
            stream.flush()
            saved[fd] = (os.dup(fd), stream)
            try:  # where the stream writes now (the command line sends stdout to stderr)
                target = stream.fileno()
            except (AttributeError, OSError, ValueError):
                target = fd
            setattr(sys, name, io.TextIOWrapper(
                os.fdopen(os.dup(target), "wb", buffering=0), encoding=stream.encoding,
                errors="replace", line_buffering=True, write_through=True))
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            for fd, name in streams.items():
                kept, stream = saved[fd]
                getattr(sys, name).close()
                setattr(sys, name, stream)
                os.dup2(kept, fd)
                os.close(kept)


def lost(cluster: Cluster, error: Exception) -> str:
    """The one line for a run whose collective failed: another process is gone."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return (f"{cluster.describe()}: another process of the run is gone ({reason[:160]}); "
            "start every process again with the same command and --resume")
