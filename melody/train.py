"""Train the GRU on a prepared dataset and write a model folder.

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
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.cli import UsageError
from melody.data import Dataset, is_dataset, load_dataset
from melody.model import (
    MODEL_FILE,
    ModelConfig,
    build_model,
    flops_per_token,
    read_config,
    save_model_folder,
)

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
ARCHITECTURE_FLAGS = {"units": "--units", "layers": "--layers", "embedding": "--embedding",
                      "dropout": "--dropout", "reset_after": "--reset-after"}


MIN_STEPS = 50  # batches per epoch at the least, unless --steps-per-epoch says otherwise


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved under ``"train"`` in ``config.json``."""

    epochs: int = 20
    seq_len: int = 128
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 4
    steps_per_epoch: int | None = None
    seed: int = 0
    strategy: str = "default"
    clipnorm: float = 1.0
    # Transposition of training windows, in semitones (inclusive range).
    transpose_low: int = -5
    transpose_high: int = 6
    # The learning rate is multiplied by this after an epoch without improvement.
    plateau_factor: float = 0.5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- the input pipeline ---------------------------------------------------------
class WindowSampler:
    """Random windows of ``seq_len + 1`` tokens from a token array, randomly transposed.

    Each batch is gathered with one fancy index into the memory-mapped array,
    so the collection is never loaded as Python objects.

    >>> tables = np.arange(6, dtype=np.int32)[None]
    >>> x, y = next(WindowSampler(np.arange(6), 3, 2, tables).batches(seed=0))
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
    ((2, 3), True)
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, tables: np.ndarray):
        if len(tokens) < seq_len + 1:
            raise ValueError(f"need at least {seq_len + 1} tokens, got {len(tokens)}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.tables = tables

    def batches(self, seed):
        """Endless (inputs, targets) int32 batches of shape [batch, seq_len]."""
        rng = np.random.default_rng(seed)
        span = np.arange(self.seq_len + 1)
        last_start = len(self.tokens) - self.seq_len - 1
        while True:
            starts = rng.integers(0, last_start + 1, size=self.batch_size)
            windows = np.asarray(self.tokens[starts[:, None] + span], dtype=np.int32)
            shifts = rng.integers(0, len(self.tables), size=self.batch_size)
            windows = self.tables[shifts[:, None], windows]
            yield windows[:, :-1], windows[:, 1:]

    def dataset(self, seed):
        """What ``fit`` reads: a prefetching tf.data pipeline under TensorFlow,
        the plain generator under other Keras backends."""
        from melody.backend import backend_name, tensorflow

        if backend_name() != "tensorflow":
            return self.batches(seed)
        tf = tensorflow()
        spec = tf.TensorSpec((self.batch_size, self.seq_len), tf.int32)
        ds = tf.data.Dataset.from_generator(
            lambda: self.batches(seed), output_signature=(spec, spec)
        )
        return ds.prefetch(4)


def transpose_tables(tokenizer, cfg: TrainConfig) -> np.ndarray:
    return np.stack([
        tokenizer.transpose_table(s) for s in range(cfg.transpose_low, cfg.transpose_high + 1)
    ])


# -- data and folders -------------------------------------------------------------
def resolve_data(path) -> Dataset:
    """A prepared dataset; music folders (and a missing datasets/folk) are prepared first."""
    path = Path(path)
    if is_dataset(path):
        return load_dataset(path)
    if path == Path("datasets/folk"):  # the default: the built-in corpus
        return load_dataset(_prepare([], path))
    if path.exists():
        out = Path("datasets") / (path.stem or "data")
        return load_dataset(_prepare([str(path)], out))
    raise UsageError(f"--data must be a prepared dataset or a folder of music files, got {path}")


def _prepare(sources: list, out: Path) -> Path:
    from melody.data import prepare

    print(f"preparing {', '.join(sources) or 'the built-in folk corpus'} into {out}", file=sys.stderr)
    prepare(sources, out, jobs=None, val_fraction=0.1, seed=0, timeout=30.0, progress=True)
    if not is_dataset(out):
        raise UsageError(f"could not prepare a dataset from {', '.join(sources)}")
    return out


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


# -- interruption -----------------------------------------------------------------
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


class TensorBoardLog:
    """Scalars in TensorBoard's event format, written with core TensorFlow only.

    (``tf.summary.scalar`` needs the tensorboard package; ``tf.summary.write``
    with the scalars plugin's metadata does not.) Other Keras backends get
    :class:`JsonLinesLog` instead (see :func:`scalar_log`).
    """

    def __init__(self, folder: Path):
        from melody.backend import tensorflow
        from tensorflow.core.framework import summary_pb2

        self.tf = tensorflow()
        self.writer = self.tf.summary.create_file_writer(str(folder))
        plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        self.metadata = summary_pb2.SummaryMetadata(plugin_data=plugin)

    def write(self, step: int, scalars: dict) -> None:
        with self.writer.as_default(step=step):
            for tag, value in scalars.items():
                self.tf.summary.write(tag, self.tf.constant(float(value), self.tf.float32),
                                      metadata=self.metadata)
        self.writer.flush()


class JsonLinesLog:
    """The same scalars as :class:`TensorBoardLog`, one JSON object per line in
    ``scalars.jsonl``: for Keras backends without TensorFlow (tf.summary)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "scalars.jsonl"

    def write(self, step: int, scalars: dict) -> None:
        from melody.fileio import atomic_write_text

        line = {"step": step, **{tag: float(value) for tag, value in scalars.items()}}
        before = self.path.read_text() if self.path.exists() else ""
        atomic_write_text(self.path, before + json.dumps(line) + "\n")  # a few KB a run


def scalar_log(folder: Path):
    """TensorBoard event files under TensorFlow, ``scalars.jsonl`` under other backends."""
    from melody.backend import backend_name

    return TensorBoardLog(folder) if backend_name() == "tensorflow" else JsonLinesLog(folder)


def _stop_callback(stop: StopRequest):
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


# -- the model and its optimizer --------------------------------------------------------
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


# -- the run -------------------------------------------------------------------------
def configs_from_args(args, tokenizer) -> tuple[ModelConfig, TrainConfig]:
    model_cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        embedding=args.embedding,
        units=args.units,
        layers=args.layers,
        dropout=args.dropout,
        reset_after=str(args.reset_after).lower() == "true",
    )
    train_cfg = TrainConfig(
        epochs=args.epochs,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        steps_per_epoch=args.steps_per_epoch,
        seed=args.seed,
        strategy=args.strategy,
    )
    return model_cfg, train_cfg


