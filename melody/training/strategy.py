"""Where training runs: one device, or all local GPUs (``tf.distribute``)."""

from __future__ import annotations

import contextlib

from melody.errors import UsageError


class SingleDevice:
    """The default strategy's interface for backends without tf.distribute."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def make_strategy(name: str):
    from melody.backend import backend_name, tensorflow

    backend = backend_name()
    if backend != "tensorflow":
        if name != "default":
            raise UsageError(f"--strategy {name} needs the tensorflow Keras backend, got "
                             f"KERAS_BACKEND={backend}; use --strategy default")
        return SingleDevice()
    tf = tensorflow()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        # Keras 3's fit hands PerReplica batches to a tf.function that cannot
        # take them under MultiWorkerMirroredStrategy (checked with Keras 3.15,
        # TF 2.21): https://github.com/keras-team/keras/issues/20585
        raise UsageError(
            "--strategy multi-worker does not work with Keras 3 + TensorFlow "
            "(https://github.com/keras-team/keras/issues/20585); use default or mirrored"
        )
    return tf.distribute.get_strategy()
