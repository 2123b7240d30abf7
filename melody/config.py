"""Every setting and its default, one typed config per component.

The command line takes its defaults from here, the Python API its keyword
arguments, and a model folder's ``config.json`` stores ``ModelConfig`` and
``TrainConfig`` so the model can be rebuilt. Each config checks its values
when made (``ValueError`` naming the setting, the allowed range and the value)
and refuses unknown keys when read back from a dict. No NumPy here: the command
line reads these before it imports anything heavy.

>>> cfg = ModelConfig(vocab_size=10, embedding=4, units=8, layers=1)
>>> ModelConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

DATASETS, MODELS, GENERATED = Path("datasets"), Path("models"), Path("generated")  # defaults
DEFAULT_TEMPO = 120.0  # BPM of generated melodies without --tempo or a primer
DEFAULT_PROGRAM = 0  # General MIDI program (piano)
DEFAULT_NOTES = 64  # length of a generated melody without --notes or --bars
EVALUATE_SAMPLES = 100  # melodies generated for the musicality statistics
SECTION_BARS = 4  # bars of each section of a form when no length is given
PRETRAINED = "pretrained"  # train --from's name for the model shipped inside the package
SMALL_COLLECTION = 50  # pieces below which prepare and train suggest fine-tuning
FINE_TUNE_LEARNING_RATE = 3e-4  # train --from's learning rate unless one is given
GPU_BATCH_SIZE = 64  # train's batch with a GPU unless one is given (TrainConfig's is the CPU's)
# An epoch's windows at the least unless --steps-per-epoch; with --from fewer, to stop in time
MIN_WINDOWS, FINE_TUNE_WINDOWS = 3_200, 320  # 100 and 10 batches of 32
MAX_SECTIONS = 16
# Form context: place in the bar (steps, to 4/2's end), bar count (mod 16), each + "none".
MAX_BAR_STEPS, BAR_CYCLE = 96, 16
FORM_PRIOR = 10_000  # pieces whose forms a model folder keeps, at most
CONTEXT_POSITIONS, CONTEXT_BARS = MAX_BAR_STEPS + 1, BAR_CYCLE + 1

# Ceilings. Each protects the machine (memory, time, disk) or keeps a value where
# the files that store it and the libraries that use it can hold it; --help says them.
MAX_FILE_BYTES = 32 * 2**20  # a music file read by prepare, render or --primer
MAX_SEED = 2**32 - 1  # NumPy's legacy seeding (Keras's set_random_seed) takes 32 bits
MIN_TEMPO, MAX_TEMPO = 10.0, 1000.0  # BPM; MIDI stores about 3.6 to 60,000,000
MAX_MELODIES = 1000  # melodies per generate call (they are sampled as one batch)
MAX_NOTES = 2000  # notes per generated melody, and in a primer
MAX_BARS = 500  # bars per generated melody
MAX_BATCH_NOTES = 100_000  # melodies x notes per call: about two minutes on 2 cores
MAX_BATCH_BARS = 25_000  # melodies x bars per call
MAX_NAME_BYTES = 120  # a --name stem in UTF-8: room for "-1000.musicxml" and a temporary tag
MAX_WAV_SECONDS = 600.0  # longest WAV made (44.1 kHz stereo, 106 MB; synthesis takes 3 GB)
MAX_SAMPLES = MAX_MELODIES  # evaluate --samples
MAX_EPOCHS, MAX_LAYERS = 10_000, 16
MAX_WIDTH = 4096  # --units, --embedding
MAX_PARAMS = 50_000_000  # weights of one model (200 MB as float32)
MAX_SEQ_LEN = 8192
MAX_BATCH_SIZE = 8192
MAX_STEPS_PER_EPOCH = 1_000_000
MAX_LEARNING_RATE = 1.0
MAX_VOCAB = 4096  # a tokenizer's settings allow at most 2,270 tokens
MAX_PROCESSES = 1024  # processes of one --strategy multi-worker run
MAX_JOBS = 64  # prepare --jobs (the default, every usable core, may be more)
MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 3600.0  # seconds one file may take (prepare, render)
RENDER_TIMEOUT = 120.0  # seconds render may spend on one file
RENDER_MEMORY = 4 * 2**30  # bytes a render worker may grow by (a 10-minute WAV takes 3)


class _Config:
    """``to_dict``/``from_dict`` for the dataclasses below; unknown keys are an error."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The config a dict (read from JSON) describes: every key known, every value
        of its field's type."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls._WHAT} settings must be a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"unknown {cls._WHAT} settings: {', '.join(sorted(unknown))}")
        data = dict(data)
        for name, value in data.items():
            if str(fields[name].type) == "tuple[int, ...]":  # a JSON list of whole numbers
                if not isinstance(value, (list, tuple)) or any(type(v) is not int for v in value):
                    raise ValueError(f"{name} must be a list of whole numbers, got {value!r}")
                data[name] = tuple(value)
                continue
            allowed = [_TYPES[t.strip()] for t in str(fields[name].type).split("|")]
            if float in allowed:
                allowed.append(int)  # 0 for 0.0
            if type(value) not in allowed:  # exact: JSON's true is not a count of 1
                kinds = " or ".join(t.strip() for t in str(fields[name].type).split("|"))
                raise ValueError(f"{name} must be {kinds}, got {value!r}")
        return cls(**data)


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


