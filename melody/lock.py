"""One writer per output folder: ``train`` and ``prepare`` hold ``OUT/.melody.lock``.

The lock file names the run that holds it (process id, host, command, start
time) and is held with an advisory lock (``flock``) for as long as the run
lives, so the kernel itself releases it when the process ends, however it
ends. A second run into the folder finds it held and is refused with one
line naming the first. A lock file that nobody holds is stale (its run was
killed, or the machine went down): it is taken over, with a note.

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with FolderLock(folder, "train"):
...     (folder / LOCK_FILE).exists()
True
>>> (folder / LOCK_FILE).exists()
False
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from melody.errors import UsageError

LOCK_FILE = ".melody.lock"


class FolderLock:
    """The lock of ``folder`` for the command ``what`` ("train", "prepare"); a context
    manager. UsageError when another run holds it, or the folder cannot be written."""

    def __init__(self, folder, what: str):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.took_over: dict | None = None  # the stale lock's record, when there was one

    def acquire(self) -> "FolderLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            while self.fd is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    other = _read(fd)
                    os.close(fd)
                    raise UsageError(f"{self.folder} is being written by another run "
                                     f"({describe(other)}); wait for it to end, or choose "
                                     "another folder") from None
                # The file may have been removed (its run ended) between our open and
                # our lock: then the lock is on a file nobody else will look at.
                if not self.path.exists() or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                    os.close(fd)
                    continue
                self.fd = fd
            previous = _read(self.fd)
            if previous:
                self.took_over = previous
                print(f"note: {self.path} was left by a run that is no longer running "
                      f"({describe(previous)}); taking it over", file=sys.stderr)
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.what,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as e:
            self.release()
            raise UsageError(f"cannot write in {self.folder} ({e.strerror or e}); "
                             "choose a folder you can write to") from None
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # before the unlock, so no later run sees it ours
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(record: dict | None) -> str:
    """'train, process 4242 on host, started 2026-01-01 10:00:00'."""
    if not record:
        return "a run that has not said who it is yet"
    return (f"{record.get('command', 'melody')}, process {record.get('pid')} on "
            f"{record.get('host')}, started {record.get('started')}")
