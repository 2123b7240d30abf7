"""Training the GRU on a dataset into a model folder.

- ``run``: ``train()``, a dataset -> a model folder (or an earlier run resumed);
- ``trainer``: one run's epochs, validation, early stopping and saving;
- ``windows``: the input pipeline of random, transposed windows;
- ``checkpoints``: what ``--resume`` continues from;
- ``strategy``: one device, or all local GPUs;
- ``logs``: TensorBoard scalars.
"""

from __future__ import annotations

from melody.training.run import summary_text, train
from melody.training.trainer import MIN_WINDOWS, Trainer
from melody.training.windows import WindowSampler, transpose_tables

__all__ = ["MIN_WINDOWS", "Trainer", "WindowSampler", "summary_text", "train", "transpose_tables"]
