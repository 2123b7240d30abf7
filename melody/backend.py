"""Import Keras/TensorFlow only when needed, and without their start-up noise."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def usable_cores() -> int:
    """CPU cores this process may run on (on macOS, which cannot say, all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ and Python start-up logs (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextlib.contextmanager
def _stderr_muted():
    """Send file descriptor 2 to a temporary file; replay it if the import fails.

    TensorFlow's native code logs before any Python setting can stop it.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def keras():
    """The keras module, imported quietly."""
    # A user who sets TF_CPP_MIN_LOG_LEVEL wants to see TensorFlow's own log.
    muted = _stderr_muted() if "TF_CPP_MIN_LOG_LEVEL" not in os.environ else contextlib.nullcontext()
    quiet_tensorflow()
    import logging

    if "keras" not in sys.modules:
        with muted:
            if os.environ["KERAS_BACKEND"] == "tensorflow":
                import tensorflow  # noqa: F401  (its native start-up logs go here)
            import keras  # noqa: F401
    import keras as _keras

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return _keras


def tensorflow():
    """The tensorflow module, imported quietly."""
    keras()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def tune_cpu_threads() -> bool:
    """For training on CPUs only: each op on half the cores, two ops at a time.

    A GRU step's matmuls are small (batch x units), so spreading each one over
    every core costs more in synchronisation than it gains, while TensorFlow
    can run independent ops side by side (the next steps' input projections
    beside the recurrent chain, weight gradients beside the backward pass). On
    the 2-core machine of ``bench/README.md`` this trains the default model
    1.3 times faster than TensorFlow's default (an op on every core, as many
    ops at a time as cores). Left alone where a GPU trains, where the user set
    TF_NUM_INTRAOP_THREADS or TF_NUM_INTEROP_THREADS, and once TensorFlow has
    started running (it cannot change then). Returns whether it applied.
    """
    if {"TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"} & set(os.environ):
        return False
    if backend_name() != "tensorflow":
        return False
    tf = tensorflow()
    if has_gpu():
        return False
    try:
        cores = usable_cores()
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // 2))
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # TensorFlow is already running
        return False
    return True


def has_gpu() -> bool:
    """Whether Keras's backend has a GPU to run on (for JAX: after it has met its
    processes, since asking starts its devices)."""
    name = backend_name()
    if name == "tensorflow":
        return bool(tensorflow().config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if name == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def backend_name() -> str:
    """Keras's backend: "tensorflow" unless KERAS_BACKEND chose another (e.g. "torch")."""
    return keras().backend.backend()
