"""Checkpoints (weights and optimizer state) that ``--resume`` continues from.

Every epoch leaves one in ``MODEL/checkpoints``, so a run loses at most one
epoch, even after a kill; a stop by Ctrl-C leaves an ``-stop`` one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from melody.errors import UsageError

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


def checkpoint_dir(out: Path) -> Path:
    return out / CHECKPOINTS


def _checkpoint_key(path: Path):
    # epoch-003.keras (end of epoch 3) sorts before epoch-003-stop.keras (stopped in epoch 4)
    return (int(path.stem.split("-")[1]), path.stem.endswith("-stop"))


def list_checkpoints(out: Path) -> list[Path]:
    return sorted(checkpoint_dir(out).glob("epoch-*.keras"), key=_checkpoint_key)


def save_checkpoint(out: Path, model, state: dict, stopped: bool = False) -> Path:
    """Write weights + optimizer state, then the state JSON that marks it complete."""
    from melody.fileio import atomic_save_keras, atomic_write_text

    folder = checkpoint_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"epoch-{state['epoch']:03d}" + ("-stop" if stopped else "")
    atomic_save_keras(model, folder / f"{stem}.keras")
    atomic_write_text(folder / f"{stem}.json", json.dumps(state, indent=1) + "\n")
    for old in list_checkpoints(out)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return folder / f"{stem}.keras"


def load_checkpoint(out: Path):
    """The newest checkpoint that loads, as (compiled model, state).

    A damaged one is renamed ``*.damaged`` with a warning and the one before
    is tried.
    """
    from melody.backend import keras

    for path in reversed(list_checkpoints(out)):
        try:
            state = json.loads(path.with_suffix(".json").read_text())
            model = keras().saving.load_model(path, safe_mode=True, compile=True)
            return model, state
        except Exception as e:  # a damaged zip, weights or JSON raise many types
            for p in (path, path.with_suffix(".json")):
                if p.exists():
                    p.replace(p.with_name(p.name + ".damaged"))
            print(f"warning: checkpoint {path} is damaged ({type(e).__name__}); "
                  "set aside as .damaged, trying the one before", file=sys.stderr)
    raise UsageError(f"no usable checkpoint in {checkpoint_dir(out)}; train again without --resume")
