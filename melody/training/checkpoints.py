"""Checkpoints (weights and optimizer state) that ``--resume`` continues from.

Every epoch leaves one in ``MODEL/checkpoints``, so a run loses at most one
epoch, even after a kill; a stop by Ctrl-C leaves an ``-stop`` one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from melody.config import ModelConfig
from melody.errors import ModelFolderError, UsageError
from melody.model import copy_mixture_class
from melody.modelcheck import (
    MAX_CONFIG_BYTES,
    WEIGHTS,
    check_zip,
    read_json,
    read_member,
    weights_limit,
)
from melody.sample.weights import check_values

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
ARCHITECTURE_FLAGS = {"units": "--units", "layers": "--layers", "embedding": "--embedding",
                      "dropout": "--dropout", "reset_after": "--reset-after",
                      "lookback": "--lookback"}


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


def load_checkpoint(out: Path, model_cfg: ModelConfig):
    """The newest checkpoint that loads, as (compiled model, state).

    Its state must be of a model of ``model_cfg`` (else UsageError: the flags
    differ), and its file no larger than such a model's weights and optimizer
    state, checked before Keras unpacks anything. A damaged one is renamed
    ``*.damaged`` with a warning and the one before is tried.
    """
    from melody.backend import keras

    for path in reversed(list_checkpoints(out)):
        try:
            state = read_json(path.with_suffix(".json"), MAX_CONFIG_BYTES)
            if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
                raise ValueError("its state has no model settings")
        except (ModelFolderError, ValueError) as e:
            _set_aside(path, e)
            continue
        check_same_architecture(state["model"], model_cfg)
        try:
            check_zip(path, weights_limit(model_cfg.params, optimizer=True))
            check_values(path, read_member(path, WEIGHTS), 3 * model_cfg.params + 2**16)
            copy_mixture_class()  # registered, so that Keras finds the copy gate's layer
            model = keras().saving.load_model(path, safe_mode=True, compile=True)
            return model, state
        except Exception as e:  # a damaged zip, weights or JSON raise many types
            _set_aside(path, e)
    raise UsageError(f"no usable checkpoint in {checkpoint_dir(out)}; train again without --resume")


def _set_aside(path: Path, error: Exception) -> None:
    for p in (path, path.with_suffix(".json")):
        if p.exists():
            p.replace(p.with_name(p.name + ".damaged"))
    print(f"warning: checkpoint {path} is damaged ({type(error).__name__}); "
          "set aside as .damaged, trying the one before", file=sys.stderr)


def flag_text(value) -> str:
    """An architecture setting as its flag takes it: true/false, 1,2,4,8 or none."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def check_same_architecture(saved: dict, model_cfg: ModelConfig) -> None:
    given = model_cfg.to_dict()
    saved = dict(saved)
    saved["lookback"] = tuple(saved.get("lookback", ()))  # runs from before form context: none
    diffs = [f"{flag} {flag_text(saved.get(k))}"
             for k, flag in ARCHITECTURE_FLAGS.items() if saved.get(k) != given[k]]
    if saved.get("vocab_size") != given["vocab_size"]:
        raise UsageError("--resume: the dataset's vocabulary differs from the saved model's")
    if diffs:
        raise UsageError("--resume: the saved model was trained with different architecture "
                         f"flags; resume with {' '.join(diffs)}")
