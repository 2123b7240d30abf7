"""One training run: epochs of ``fit``, a validation score after each, saving as it goes.

Training windows of ``seq_len + 1`` tokens start at random places in the
memory-mapped train split and are transposed by a random interval (the
validation split keeps its keys). Each epoch ends with a score of the full
validation pieces in bits per note; the best weights are kept, the learning
rate is cut on a plateau, and training stops after ``patience`` epochs without
improvement.

Every epoch leaves a checkpoint (weights and optimizer state) in
``MODEL/checkpoints`` so ``--resume`` loses at most one epoch, even after a
kill. The first Ctrl-C stops at the end of the current batch and saves; the
second aborts.

Under ``KERAS_BACKEND=torch`` (no TensorFlow installed) the same run feeds
``fit`` from a plain generator, logs scalars to ``MODEL/logs/scalars.jsonl``
and allows only ``--strategy default``; the model folder is the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.config import (
    FINE_TUNE_WINDOWS,
    MIN_WINDOWS,
    SMALL_COLLECTION,
    ModelConfig,
    TrainConfig,
)
from melody.context import data_context
from melody.data import Dataset
from melody.errors import UsageError
from melody.model import build_model
from melody.modelfolder import MODEL_FILE, ModelFolder, save_model_folder
from melody.training.checkpoints import (
    load_checkpoint,
    save_checkpoint,
)
from melody.training.logs import scalar_log
from melody.training.schedule import schedule_callback
from melody.training.stopping import StopRequest, stop_callback
from melody.training.windows import WindowSampler, transpose_share, transpose_tables


def compiled_model(model_cfg: ModelConfig, train_cfg: TrainConfig):
    from melody.backend import keras

    k = keras()
    model = build_model(model_cfg)
    model.compile(
        optimizer=k.optimizers.Adam(train_cfg.learning_rate, clipnorm=train_cfg.clipnorm),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def inference_copy(model_cfg: ModelConfig, weights):
    """An uncompiled model with ``weights``: what the model folder stores (no optimizer)."""
    model = build_model(model_cfg)
    model.set_weights(weights)
    return model


@dataclass
class Progress:
    """What survives a stop: the state JSON of a checkpoint."""

    epoch: int = 0  # epochs completed
    best: float | None = None  # best val bits per note
    best_epoch: int = 0
    wait: int = 0  # epochs since the best
    learning_rate: float = 2e-3
    history: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    train_tokens: int = 0
    parent: dict | None = None  # the model fine-tuned: {"folder", "weights_digest"}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Progress":
        """The progress a checkpoint's state holds; ValueError when a field is not of its type."""
        if not isinstance(data, dict):
            raise ValueError(f"progress must be an object, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name, value in values.items():
            kinds = {"int": (int,), "float": (int, float), "float | None": (int, float, type(None)),
                     "list": (list,), "dict | None": (dict, type(None))}[str(known[name].type)]
            if isinstance(value, bool) or not isinstance(value, kinds) or (
                    isinstance(value, (int, float)) and value < 0):
                raise ValueError(f"{name} must be {known[name].type} (not negative), got {value!r}")
        return cls(**values)


class Trainer:
    """One training run into one model folder."""

    def __init__(self, dataset: Dataset, out: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 parent: ModelFolder | None = None):
        self.dataset = dataset
        self.parent = parent  # fine-tuning: the model whose weights it starts from
        self.out = out
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.tokenizer = dataset.tokenizer
        self.train_data = dataset.split("train")
        self.val_data = dataset.split("val")
        if len(self.val_data) == 0 and len(self.train_data) == 0:
            raise UsageError(f"dataset {dataset.folder} holds no pieces: no file of its "
                             f"collection yielded a melody (each file's reason is in "
                             f"{dataset.folder / 'manifest.json'})")
        if len(self.val_data) == 0:
            if len(self.train_data) < 2:
                raise UsageError(f"dataset {dataset.folder} has {len(self.train_data)} piece and "
                                 "none held out for validation: training needs at least 2 "
                                 "pieces, one of them to check the model on")
            raise UsageError(f"dataset {dataset.folder} has no validation pieces; "
                             "prepare it with a larger --val-fraction")
        if len(self.train_data) == 0:
            raise UsageError(f"dataset {dataset.folder} has no training pieces; "
                             "prepare it with a smaller --val-fraction or more files")
        self.seq_len = min(train_cfg.seq_len, len(self.train_data.tokens) - 1)
        if self.seq_len < 2:
            raise UsageError(f"dataset {dataset.folder} has too few training tokens "
                             f"({len(self.train_data.tokens)})")
        # An epoch is one pass over the training tokens, but at least MIN_WINDOWS
        # windows: a small collection (a few hundred tunes is one pass in a few
        # batches) would otherwise stop far short of what it can learn. Random
        # windows and transposition keep the repeats varied; early stopping
        # keeps the best weights. A fine-tuned model starts close to where it
        # will end: its epochs are shorter, so validation sees it more often.
        least = MIN_WINDOWS if parent is None else FINE_TUNE_WINDOWS
        tokens = len(self.train_data.tokens)
        self.steps = train_cfg.steps_per_epoch or max(
            -(-least // train_cfg.batch_size), -(-tokens // (train_cfg.batch_size * self.seq_len)))
        if train_cfg.transpose_prob is None:  # by how often a default epoch sees each token
            share = transpose_share(MIN_WINDOWS * self.seq_len / tokens)
            train_cfg = self.cfg = dataclasses.replace(train_cfg, transpose_prob=share)
        context = None
        if model_cfg.lookback:  # computed once over whole pieces, so windows see before them
            context = data_context(self.train_data, self.tokenizer, model_cfg.lookback)
        self.sampler = WindowSampler(self.train_data.tokens, self.seq_len, train_cfg.batch_size,
                                     transpose_tables(self.tokenizer, train_cfg), context,
                                     train_cfg.transpose_prob, -train_cfg.transpose_low)
        self.progress = Progress(learning_rate=train_cfg.learning_rate, parent=parent and {
            "folder": str(parent.path), "weights_digest": parent.weights_digest})
        self.best_weights = None
        self.replicas = 1
        self.originality_saved = False

    # -- setup ----------------------------------------------------------------
    def start(self, strategy):
        from melody.backend import keras

        pieces = len(self.train_data) + len(self.val_data)
        if self.parent is None and pieces < SMALL_COLLECTION:
            print(f"note: {self.dataset.folder} has {pieces} pieces: a model trained from "
                  "scratch learns little from so few; --from pretrained fine-tunes the shipped "
                  "model on them instead", file=sys.stderr)

        self.replicas = strategy.num_replicas_in_sync
        keras().utils.set_random_seed(self.cfg.seed)
        with strategy.scope():
            self.model = compiled_model(self.model_cfg, self.cfg)
            if self.parent is not None:
                self.model.set_weights(self.parent.keras_model().get_weights())

    def resume(self, strategy, allow_data_change: bool = False):
        self.replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            self.model, state = load_checkpoint(self.out, self.model_cfg)
        try:
            self.progress = Progress.from_dict(state.get("progress"))
        except (TypeError, ValueError) as e:
            raise UsageError(f"--resume: the newest checkpoint in {self.out} has a damaged "
                             f"state ({e}); train again without --resume")
        saved = state.get("data") or {}
        changed = saved.get("digest") != self.dataset.digest
        if changed and not allow_data_change:
            raise UsageError(
                f"--resume: {self.out} was trained on {saved.get('folder')} (digest "
                f"{saved.get('digest')}), not on {self.dataset.folder} as it is now (digest "
                f"{self.dataset.digest}); one history would mix two validation splits. Resume "
                "with the run's own --data, or add --allow-data-change to go on with this one")
        # New flags win over the saved ones, except the learning rate, which
        # the plateau schedule has been lowering.
        self.model.optimizer.learning_rate = self.progress.learning_rate
        if changed:
            # Scores on another validation split do not compare: the best starts over.
            p = self.progress
            p.best, p.best_epoch, p.wait = None, p.epoch, 0
            print(f"note: going on with {self.dataset.folder}, not {saved.get('folder')}; "
                  f"epochs after {p.epoch} are scored on its validation split and the best "
                  "score starts over", file=sys.stderr)
        elif (self.out / MODEL_FILE).exists() and self.progress.best is not None:
            self.best_weights = ModelFolder(self.out).keras_model().get_weights()

    # -- one epoch --------------------------------------------------------------
    def fit_epoch(self, epoch: int, callbacks) -> float:
        """Train one epoch (or until a stop request); returns the mean training loss."""
        verbose = 1 if sys.stderr.isatty() else 2
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints progress to stdout
            history = self.model.fit(
                self.sampler.dataset(seed=(self.cfg.seed, epoch)),
                initial_epoch=epoch,
                epochs=self.cfg.epochs,
                shuffle=False,
                steps_per_epoch=self.steps,
                callbacks=callbacks,
                verbose=verbose,
            )
        self.progress.train_seconds += time.perf_counter() - started
        losses = history.history.get("loss") or [float("nan")]
        return float(losses[-1])

    def validate(self, scorer) -> dict:
        return scorer.score(self.val_data).report()

    def end_epoch(self, scores: dict, lr: float) -> None:
        p = self.progress
        p.epoch += 1
        improved = p.best is None or scores["bits_per_note"] < p.best
        if improved:
            p.best, p.best_epoch, p.wait = scores["bits_per_note"], p.epoch, 0
            self.best_weights = self.model.get_weights()
        else:
            p.wait += 1
            if self.cfg.schedule == "plateau":
                p.learning_rate = lr * self.cfg.plateau_factor
                self.model.optimizer.learning_rate = p.learning_rate
        p.history.append({
            "epoch": p.epoch,
            "val_bits_per_note": scores["bits_per_note"],
            "val_bits_per_token": scores["bits_per_token"],
            "val_pitch_bits_per_note": scores["pitch_bits_per_note"],
            "learning_rate": lr,
            "tokens_per_second": self.tokens_per_second,
        })

    def score_parent(self, scorer) -> None:
        """Fine-tuning starts from the parent's weights: their score on this validation
        split is epoch 0 of the history and the score to beat, so a fine-tuned model
        is never worse than its parent here."""
        scores = self.validate(scorer)
        p = self.progress
        p.best, p.best_epoch = scores["bits_per_note"], 0
        self.best_weights = self.model.get_weights()
        p.history.append({
            "epoch": 0, "val_bits_per_note": scores["bits_per_note"],
            "val_bits_per_token": scores["bits_per_token"],
            "val_pitch_bits_per_note": scores["pitch_bits_per_note"], "learning_rate": None,
            "tokens_per_second": None})
        print(f"parent {p.parent['folder']}: val bits/note {scores['bits_per_note']:.4f} on "
              f"{self.dataset.folder} before fine-tuning", file=sys.stderr, flush=True)

    @property
    def tokens_per_second(self) -> float:
        return self.progress.train_tokens / max(self.progress.train_seconds, 1e-9)

    # -- saving -------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": self.progress.epoch,
            "progress": self.progress.to_dict(),
            "model": self.model_cfg.to_dict(),
            "data": {"folder": str(self.dataset.folder), "digest": self.dataset.digest},
        }

    def key_prior(self) -> dict:
        """Share of each KEY token among the training pieces (generate samples keys from it)."""
        firsts = np.asarray(self.train_data.tokens[self.train_data.offsets[:-1] + 1], dtype=np.int64)
        names, counts = np.unique(firsts, return_counts=True)
        return {self.tokenizer.names[int(k)]: round(float(c) / len(firsts), 6)
                for k, c in zip(names, counts) if self.tokenizer.names[int(k)].startswith("KEY_")}

    @functools.cached_property
    def form_prior(self) -> list:
        """The training pieces' forms: generate draws each melody's from them."""
        from melody.musicality.form import collection_forms

        return collection_forms(self.train_data, self.tokenizer)

    def folder_config(self) -> dict:
        from melody.backend import backend_name

        p = self.progress
        best = next((h for h in p.history if h["epoch"] == p.best_epoch), None)
        metrics = {
            "val_bits_per_note": best and best["val_bits_per_note"],
            "val_bits_per_token": best and best["val_bits_per_token"],
            "val_pitch_bits_per_note": best and best["val_pitch_bits_per_note"],
            "best_epoch": p.best_epoch,
            "epochs": p.epoch,
            "tokens_per_second": self.tokens_per_second,
            "train_seconds": p.train_seconds,
        }
        train = self.cfg.to_dict()
        train["backend"] = backend_name()
        train["seq_len"] = self.seq_len
        train["steps_per_epoch"] = self.steps
        return {
            "model": self.model_cfg.to_dict(),
            "train": train,
            "data": {"folder": str(self.dataset.folder), "digest": self.dataset.digest},
            "history": p.history,
            "metrics": metrics,
            "key_prior": self.key_prior(),
            "form_prior": self.form_prior,
            **({"parent": p.parent} if p.parent else {}),
        }

    def save(self, stopped: bool = False) -> None:
        save_checkpoint(self.out, self.model, self.state(), stopped=stopped)
        weights = self.best_weights if self.best_weights is not None else self.model.get_weights()
        save_model_folder(self.out, inference_copy(self.model_cfg, weights), self.tokenizer,
                          self.folder_config())
        self.save_originality()

    def save_originality(self) -> None:
        """``originality.npz``, for ``generate --check-originality``: the training melodies'
        runs of notes, with thresholds from the validation melodies.

        The splits do not change during a run, so the first save writes it (about
        1 s for the folk corpus) and later saves leave it.
        """
        from melody.musicality.originality import (
            ORIGINALITY_FILE,
            build_originality_file,
        )

        if self.originality_saved:
            return
        decode = self.tokenizer.decode
        # generators: each melody is decoded, indexed and dropped, never all held at once
        build_originality_file((decode(p) for p in self.train_data.pieces()),
                               (decode(p) for p in self.val_data.pieces()),
                               self.out / ORIGINALITY_FILE)
        self.originality_saved = True

    # -- the loop -----------------------------------------------------------------
    def run(self, stop: StopRequest) -> str:
        """Train until done; returns why it ended ("done", "early stop" or "stopped")."""
        from melody.backend import keras
        from melody.scoring import ModelScorer

        k = keras()
        callbacks = [stop_callback(stop)]
        if self.cfg.schedule == "cosine":
            callbacks.append(schedule_callback(self.cfg, self.cfg.epochs * self.steps))
        board = scalar_log(self.out / "logs")
        scorer = ModelScorer(self.model, self.tokenizer, self.model_cfg.lookback)
        if self.progress.parent and not self.progress.history:
            self.score_parent(scorer)
        while self.progress.epoch < self.cfg.epochs:
            if self.progress.wait >= self.cfg.patience:
                return "early stop"
            if stop.requested:  # Ctrl-C came while validating or saving
                self.save(stopped=True)
                return "stopped"
            epoch = self.progress.epoch
            lr = float(f"{float(k.ops.convert_to_numpy(self.model.optimizer.learning_rate)):.6g}")
            steps_before = int(self.model.optimizer.iterations.numpy())
            loss = self.fit_epoch(epoch, callbacks)
            steps_done = int(self.model.optimizer.iterations.numpy()) - steps_before
            self.progress.train_tokens += steps_done * self.cfg.batch_size * self.seq_len
            if stop.requested:
                self.save(stopped=True)
                return "stopped"
            scores = self.validate(scorer)
            self.end_epoch(scores, lr)
            board.write(self.progress.epoch, {
                "train/loss_nats_per_token": loss, "train/learning_rate": lr,
                **{f"val/{name}": value for name, value in scores.items()},
            })
            self.save()
            print(f"epoch {self.progress.epoch}: val bits/note {scores['bits_per_note']:.4f} "
                  f"(best {self.progress.best:.4f}) | bits/token {scores['bits_per_token']:.4f} "
                  f"| lr {lr:.2g} | {self.tokens_per_second:,.0f} tokens/s",
                  file=sys.stderr, flush=True)
        return "early stop" if self.progress.wait >= self.cfg.patience else "done"
