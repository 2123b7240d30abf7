"""Writing files so that nothing is ever half-written or overwritten by accident.

Every temporary file is hidden and tagged with its process (``.NAME.TAG-XXXX.tmp``,
``process_tag``), so that ``sweep`` can tell the temporaries of runs that are
gone from those of runs still writing. Outputs that belong together (a melody's
MIDI file, sidecar and extras) are an ``OutputSet``: written under temporary
names, renamed into place together at the end, never over a file that exists.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

# A temporary of ours: ".NAME.HOST-PID-XXXX.tmp" (and Keras's ".keras" twin of one).
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]*\.tmp(\.keras)?$")
RESERVED = ".reserved"  # the suffix of an OutputSet's reservation file


def process_tag() -> str:
    """This process, as temporary file names carry it: a hash of the host name and the pid."""
    return f"{_host_hash()}-{os.getpid()}"


def _host_hash() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def atomic_path(path, replace: bool = True):
    """Yield a temporary path beside ``path``; rename it into place on success.

    On any error the temporary file is removed and ``path`` is untouched.
    ``replace=False``: a file that exists at ``path`` by then is kept and
    FileExistsError raised (for outputs a user named, which are never replaced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{process_tag()}-", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield Path(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            move_new(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def move_new(source, target) -> None:
    """Rename ``source`` to ``target``, which must not exist (FileExistsError if it does):
    a hard link fails rather than replace, where ``os.rename`` would replace."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists; never replaced", str(target)) from None
    except OSError as e:  # a file system without hard links: check, then rename
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK,
                           errno.EXDEV, errno.ENOSYS):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists; never replaced", str(target)) from None
        os.rename(source, target)
        return
    os.unlink(source)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs):
    """Yield a file open for writing that becomes ``path`` only once written whole.

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_open(folder / "a.bin") as f:
    ...     _ = f.write(b"whole")
    >>> [p.name for p in folder.iterdir()], (folder / "a.bin").read_bytes()
    (['a.bin'], b'whole')
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_keras(model, path) -> None:
    """``model.save(path)`` whole or not at all (Keras insists on a ``.keras`` name)."""
    with atomic_path(path) as tmp:
        keras_path = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(keras_path)
            os.replace(keras_path, tmp)
        finally:
            remove_written([keras_path])  # what a failed save left


class OutputSet:
    """Files ``NAME + suffix`` that appear together or not at all.

    ``NAME`` is the first of ``stem``, ``stem-2``, ... for which no file with
    any of ``taken`` suffixes exists and no other run holds a reservation
    (``.NAME.reserved``, made exclusively and held with an advisory lock, so
    concurrent runs never pick the same name). Write each file to
    ``temp(suffix)``; ``commit`` renames them into place in the order of
    ``suffixes`` (put the file that says the set is whole, a sidecar, last),
    never over a file that exists. ``discard`` (also on an error inside
    ``with``) removes what was written. A run killed before either leaves its
    reservation unlocked, and the next ``sweep`` of the folder finishes the
    discard.

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with OutputSet(folder, "tune", (".mid", ".json")) as s:
    ...     _ = s.temp(".mid").write_bytes(b"MThd"), s.temp(".json").write_text("{}")
    >>> sorted(p.name for p in folder.iterdir())
    ['tune.json', 'tune.mid']
    """

    def __init__(self, folder, stem: str, suffixes, taken=None):
        self.folder, self.suffixes = Path(folder), tuple(suffixes)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name, self._lock = _reserve(self.folder, stem, tuple(taken or self.suffixes),
                                         self.suffixes)
        self._committed: list[Path] = []

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.name}{suffix}"

    def temp(self, suffix: str) -> Path:
        return self.folder / f".{self.name}{suffix}.tmp"

    def commit(self) -> None:
        try:
            for suffix in self.suffixes:
                if self.temp(suffix).exists():
                    move_new(self.temp(suffix), self.path(suffix))
                    self._committed.append(self.path(suffix))
        except BaseException:
            self.discard()
            raise
        self._release()

    def discard(self) -> None:
        remove_written([self.temp(s) for s in self.suffixes] + self._committed)
        self._committed = []
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            remove_written([self.folder / f".{self.name}{RESERVED}"])
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def _reserve(folder: Path, stem: str, taken: tuple, suffixes: tuple) -> tuple[str, int]:
    """The first free name and the locked descriptor of its reservation file."""
    import fcntl

    record = json.dumps({"pid": os.getpid(), "suffixes": list(suffixes)}).encode()
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}-{n}"
        n += 1
        if any(os.path.lexists(folder / (name + s)) for s in taken):
            continue
        # Locked before it has its name, so no sweep ever sees it unlocked while we live.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{process_tag()}-", suffix=".tmp", dir=folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, record)
            try:
                os.link(tmp, folder / f".{name}{RESERVED}")
            except FileExistsError:  # another run holds this name
                os.close(fd)
                continue
        finally:
            os.unlink(tmp)
        # A run that finished this name between our look and our link has its files in place.
        if any(os.path.lexists(folder / (name + s)) for s in taken):
            remove_written([folder / f".{name}{RESERVED}"])
            os.close(fd)
            continue
        return name, fd