def at_least(name: str, value, low) -> None:
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def check_int(name: str, value, low: int, high: int | None = None) -> None:
    """A whole number in ``low..high``: TypeError naming ``name`` for another type,
    ValueError naming the range and the value for one outside it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    bound = int_bound(value, low, high)
    if bound:
        raise ValueError(f"{name} must be {bound}, got {value}")


def int_bound(value: int, low: int, high: int | None) -> str | None:
    """The bound ``value`` breaks ("at least 1", "at most 1000"), or None."""
    if value < low:
        return f"at least {low}"
    if high is not None and value > high:
        return f"at most {high}"
    return None


def check_float(name: str, value, low: float, high: float, low_open: bool = False,
                high_open: bool = False) -> None:
    """A finite number in the range (``low_open``: ``low`` itself excluded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and (low < value if low_open else low <= value)
            and (value < high if high_open else value <= high)):
        raise ValueError(f"{name} must be {float_range(low, high, low_open, high_open)}, "
                         f"got {value}")


def float_range(low, high, low_open=False, high_open=False) -> str:
    if high == math.inf:
        return f"a finite number {'greater than' if low_open else 'at least'} {low:g}"
    return f"in range {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


@dataclass(frozen=True)
class PrepareConfig(_Config):
    """How a collection is read and split (the flags of ``prepare``)."""

    _WHAT = "prepare"

    jobs: int | None = None  # worker processes; None: every usable core
    val_fraction: float = 0.1
    seed: int = 0
    timeout: float = 30.0  # seconds to read one file
    memory_limit: int = 2 * 2**30  # bytes a worker may grow by beyond its start-up size
    reader: str = "melody.inputs:read_melody"  # "module:function"; tests name a stub here

    def __post_init__(self):
        if self.jobs is not None:
            check_int("jobs", self.jobs, 1, MAX_JOBS)
        check_float("val_fraction", self.val_fraction, 0.0, 1.0, high_open=True)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_float("timeout", self.timeout, MIN_TIMEOUT, MAX_TIMEOUT)
        check_int("memory_limit", self.memory_limit, 2**26, 2**40)
        if not isinstance(self.reader, str) or ":" not in self.reader:
            raise ValueError(f"reader must be 'module:function', got {self.reader!r}")


