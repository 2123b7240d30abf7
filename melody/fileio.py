"""Writing files so that nothing is ever half-written or overwritten by accident."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it into place on success.

    On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        keras_path = tmp.with_suffix(".keras")
        try:
            model.save(keras_path)
            os.replace(keras_path, tmp)
        finally:
            remove_written([keras_path])  # what a failed save left


def reserve_name(folder, stem: str, suffixes: tuple[str, ...]) -> str:
    """First free name ``stem``, ``stem-2``, ... for which no ``name+suffix`` exists.

    The ``name+suffixes[0]`` file is created empty and exclusively so two runs
    never pick the same name; a caller that fails before writing it calls
    ``remove_written`` so the empty file does not stay behind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}-{n}"
        if not any((folder / (name + s)).exists() for s in suffixes):
            try:
                fd = os.open(folder / (name + suffixes[0]), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                n += 1
                continue
            os.close(fd)
            return name
        n += 1


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
