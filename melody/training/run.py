"""``train``: a dataset -> a model folder, or an earlier run continued (``resume``)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from melody.config import (
    FINE_TUNE_LEARNING_RATE,
    GPU_BATCH_SIZE,
    MODELS,
    PRETRAINED,
    ModelConfig,
    TrainConfig,
    training_bytes,
)
from melody.data import is_dataset, resolve_data
from melody.errors import ModelFolderError, UsageError
from melody.fileio import sweep
from melody.lock import FolderLock
from melody.model import flops_per_token
from melody.modelcheck import MAX_CONFIG_BYTES, read_json
from melody.modelfolder import MODEL_FILE, MODEL_FOLDER_FILES, ModelFolder
from melody.training.checkpoints import (
    ARCHITECTURE_FLAGS,
    checkpoint_dir,
    flag_text,
    list_checkpoints,
)
from melody.training.cluster import Cluster, Watcher, join, native_log_aside, use_jax
from melody.training.multiworker import LostProcess, MultiWorkerTrainer
from melody.training.stopping import StopRequest
from melody.training.strategy import make_strategy
from melody.training.trainer import Trainer


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


def train(data=None, out=None, *, resume: bool = False, parent=None,
          allow_data_change: bool = False, **settings) -> dict:
    """Train a model on ``data`` into the folder ``out``; return the summary (the
    ``--json`` of ``train``).

    ``data`` is a prepared dataset, or a folder of music files (prepared on the
    fly); the default is the built-in folk corpus. ``out`` defaults to
    ``models/NAME`` of the dataset. ``settings`` are the fields of
    ``ModelConfig`` (``units``, ``layers``, ``embedding``, ``dropout``,
    ``reset_after``, ``lookback``) and ``TrainConfig`` (``epochs``, ``seq_len``,
    ``batch_size``, ``learning_rate``, ``patience``, ``steps_per_epoch``,
    ``seed``, ``strategy``). ``resume`` continues the run saved in ``out``
    (its architecture as saved), on the same data unless ``allow_data_change``.
    ``parent`` (a model folder, or "pretrained" for the shipped model)
    fine-tunes that model: its weights, tokenizer and architecture, a lower
    learning rate by default (``FINE_TUNE_LEARNING_RATE``), and its score on
    this data as the score to beat. One run at a time writes ``out``
    (``melody.lock``). The first Ctrl-C stops after the current batch and saves
    (then KeyboardInterrupt); the second aborts.

    ``strategy="multi-worker"`` is one process of a run across processes or
    machines (``melody.training.cluster`` says how they meet): it needs JAX,
    and makes it Keras's backend unless Keras was imported already. When
    another process of the run is lost, this process prints one line and
    ends (``os._exit``): JAX cannot go on without it.
    """
    if settings.get("strategy") != "multi-worker":
        return _train(data, out, resume, parent, allow_data_change, settings)
    cluster = Cluster.from_env()
    use_jax()  # before anything imports Keras
    watcher = Watcher()
    watcher.say(f"melody train: error: {cluster.describe()} could not start the run or meet "
                "the others (is the coordinator's port free on process 0, reachable from here, "
                "and did every process start?)")
    try:
        with native_log_aside():
            return _train(data, out, resume, parent, allow_data_change, settings, cluster, watcher)
    except LostProcess as e:
        watcher.say(f"melody train: error: {e}")
        os._exit(1)  # JAX's runtime waits for the lost process at exit; the watcher says why
    finally:
        watcher.finish()


def _train(data, out, resume: bool, parent, allow_data_change: bool, settings: dict,
           cluster: Cluster | None = None, watcher: Watcher | None = None) -> dict:
    from melody import corpus
    from melody.backend import has_gpu, tune_cpu_threads

    unknown = sorted(set(settings) - set(MODEL_SETTINGS) - set(TRAIN_SETTINGS))
    if unknown:
        raise TypeError(f"train() got unknown settings: {', '.join(unknown)}")
    if parent is not None and resume:
        raise UsageError("--from starts a run from another model and --resume continues the run "
                         "in --out (which keeps its parent): give one of them")
    given = {k: v for k, v in settings.items() if k in MODEL_SETTINGS}
    try:  # every setting checked before any work starts
        ModelConfig(vocab_size=1, **given)  # the dataset's vocabulary replaces it below
        train_cfg = TrainConfig(**{k: v for k, v in settings.items() if k in TRAIN_SETTINGS})
    except ValueError as e:
        raise UsageError(str(e))
    data = corpus.DATASET if data is None else data
    if cluster is not None and not is_dataset(Path(data)):  # processes would prepare it at once
        raise UsageError(f"--strategy multi-worker reads a prepared dataset, and {data} is not "
                         f"one: prepare it once (melody prepare {data} --out DIR) and give "
                         "--data DIR")
    dataset = resolve_data(data)
    out = Path(out) if out else MODELS / dataset.folder.name
    if parent is not None:
        parent = open_parent(parent, dataset, given)
        model_cfg = parent.model_config
        if "learning_rate" not in settings:
            train_cfg = dataclasses.replace(train_cfg, learning_rate=FINE_TUNE_LEARNING_RATE)
    else:
        saved = saved_architecture(out) if resume else None
        try:
            model_cfg = (dataclasses.replace(saved, **given) if saved is not None
                         else ModelConfig(vocab_size=dataset.tokenizer.vocab_size, **given))
        except ValueError as e:
            raise UsageError(str(e))
    check_memory(model_cfg, train_cfg)
    writer = cluster is None or cluster.is_chief  # of a multi-worker run, process 0 writes
    with FolderLock(out, "train") if writer else contextlib.nullcontext():
        if writer:  # holding the lock, every temporary in the folder is a killed run's
            for folder in (out, checkpoint_dir(out)):
                sweep(folder, everything=True)
        check_out_folder(out, resume)
        tune_cpu_threads()  # before TensorFlow runs anything
        if cluster is not None:
            join(cluster)  # every process has checked the folder before any writes to it
            watcher.say(f"melody train: error: {cluster.describe()} ended before the run did "
                        "(killed, or stopped by JAX when another process was lost); start every "
                        "process again with the same command and --resume")
        if "batch_size" not in settings and has_gpu():  # asked after join: it starts JAX
            train_cfg = dataclasses.replace(train_cfg, batch_size=GPU_BATCH_SIZE)
            check_memory(model_cfg, train_cfg)
        if cluster is None:
            trainer = Trainer(dataset, out, model_cfg, train_cfg, parent)
        else:
            trainer = MultiWorkerTrainer(dataset, out, model_cfg, train_cfg, parent, cluster)
        strategy = make_strategy(train_cfg.strategy, cluster.processes if cluster else 1)
        if resume:
            trainer.resume(strategy, allow_data_change)
        else:
            trainer.start(strategy)
        with StopRequest() as stop:
            ending = trainer.run(stop)
    if ending == "stopped":
        print(f"stopped during epoch {trainer.progress.epoch + 1}; saved {out}. Continue with: "
              f"{resume_command(data, out, train_cfg.strategy)}", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    return dict(train_result(trainer), ending=ending, epochs_without_improvement=trainer.progress.wait)


def resume_command(data, out: Path, strategy: str = "default") -> str:
    """The command that continues this run (its architecture is read from the checkpoint;
    a multi-worker run is continued by every process, with the same variables)."""
    where = "" if strategy == "default" else f" --strategy {strategy}"
    return f"python app.py train --data {data} --out {out}{where} --resume"


def saved_architecture(out: Path) -> ModelConfig | None:
    """The architecture of the newest checkpoint in ``out`` (None when none can be
    read: ``Trainer.resume`` then says why)."""
    for path in reversed(list_checkpoints(out)):
        try:
            saved = dict(read_json(path.with_suffix(".json"), MAX_CONFIG_BYTES)["model"])
            saved.setdefault("lookback", [])  # runs from before form context: none
            saved.setdefault("copy", False)  # or before the copy gate
            return ModelConfig.from_dict(saved)
        except (ModelFolderError, ValueError, KeyError, TypeError):
            continue
    return None


def open_parent(parent, dataset, given: dict) -> ModelFolder:
    """The model to fine-tune, checked against the data and the flags given: a
    fine-tuned model keeps its parent's tokenizer and architecture."""
    folder = ModelFolder(None if str(parent) == PRETRAINED else parent)
    if dataset.tokenizer != folder.tokenizer:
        raise UsageError(f"{dataset.folder} was tokenised with other settings than the model "
                         f"{folder.path}; prepare it again with this version of melody")
    changed = {k: v for k, v in given.items() if v != getattr(folder.model_config, k)}
    if changed:
        drop = " ".join(f"{ARCHITECTURE_FLAGS.get(k, k)} {flag_text(v)}" for k, v in changed.items())
        keep = ", ".join(f"{ARCHITECTURE_FLAGS.get(k, k)} {flag_text(getattr(folder.model_config, k))}"
                         for k in changed)
        raise UsageError(f"--from keeps the architecture of {folder.path} ({keep}); drop {drop}")
    return folder


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
        "weights_sha256": weights_sha256(trainer),
    }


def weights_sha256(trainer: Trainer) -> str:
    """SHA-256 of the weights the model folder holds (every process of a multi-worker
    run holds the same ones, so each reports the same digest)."""
    import hashlib

    digest = hashlib.sha256()
    weights = trainer.best_weights if trainer.best_weights is not None else trainer.model.get_weights()
    for w in weights:
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return digest.hexdigest()


def summary_text(result: dict) -> str:
    ending = result["ending"]
    why = {"done": "all epochs done",
           "early stop": f"no improvement for {result['epochs_without_improvement']} epochs"}[ending]
    best = "n/a" if result["val_bits_per_note"] is None else f"{result['val_bits_per_note']:.4f}"
    return (f"trained {result['model']} for {result['epochs']} epochs ({why}); best val bits/note "
            f"{best} at epoch {result['best_epoch']}; {result['tokens_per_second']:,.0f} tokens/s")
