"""Stopping a run by hand: the first Ctrl-C (SIGINT) stops at the end of the current
batch, which then saves; the second aborts."""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """The first SIGINT asks for a stop at the end of the current batch; the second aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch and saving (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def stop_callback(stop: StopRequest):
    from melody.backend import keras

    class StopAtBatchEnd(keras().callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if stop.requested:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            # fit runs one epoch per call (validation and saving happen between
            # calls); epochs= is the run's total so the progress bar counts right.
            self.model.stop_training = True

    return StopAtBatchEnd()
