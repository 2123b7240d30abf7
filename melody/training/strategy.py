"""Where training runs: one device, all local GPUs (``tf.distribute``), or every
device of several processes or machines (a JAX mesh, ``--strategy multi-worker``)."""

from __future__ import annotations

import contextlib

from melody.errors import UsageError

AXIS = "workers"  # the mesh axis every device of a multi-worker run lies on


class SingleDevice:
    """The default strategy's interface for backends without tf.distribute."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


class ProcessMesh:
    """The strategy of a multi-worker run: every device of every process on one mesh axis."""

    def __init__(self, processes: int):
        import jax
        import numpy as np

        self.mesh = jax.sharding.Mesh(np.array(jax.devices()), (AXIS,))
        self.num_replicas_in_sync = processes

    def scope(self):
        return contextlib.nullcontext()


def make_strategy(name: str, processes: int = 1):
    from melody.backend import backend_name, tensorflow

    backend = backend_name()
    if name == "multi-worker":  # the run has chosen JAX and met its processes
        return ProcessMesh(processes)
    if backend != "tensorflow":
        if name != "default":
            raise UsageError(f"--strategy {name} needs the tensorflow Keras backend, got "
                             f"KERAS_BACKEND={backend}; use --strategy default")
        return SingleDevice()
    tf = tensorflow()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
