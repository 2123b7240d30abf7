"""``train``: a dataset -> a model folder, or an earlier run continued (``resume``)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from melody.config import MODELS, ModelConfig, TrainConfig, training_bytes
from melody.data import resolve_data
from melody.errors import UsageError
from melody.fileio import sweep
from melody.lock import FolderLock
from melody.model import flops_per_token
from melody.modelfolder import MODEL_FILE, MODEL_FOLDER_FILES
from melody.training.checkpoints import (
    ARCHITECTURE_FLAGS,
    checkpoint_dir,
    list_checkpoints,
)
from melody.training.strategy import make_strategy
from melody.training.trainer import StopRequest, Trainer


def check_out_folder(out: Path, resume: bool) -> None:
    has_run = (out / MODEL_FILE).exists() or bool(list_checkpoints(out))
    if resume and not list_checkpoints(out):
        raise UsageError(f"--resume: no checkpoints in {checkpoint_dir(out)}; drop --resume to start")
    if not resume and has_run:
        raise UsageError(f"--out {out} already holds a model; add --resume to continue it "
                         "or choose another --out")
    if not resume:  # train never replaces a file it did not make
        ours = [name for name in MODEL_FOLDER_FILES if os.path.lexists(out / name)]
        if ours:
            raise UsageError(f"--out {out} holds {ours[0]}, which is not from a run of train "
                             "and would be replaced; choose another --out")


def check_memory(model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Refuse settings whose training step cannot fit in this machine's memory."""
    need = training_bytes(model_cfg, train_cfg)
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise UsageError(f"--batch-size {train_cfg.batch_size} x --seq-len {train_cfg.seq_len} "
                         f"with --units {model_cfg.units} x --layers {model_cfg.layers} needs "
                         f"about {need / 2**30:.1f} GB to train, more than this machine's "
                         f"{have / 2**30:.1f} GB; lower --batch-size or --seq-len")


MODEL_SETTINGS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size")
TRAIN_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def train(data=None, out=None, *, resume: bool = False, allow_data_change: bool = False,
          **settings) -> dict:
    """Train a model on ``data`` into the folder ``out``; return the summary (the
    ``--json`` of ``train``).

    ``data`` is a prepared dataset, or a folder of music files (prepared on the
    fly); the default is the built-in folk corpus. ``out`` defaults to
    ``models/NAME`` of the dataset. ``settings`` are the fields of
    ``ModelConfig`` (``units``, ``layers``, ``embedding``, ``dropout``,
    ``reset_after``) and ``TrainConfig`` (``epochs``, ``seq_len``,
    ``batch_size``, ``learning_rate``, ``patience``, ``steps_per_epoch``,
    ``seed``, ``strategy``). ``resume`` continues the run saved in ``out``, on
    the same data unless ``allow_data_change``. One run at a time writes
    ``out`` (``melody.lock``). The first Ctrl-C stops after the current batch
    and saves (then KeyboardInterrupt); the second aborts.
    """
    from melody import corpus
    from melody.backend import tune_cpu_threads

    unknown = sorted(set(settings) - set(MODEL_SETTINGS) - set(TRAIN_SETTINGS))
    if unknown:
        raise TypeError(f"train() got unknown settings: {', '.join(unknown)}")
    try:  # every setting checked before any work starts
        model_cfg = ModelConfig(vocab_size=1,  # the dataset's vocabulary replaces it below
                                **{k: v for k, v in settings.items() if k in MODEL_SETTINGS})
        train_cfg = TrainConfig(**{k: v for k, v in settings.items() if k in TRAIN_SETTINGS})
    except ValueError as e:
        raise UsageError(str(e))
    data = corpus.DATASET if data is None else data
    dataset = resolve_data(data)
    out = Path(out) if out else MODELS / dataset.folder.name
    try:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=dataset.tokenizer.vocab_size)
    except ValueError as e:
        raise UsageError(str(e))
    check_memory(model_cfg, train_cfg)
    with FolderLock(out, "train"):
        # Holding the lock, every temporary in the folder is a killed run's.
        for folder in (out, checkpoint_dir(out)):
            sweep(folder, everything=True)
        check_out_folder(out, resume)
        tune_cpu_threads()  # before TensorFlow runs anything
        trainer = Trainer(dataset, out, model_cfg, train_cfg)
        strategy = make_strategy(train_cfg.strategy)
        if resume:
            trainer.resume(strategy, allow_data_change)
        else:
            trainer.start(strategy)
        with StopRequest() as stop:
            ending = trainer.run(stop)
    if ending == "stopped":
        print(f"stopped during epoch {trainer.progress.epoch + 1}; saved {out}. Continue with: "
              f"{resume_command(data, out, model_cfg)}", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    return dict(train_result(trainer), ending=ending, epochs_without_improvement=trainer.progress.wait)


def resume_command(data, out: Path, model_cfg: ModelConfig) -> str:
    """The command that continues this run: the architecture flags that differ from the defaults."""
    words = ["python app.py train", f"--data {data}", f"--out {out}", "--resume"]
    for key, flag in ARCHITECTURE_FLAGS.items():
        value = getattr(model_cfg, key)
        if value != getattr(ModelConfig, key):
            words.append(f"{flag} {str(value).lower() if isinstance(value, bool) else value}")
    return " ".join(words)


def train_result(trainer: Trainer) -> dict:
    p = trainer.progress
    metrics = trainer.folder_config()["metrics"]
    return {
        "model": str(trainer.out),
        "epochs": p.epoch,
        "best_epoch": p.best_epoch,
        "params": int(trainer.model.count_params()),
        "val_bits_per_note": p.best,
        "val_bits_per_token": metrics["val_bits_per_token"],
        "val_pitch_bits_per_note": metrics["val_pitch_bits_per_note"],
        "tokens_per_second": trainer.tokens_per_second,
        "train_seconds": p.train_seconds,
        "flops_per_token": flops_per_token(trainer.model_cfg),
        "data": str(trainer.dataset.folder),
        "strategy": trainer.cfg.strategy,
        "replicas": trainer.replicas,
    }


def summary_text(result: dict) -> str:
    ending = result["ending"]
    why = {"done": "all epochs done",
           "early stop": f"no improvement for {result['epochs_without_improvement']} epochs"}[ending]
    best = "n/a" if result["val_bits_per_note"] is None else f"{result['val_bits_per_note']:.4f}"
    return (f"trained {result['model']} for {result['epochs']} epochs ({why}); best val bits/note "
            f"{best} at epoch {result['best_epoch']}; {result['tokens_per_second']:,.0f} tokens/s")