def check_out_folder(out: Path, resume: bool) -> None:
    has_run = (out / MODEL_FILE).exists() or bool(list_checkpoints(out))
    if resume and not list_checkpoints(out):
        raise UsageError(f"--resume: no checkpoints in {checkpoint_dir(out)}; drop --resume to start")
    if not resume and has_run:
        raise UsageError(f"--out {out} already holds a model; add --resume to continue it "
                         "or choose another --out")


def check_same_architecture(saved: dict, model_cfg: ModelConfig) -> None:
    given = model_cfg.to_dict()
    diffs = [f"{flag} {str(saved[k]).lower() if k == 'reset_after' else saved[k]}"
             for k, flag in ARCHITECTURE_FLAGS.items() if saved.get(k) != given[k]]
    if saved.get("vocab_size") != given["vocab_size"]:
        raise UsageError("--resume: the dataset's vocabulary differs from the saved model's")
    if diffs:
        raise UsageError("--resume: the saved model was trained with different architecture "
                         f"flags; resume with {' '.join(diffs)}")


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Progress":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Trainer:
    """One training run into one model folder."""

    def __init__(self, dataset: Dataset, out: Path, model_cfg: ModelConfig, train_cfg: TrainConfig):
        self.dataset = dataset
        self.out = out
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.tokenizer = dataset.tokenizer
        self.train_data = dataset.split("train")
        self.val_data = dataset.split("val")
        if len(self.val_data) == 0:
            raise UsageError(f"dataset {dataset.folder} has no validation pieces; "
                             "prepare it with a larger --val-fraction")
        self.seq_len = min(train_cfg.seq_len, len(self.train_data.tokens) - 1)
        if self.seq_len < 2:
            raise UsageError(f"dataset {dataset.folder} has too few training tokens "
                             f"({len(self.train_data.tokens)})")
        # An epoch is one pass over the training tokens, but at least MIN_STEPS
        # batches: a small collection (a few hundred tunes is one pass in a few
        # batches) would otherwise stop far short of what it can learn. Random
        # windows and transposition keep the repeats varied; early stopping
        # keeps the best weights.
        self.steps = train_cfg.steps_per_epoch or max(
            MIN_STEPS, -(-len(self.train_data.tokens) // (train_cfg.batch_size * self.seq_len))
        )
        self.sampler = WindowSampler(self.train_data.tokens, self.seq_len, train_cfg.batch_size,
                                     transpose_tables(self.tokenizer, train_cfg))
        self.progress = Progress(learning_rate=train_cfg.learning_rate)
        self.best_weights = None
        self.replicas = 1
        self.originality_saved = False

    # -- setup ----------------------------------------------------------------
    def start(self, strategy):
        from melody.backend import keras

        self.replicas = strategy.num_replicas_in_sync
        keras().utils.set_random_seed(self.cfg.seed)
        with strategy.scope():
            self.model = compiled_model(self.model_cfg, self.cfg)

    def resume(self, strategy):
        from melody.model import load_keras_model

        self.replicas = strategy.num_replicas_in_sync
        with strategy.scope():
            self.model, state = load_checkpoint(self.out)
        self.progress = Progress.from_dict(state["progress"])
        check_same_architecture(state["model"], self.model_cfg)
        if state.get("data", {}).get("digest") != self.dataset.digest:
            print(f"warning: {self.dataset.folder} changed since this run started", file=sys.stderr)
        # New flags win over the saved ones, except the learning rate, which
        # the plateau schedule has been lowering.
        self.model.optimizer.learning_rate = self.progress.learning_rate
        if (self.out / MODEL_FILE).exists() and self.progress.best is not None:
            self.best_weights = load_keras_model(self.out).get_weights()

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
        from melody.musicality import ORIGINALITY_FILE, build_originality_file

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
        from melody.evaluate import ModelScorer

        k = keras()
        callbacks = [_stop_callback(stop)]
        board = scalar_log(self.out / "logs")
        scorer = ModelScorer(self.model, self.tokenizer)
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


def run_train(args):
    from melody.backend import tune_cpu_threads

    dataset = resolve_data(args.data)
    out = Path(args.out) if args.out else Path("models") / dataset.folder.name
    model_cfg, train_cfg = configs_from_args(args, dataset.tokenizer)
    check_out_folder(out, args.resume)
    tune_cpu_threads()  # before TensorFlow runs anything
    trainer = Trainer(dataset, out, model_cfg, train_cfg)
    strategy = make_strategy(train_cfg.strategy)
    if args.resume:
        trainer.resume(strategy)
    else:
        trainer.start(strategy)
    with StopRequest() as stop:
        ending = trainer.run(stop)
    if ending == "stopped":
        print(f"stopped during epoch {trainer.progress.epoch + 1}; saved {out}. Continue with: "
              f"{resume_command(args, out)}", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    return train_result(trainer), train_summary(trainer, ending)


def resume_command(args, out: Path) -> str:
    """The command that continues this run: the architecture flags that differ from the defaults."""
    from melody.cli import build_parser

    defaults = vars(build_parser().parse_args(["train"]))
    words = ["python app.py train", f"--data {args.data}", f"--out {out}", "--resume"]
    for key, flag in ARCHITECTURE_FLAGS.items():
        if getattr(args, key) != defaults[key]:
            words.append(f"{flag} {getattr(args, key)}")
    return " ".join(words)


def train_result(trainer: Trainer) -> dict:
    p = trainer.progress
    config = read_config(trainer.out)
    return {
        "model": str(trainer.out),
        "epochs": p.epoch,
        "best_epoch": p.best_epoch,
        "params": int(trainer.model.count_params()),
        "val_bits_per_note": p.best,
        "val_bits_per_token": config["metrics"]["val_bits_per_token"],
        "val_pitch_bits_per_note": config["metrics"]["val_pitch_bits_per_note"],
        "tokens_per_second": trainer.tokens_per_second,
        "train_seconds": p.train_seconds,
        "flops_per_token": flops_per_token(trainer.model_cfg),
        "data": str(trainer.dataset.folder),
        "strategy": trainer.cfg.strategy,
        "replicas": trainer.replicas,
    }


def train_summary(trainer: Trainer, ending: str) -> str:
    p = trainer.progress
    why = {"done": "all epochs done", "early stop": f"no improvement for {p.wait} epochs"}[ending]
    best = "n/a" if p.best is None else f"{p.best:.4f}"
    return (f"trained {trainer.out} for {p.epoch} epochs ({why}); best val bits/note {best} "
            f"at epoch {p.best_epoch}; {trainer.tokens_per_second:,.0f} tokens/s")
