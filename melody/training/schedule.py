"""The learning rate over a run: cut on a plateau (``end_epoch``), or warm-up and a cosine.

With ``schedule="cosine"`` the rate is a function of the optimizer's step alone,
so a resumed run picks it up where it was: it rises linearly over
``warmup_steps``, then falls along half a cosine to ``lr_floor`` times the
base rate at the last step of the epoch budget.

>>> from melody.config import TrainConfig
>>> cfg = TrainConfig(learning_rate=1.0, schedule="cosine", warmup_steps=10, lr_floor=0.1)
>>> [round(cosine_rate(cfg, s, 110), 3) for s in (0, 9, 10, 60, 110, 200)]
[0.1, 1.0, 1.0, 0.55, 0.1, 0.1]
"""

from __future__ import annotations

import math

from melody.config import TrainConfig


def cosine_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at optimizer step ``step`` (from 0) of ``total_steps``."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    done = min((step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1), 1.0)
    return cfg.learning_rate * (cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * done)))


def schedule_callback(cfg: TrainConfig, total_steps: int):
    """A Keras callback that sets the cosine schedule's rate before every batch."""
    from melody.backend import keras

    k = keras()

    class CosineSchedule(k.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            step = int(k.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.model.optimizer.learning_rate = cosine_rate(cfg, step, total_steps)

    return CosineSchedule()