@dataclass(frozen=True)
class ModelConfig(_Config):
    """Architecture of the model; saved in ``config.json`` and used to rebuild it."""

    _WHAT = "model"

    vocab_size: int
    embedding: int = 96
    units: int = 320
    layers: int = 2
    dropout: float = 0.2
    reset_after: bool = True
    # Form context (melody.context): the tokens 1, 2, 4 and 8 bars back, embedded
    # in ``lookback_embedding`` dimensions each, and the place in the bar and in the
    # phrase in ``position_embedding`` each. An empty ``lookback``: tokens alone.
    lookback: tuple[int, ...] = (1, 2, 4, 8)
    lookback_embedding: int = 32
    position_embedding: int = 16
    # With lookback: the output also says "as N bars ago" (melody.model's copy gate).
    copy: bool = True

    def __post_init__(self):
        check_int("vocab_size", self.vocab_size, 1, MAX_VOCAB)
        for name in ("embedding", "units"):
            check_int(name, getattr(self, name), 1, MAX_WIDTH)
        check_int("layers", self.layers, 1, MAX_LAYERS)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        for name in ("reset_after", "copy"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("lookback_embedding", "position_embedding"):
            check_int(name, getattr(self, name), 1, MAX_WIDTH)
        if len(self.lookback) > 8 or len(set(self.lookback)) != len(self.lookback) or any(
                not 1 <= k <= 64 for k in self.lookback):
            raise ValueError(f"lookback must be at most 8 different distances of 1..64 bars, "
                             f"got {list(self.lookback)}")
        if self.params > MAX_PARAMS:
            raise ValueError(f"units {self.units}, layers {self.layers} and embedding "
                             f"{self.embedding} make {self.params:,} weights; at most "
                             f"{MAX_PARAMS:,} are allowed")

    @property
    def params(self) -> int:
        """How many weights the model has (``melody.model.build_model``).

        >>> ModelConfig(vocab_size=10, embedding=4, units=8, layers=1, lookback=()).params
        466
        """
        gates = 3 * self.units
        biases = 2 * gates if self.reset_after else gates
        width, total = self.embedding, self.vocab_size * self.embedding
        if self.lookback:  # the form context's embeddings, read beside the token's
            total += ((self.vocab_size + 1) * self.lookback_embedding
                      + (CONTEXT_POSITIONS + CONTEXT_BARS) * self.position_embedding)
            width += len(self.lookback) * self.lookback_embedding + 2 * self.position_embedding
        for _ in range(self.layers):
            total += (width + self.units) * gates + biases
            width = self.units
        if self.lookback and self.copy:  # the copy gate: the network's own, or a distance
            total += (width + 1) * (1 + len(self.lookback))
        return total + width * self.vocab_size + self.vocab_size


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to train; saved under ``"train"`` in ``config.json``."""

    _WHAT = "training"

    epochs: int = 20
    seq_len: int = 128
    batch_size: int = 32  # on the CPU; with a GPU, GPU_BATCH_SIZE unless one is given
    learning_rate: float = 2e-3
    patience: int = 4
    steps_per_epoch: int | None = None  # None: a pass over the tokens, MIN_WINDOWS at least
    seed: int = 0
    strategy: str = "default"
    clipnorm: float = 1.0
    transpose_low: int = -5  # training windows' transposition, semitones (inclusive range)
    transpose_high: int = 6
    transpose_prob: float | None = None  # windows transposed; None: windows.transpose_share
    # "plateau": x plateau_factor after an epoch without improvement; "cosine": melody.training.schedule
    schedule: str = "plateau"
    plateau_factor: float = 0.5
    warmup_steps: int = 0
    lr_floor: float = 0.05

    def __post_init__(self):
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_float("learning_rate", self.learning_rate, 0.0, MAX_LEARNING_RATE, low_open=True)
        check_int("patience", self.patience, 1, MAX_EPOCHS)
        if self.steps_per_epoch is not None:
            check_int("steps_per_epoch", self.steps_per_epoch, 1, MAX_STEPS_PER_EPOCH)
        check_int("seed", self.seed, 0, MAX_SEED)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, "
                             f"got {self.strategy!r}")
        check_float("clipnorm", self.clipnorm, 0.0, 1e6, low_open=True)
        check_int("transpose_low", self.transpose_low, -12, 0)
        check_int("transpose_high", self.transpose_high, 0, 12)
        check_float("plateau_factor", self.plateau_factor, 0.0, 1.0, low_open=True)
        if self.transpose_prob is not None:
            check_float("transpose_prob", self.transpose_prob, 0.0, 1.0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        check_int("warmup_steps", self.warmup_steps, 0, MAX_STEPS_PER_EPOCH)
        check_float("lr_floor", self.lr_floor, 0.0, 1.0)


def training_bytes(model: "ModelConfig", train: "TrainConfig") -> int:
    """About how much memory one training step takes: weights, gradients and Adam's
    two moments, and the activations of a batch kept for the backward pass (a GRU
    layer keeps about 8 numbers per unit and token, the logits about 4 per token).

    >>> training_bytes(ModelConfig(vocab_size=364, lookback=()), TrainConfig()) // 2**20
    122
    """
    width = model.embedding  # what the first GRU layer reads per token
    if model.lookback:
        width += len(model.lookback) * model.lookback_embedding + 2 * model.position_embedding
    per_token = model.layers * model.units * 8 + width + 4 * model.vocab_size
    return 4 * (4 * model.params + train.batch_size * (train.seq_len + 1) * per_token)


STRATEGIES = ("default", "mirrored", "multi-worker")
SCHEDULES = ("plateau", "cosine")


def check_tempo(value, name: str = "tempo") -> None:
    """A tempo in BPM that a musician finds sane and a MIDI file can store."""
    check_float(name, value, MIN_TEMPO, MAX_TEMPO)


def check_name(name: str) -> None:
    """A file name stem: no folders, no control characters, at most MAX_NAME_BYTES."""
    if not isinstance(name, str):
        raise TypeError(f"name must be text, got {name!r}")
    size = len(name.encode("utf-8", "surrogateescape"))
    if name in ("", ".", "..") or "/" in name:
        raise ValueError(f"name must be a file name stem without folders, got {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"name must have no control characters, got {name!r}")
    if size > MAX_NAME_BYTES:
        raise ValueError(f"name must be at most {MAX_NAME_BYTES} bytes long (UTF-8), got {size}")


@dataclass(frozen=True)
class SampleConfig(_Config):
    """What to sample: how many, how long, how adventurous, under which constraints.

    ``notes`` and ``bars`` are exclusive; with neither, melodies stop after
    ``DEFAULT_NOTES`` notes. ``key`` forces the KEY token and the key's scale;
    ``key_strength`` scales the key profile's log-weights added to pitch logits
    and ``key_balance`` the pull toward pitch classes the melody has under-used
    so far. ``lowest``/``highest`` bound the pitches.
    """

    _WHAT = "sampling"

    n: int = 4
    notes: int | None = None
    bars: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    key: str | None = None
    key_strength: float = 1.0
    key_balance: float = 10.0
    lowest: int | None = None
    highest: int | None = None
    # Sections such as "AABB": a repeated letter brings its section back; None: each
    # melody follows a form of the model's collection, unless free_form (the network's own).
    form: str | None = None
    free_form: bool = False

    def __post_init__(self):
        check_int("n", self.n, 1, MAX_MELODIES)
        if self.notes is not None and self.bars is not None:
            raise ValueError("give notes or bars, not both")
        if self.form is not None:
            self._check_form()
        for name, high in (("notes", MAX_NOTES), ("bars", MAX_BARS), ("top_k", None)):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, 1, high)
        if self.notes is not None and self.n * self.notes > MAX_BATCH_NOTES:
            raise ValueError(f"n x notes must be at most {MAX_BATCH_NOTES} per call, got "
                             f"{self.n} x {self.notes} = {self.n * self.notes}")
        if self.bars is not None and self.n * self.bars > MAX_BATCH_BARS:
            raise ValueError(f"n x bars must be at most {MAX_BATCH_BARS} per call, got "
                             f"{self.n} x {self.bars} = {self.n * self.bars}")
        # Any finite positive temperature samples (the sampler goes greedy as it nears 0).
        check_float("temperature", self.temperature, 0.0, math.inf, low_open=True)
        if self.top_p is not None:
            check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_int("seed", self.seed, 0, MAX_SEED)
        if self.key is not None and not isinstance(self.key, str):
            raise TypeError(f"key must be a key name such as D or F#m, got {self.key!r}")
        for name in ("key_strength", "key_balance"):
            check_float(name, getattr(self, name), 0.0, 1000.0)
        for name in ("lowest", "highest"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 0, 127)
        if self.lowest is not None and self.highest is not None and self.lowest > self.highest:
            raise ValueError(f"lowest {self.lowest} is above highest {self.highest}")

    def _check_form(self) -> None:
        form = self.form
        if not (form.isascii() and form.isalpha() and 1 <= len(form) <= MAX_SECTIONS):
            raise ValueError(f"form must be 1 to {MAX_SECTIONS} section letters such as AABB, "
                             f"got {form!r}")
        if self.notes is not None:
            raise ValueError("a form is made of bars: give bars, not notes")
        if self.bars is None:  # a frozen dataclass: its default filled in once, here
            object.__setattr__(self, "bars", SECTION_BARS * len(form))
        if self.bars % len(form):
            raise ValueError(f"bars must be shared evenly among the {len(form)} sections of form "
                             f"{form}: give a multiple of {len(form)}, got {self.bars}")

    @property
    def sections(self) -> str | None:
        """The form's section letters, upper case (None without a form)."""
        return self.form.upper() if self.form else None

    @property
    def max_notes(self) -> int | None:
        if self.bars is not None:
            return None
        return self.notes if self.notes is not None else DEFAULT_NOTES