def sweep(folder, everything: bool = False) -> list[str]:
    """Remove from ``folder`` what runs that are gone left there: their tagged
    temporaries and the sets they did not finish; with ``everything`` (the
    caller holds the folder's lock, so no other run writes there) every
    temporary of ours, and prepare's staging folders. Returns the names removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = _host_hash()
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        if name.endswith(RESERVED) and entry.is_file(follow_symlinks=False):
            removed += _sweep_set(Path(folder), name)
            continue
        m = _TEMPORARY.match(name)
        stale = m is not None and m["host"] == host and not pid_alive(int(m["pid"]))
        if everything and name.endswith((".tmp", ".tmp.keras")):
            stale = True
        if stale and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(name)
        elif stale:
            remove_written([entry.path])
            removed.append(name)
    return removed


def _sweep_set(folder: Path, reservation: str) -> list[str]:
    """The set of a reservation nobody holds any more: finished (its last file is in
    place), or not (its files, temporary or in place, are removed)."""
    import fcntl

    path = folder / reservation
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []  # its run is still writing
        if not os.path.lexists(path) or os.stat(path).st_ino != os.fstat(fd).st_ino:
            return []  # another sweep got there first
        try:
            record = json.loads(os.read(fd, 65536))
            suffixes = record["suffixes"]
            int(record["pid"])
            if not all(isinstance(s, str) and re.fullmatch(r"\.[a-z0-9]{1,16}", s)
                       for s in suffixes):
                raise ValueError("suffixes")
        except (ValueError, KeyError, TypeError):
            return []  # not one of ours: never touched
        name = reservation[1:-len(RESERVED)]
        removed = []
        if suffixes and not os.path.lexists(folder / (name + suffixes[-1])):
            for suffix in suffixes:
                for p in (folder / (name + suffix), folder / f".{name}{suffix}.tmp"):
                    if os.path.lexists(p):
                        remove_written([p])
                        removed.append(p.name)
        else:
            remove_written([folder / f".{name}{s}.tmp" for s in suffixes])
        remove_written([path])
        return removed + [reservation]
    finally:
        os.close(fd)


def write_npy(f, dtype, length: int, blocks) -> None:
    """A 1-D ``.npy`` of ``length`` values of ``dtype`` into the open file ``f``,
    its data from ``blocks`` (arrays, or bytes already of ``dtype``) written as
    they come, so the whole array never has to be in memory."""
    import numpy as np

    dtype = np.dtype(dtype)
    np.lib.format.write_array_header_1_0(f, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)})
    written = 0
    for block in blocks:
        data = block if isinstance(block, bytes) else np.asarray(block, dtype).tobytes()
        f.write(data)
        written += len(data)
    if written != length * dtype.itemsize:
        raise ValueError(f".npy of {length} values got {written // dtype.itemsize}")


def remove_written(paths) -> None:
    """Remove the files a failed step wrote (best effort: the step's error matters more)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
