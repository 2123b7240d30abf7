"""Every setting and its default, one typed config per component.

The command line takes its defaults from here, the Python API its keyword
arguments, and a model folder's ``config.json`` stores ``ModelConfig`` and
``TrainConfig`` so the model can be rebuilt. Each config checks its values
when made (``ValueError`` naming the setting, the allowed range and the value)
and refuses unknown keys when read back from a dict.

No NumPy here: the command line reads these before it imports anything heavy.

>>> cfg = ModelConfig(vocab_size=10, embedding=4, units=8, layers=1)
>>> ModelConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

DATASETS = Path("datasets")  # where prepared datasets go unless --out says otherwise
MODELS = Path("models")
GENERATED = Path("generated")
DEFAULT_TEMPO = 120.0  # BPM of generated melodies without --tempo or a primer
DEFAULT_PROGRAM = 0  # General MIDI program (piano)
DEFAULT_NOTES = 64  # length of a generated melody without --notes or --bars
EVALUATE_SAMPLES = 100  # melodies generated for the musicality statistics
SECTION_BARS = 4  # bars of each section of a form when no length is given
PRETRAINED = "pretrained"  # train --from's name for the model shipped inside the package
SMALL_COLLECTION = 50  # pieces below which prepare and train suggest fine-tuning
FINE_TUNE_LEARNING_RATE = 5e-4  # train --from's learning rate unless one is given
MAX_SECTIONS = 16


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
            at_least("jobs", self.jobs, 1)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in range [0, 1), got {self.val_fraction}")
        at_least("seed", self.seed, 0)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be greater than 0, got {self.timeout}")


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

    def __post_init__(self):
        for name in ("vocab_size", "embedding", "units", "layers", "lookback_embedding",
                     "position_embedding"):
            at_least(name, getattr(self, name), 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in range [0, 1), got {self.dropout}")
        if len(self.lookback) > 8 or len(set(self.lookback)) != len(self.lookback) or any(
                not 1 <= k <= 64 for k in self.lookback):
            raise ValueError(f"lookback must be at most 8 different distances of 1..64 bars, "
                             f"got {list(self.lookback)}")


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to train; saved under ``"train"`` in ``config.json``."""

    _WHAT = "training"

    epochs: int = 20
    seq_len: int = 128
    batch_size: int = 64
    learning_rate: float = 2e-3
    patience: int = 4
    steps_per_epoch: int | None = None  # None: one pass over the training tokens, at least 50
    seed: int = 0
    strategy: str = "default"
    clipnorm: float = 1.0
    # Transposition of training windows, in semitones (inclusive range).
    transpose_low: int = -5
    transpose_high: int = 6
    # The learning rate is multiplied by this after an epoch without improvement.
    plateau_factor: float = 0.5


STRATEGIES = ("default", "mirrored", "multi-worker")


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
    # Sections such as "AABB": a repeated letter brings its section back; None: the
    # model's own sense of form decides.
    form: str | None = None

    def __post_init__(self):
        at_least("n", self.n, 1)
        if self.notes is not None and self.bars is not None:
            raise ValueError("give notes or bars, not both")
        if self.form is not None:
            self._check_form()
        for name in ("notes", "bars", "top_k"):
            value = getattr(self, name)
            if value is not None:
                at_least(name, value, 1)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be greater than 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in range (0, 1], got {self.top_p}")

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
