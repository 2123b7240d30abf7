"""The model folder, opened and checked once, and the melodies it writes.

A model folder holds ``model.keras`` (Keras 3 native format), ``tokenizer.json``
and ``config.json``; that is all that ``generate`` and ``evaluate`` need.
``config.json``: {"model": ModelConfig, "train": arguments, "data": {"folder",
"digest"}, "history": [...], "metrics": {...}, "key_prior": {KEY token: share},
"form_prior": ["notes bar plan", ...] (the training pieces' forms), "weights_digest":
sha256 of model.keras}.

Every path that uses a model (generate, evaluate, the musicality report,
``train --resume``) opens it as a ``ModelFolder``. Opening reads each file
with limits and checks it: the config's settings, the tokenizer against the
model's vocabulary, and the architecture inside ``model.keras`` (sizes of the
zip's members before anything is unpacked, only the layers a melody model
has, never a Lambda). Any damage is one ``ModelFolderError`` naming the folder
or file and what is wrong. Weights are read when first needed: as NumPy
arrays for sampling (no TensorFlow), or by Keras in safe mode.

>>> folder = ModelFolder()  # the model shipped inside the package
>>> tunes = folder.generate(2, bars=4, seed=1)
>>> len(tunes), all(t.n_notes > 0 for t in tunes)
(2, True)
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.config import (
    DEFAULT_PROGRAM,
    DEFAULT_TEMPO,
    FORM_PRIOR,
    MAX_BARS,
    MAX_SEED,
    MAX_TEMPO,
    MIN_TEMPO,
    ModelConfig,
    SampleConfig,
    check_int,
    check_tempo,
)
from melody.errors import ModelFolderError, UsageError
from melody.modelcheck import (
    MAX_CONFIG_BYTES,
    WEIGHTS,
    check_config_fields,
    check_zip,
    outputs_message,
    read_architecture,
    read_json,
    read_member,
    short,
    weights_limit,
)
from melody.notes import Melody
from melody.sample import NumpyGRU, Primer, key_prior, read_primer, sample
from melody.sample.form import read_forms
from melody.sample.weights import read_network
from melody.tokenizer import MAX_TOKENIZER_BYTES, Tokenizer

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# What train writes into a model folder, and so would replace.
MODEL_FOLDER_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, "originality.npz")
# What config.json may hold; the first three generate and evaluate read.
CONFIG_KEYS = ("model", "key_prior", "data", "train", "history", "metrics", "weights_digest",
               "evaluation", "trained_on", "parent", "form_prior")


def shipped_folder() -> Path:
    """The pretrained model shipped inside the package."""
    return Path(__file__).parent / "pretrained" / "folk"


@dataclass
class Batch:
    """Melodies sampled together: their tokens, the melodies they decode to, and
    what they were made with (the primer, tempo and program filled in)."""

    config: SampleConfig
    sequences: list
    melodies: list
    primer: Primer | None
    tempo: float
    program: int


class ModelFolder:
    """A model folder, opened and checked; ``ModelFolder()`` is the shipped model.

    Args:
        path: the folder (default: the pretrained model inside the package).
    """

    def __init__(self, path=None):
        self.path = shipped_folder() if path is None else Path(path)
        if path is None and not self.path.is_dir():
            raise ModelFolderError(f"the shipped model is missing ({self.path}); "
                                   "pass --model DIR with a trained model folder")
        self._check_files()
        self.config = self._read_config()
        self.model_config = self._read_model_config()
        self.tokenizer = self._read_tokenizer()
        self.key_prior = self._read_key_prior()
        self.form_prior = self._read_form_prior()
        self.layers = read_architecture(self.path / MODEL_FILE, self.model_config)

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r})"

    @property
    def weights_digest(self) -> str | None:
        return self.config.get("weights_digest")

    # -- opening -------------------------------------------------------------------
    def _check_files(self) -> None:
        if not self.path.is_dir():
            raise ModelFolderError(f"model folder not found: {self.path}")
        for name in (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE):
            if not (self.path / name).is_file():
                if name == MODEL_FILE and any(self.path.glob("*.h5")):
                    raise ModelFolderError(f"{self.path}: .h5 models are not accepted; "
                                           f"a model folder holds {MODEL_FILE}")
                raise ModelFolderError(f"{self.path}: missing {name}; is this a model folder?")

    def _read_config(self) -> dict:
        path = self.path / CONFIG_FILE
        config = read_json(path, MAX_CONFIG_BYTES)
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise ModelFolderError(f"{path}: no model settings")
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ModelFolderError(f"{path}: unknown keys {short(unknown)[1:-1]}; "
                                   f"a model's config.json holds {', '.join(CONFIG_KEYS)}")
        check_config_fields(path, config)
        return config

    def _read_model_config(self) -> ModelConfig:
        settings = dict(self.config["model"])
        settings.setdefault("lookback", [])  # written before form context existed: tokens alone
        settings.setdefault("copy", False)  # or before the copy gate
        try:
            return ModelConfig.from_dict(settings)
        except (TypeError, ValueError) as e:
            raise ModelFolderError(f"{self.path / CONFIG_FILE}: bad model settings ({e})")

    def _read_tokenizer(self) -> Tokenizer:
        path = self.path / TOKENIZER_FILE
        try:
            tok = Tokenizer.from_dict(read_json(path, MAX_TOKENIZER_BYTES), path)
        except (ValueError, KeyError, TypeError) as e:
            raise ModelFolderError(f"{self.path}: bad {TOKENIZER_FILE} ({e})")
        vocab = self.model_config.vocab_size
        if tok.vocab_size != vocab:
            raise ModelFolderError(
                f"{self.path}: tokenizer has {tok.vocab_size} tokens but the model expects {vocab}")
        return tok

    def _read_key_prior(self) -> np.ndarray | None:
        """Log-probabilities of the KEY tokens the collection used (see ``key_prior``)."""
        prior = self.config.get("key_prior")
        where = f"{self.path / CONFIG_FILE}: 'key_prior'"
        if prior is None:
            return None
        if not isinstance(prior, dict):
            raise ModelFolderError(f"{where} must map KEY tokens to shares, got {short(prior)}")
        for name, share in prior.items():
            if not (name.startswith("KEY_") and name in self.tokenizer.ids):
                raise ModelFolderError(f"{where} names {short(name)}, which is not a KEY token")
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not (
                    math.isfinite(share) and 0 <= share <= 1):
                raise ModelFolderError(f"{where}: {name} must be a share in range 0..1, "
                                       f"got {short(share)}")
        if sum(prior.values()) > 1 + 1e-3:
            raise ModelFolderError(f"{where}: its shares add up to {sum(prior.values()):g}; "
                                   "shares of one collection add up to at most 1")
        return key_prior(self.config, self.tokenizer)

    def _read_form_prior(self) -> list | None:
        """The forms of the training pieces (``melody.sample.form.read_forms``), or None
        in folders made before them."""
        prior = self.config.get("form_prior")
        if prior is None:
            return None
        where = f"{self.path / CONFIG_FILE}: 'form_prior'"
        if not isinstance(prior, list) or len(prior) > FORM_PRIOR:
            raise ModelFolderError(f"{where} must be a list of at most {FORM_PRIOR} forms")
        try:
            forms = read_forms(prior)
        except ValueError as e:
            raise ModelFolderError(f"{where}: {e}")
        if any(len(plan) > MAX_BARS for _, plan in forms):
            raise ModelFolderError(f"{where}: a form is longer than {MAX_BARS} bars")
        return forms

    # -- the network -------------------------------------------------------------------
    @functools.cached_property
    def network(self) -> NumpyGRU:
        """The network in NumPy, for sampling (reads the weights the first time)."""
        path = self.path / MODEL_FILE
        check_zip(path, weights_limit(self.model_config.params))  # the file may have changed
        weights = read_member(path, WEIGHTS)
        return read_network(path, self.layers, weights, self.model_config.params,
                            self.model_config.lookback)

    def keras_model(self):
        """The Keras model, loaded in safe mode (no Lambda layers, no pickled code)."""
        from melody.backend import keras
        from melody.model import copy_mixture_class

        path = self.path / MODEL_FILE
        self.network  # every weight's size and shape checked before Keras unpacks any
        copy_mixture_class()  # registered, so that Keras finds the copy gate's layer
        try:
            model = keras().saving.load_model(path, safe_mode=True, compile=False)
        except Exception as e:  # Keras raises many types for a damaged file
            raise ModelFolderError(f"{path}: could not be loaded ({type(e).__name__}: {e})")
        outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
        if outputs != self.model_config.vocab_size:
            raise ModelFolderError(outputs_message(self.path, outputs, self.model_config.vocab_size))
        return model

    # -- melodies --------------------------------------------------------------------
    def generate(self, n: int = 4, *, seed: int | None = None, primer=None, tempo=None,
                 program=None, **options) -> list[Melody]:
        """``n`` new melodies, sampled together.

        Args:
            n: how many.
            seed: the same model, arguments and seed give the same melodies
                (default: a fresh seed).
            primer: a music file, or a ``Melody``, whose melody every new one continues.
            tempo, program: the melodies' tempo (BPM) and General MIDI program
                (default: the primer's, else 120 and 0).
            options: the other fields of ``SampleConfig``: ``notes`` or
                ``bars``, ``temperature``, ``top_k``, ``top_p``, ``key``,
                ``lowest``, ``highest``.
        """
        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
        try:
            config = SampleConfig(n=n, seed=seed, **options)
        except (TypeError, ValueError) as e:
            raise UsageError(str(e))
        check_output(tempo, program)
        return self.sample(config, primer, tempo, program).melodies

    def sample(self, config: SampleConfig, primer=None, tempo=None, program=None,
               on_finished=None) -> Batch:
        """Sample ``config.n`` melodies (see ``generate``) and keep their tokens;
        ``on_finished(k)``: k more melodies are done."""
        if primer is not None and not isinstance(primer, Primer):
            primer = read_primer(primer, self.tokenizer)
        if primer is not None and tempo is None:
            try:
                check_tempo(primer.melody.tempo)
            except ValueError:
                raise UsageError(f"primer {primer.file}: its tempo, {primer.melody.tempo:g} BPM, "
                                 f"is outside {MIN_TEMPO:g}..{MAX_TEMPO:g}; give --tempo")
        try:
            sequences = sample(self.network, self.tokenizer, config,
                               None if primer is None else primer.tokens, key_logp=self.key_prior,
                               on_finished=on_finished, form_prior=self.form_prior)
        except ValueError as e:
            raise UsageError(str(e))
        tempo = tempo or (primer.melody.tempo if primer else DEFAULT_TEMPO)
        program = program if program is not None else (
            primer.melody.program if primer else DEFAULT_PROGRAM)
        melodies = [self.tokenizer.decode(s, tempo=tempo, program=program) for s in sequences]
        for i, m in enumerate(melodies, start=1):
            m.source = f"{self.path} seed {config.seed} #{i}"
        return Batch(config, sequences, melodies, primer, tempo, program)


def check_output(tempo, program) -> None:
    """UsageError unless ``tempo`` (BPM) and ``program`` are in range (None: not given)."""
    try:
        if tempo is not None:
            check_tempo(tempo)
        if program is not None:
            check_int("program", program, 0, 127)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e))


# -- writing -------------------------------------------------------------------------
def save_model_folder(folder, model, tokenizer, config: dict) -> None:
    """Write model.keras, tokenizer.json and config.json atomically."""
    from melody.fileio import atomic_save_keras, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_keras(model, folder / MODEL_FILE)
    tokenizer.save(folder / TOKENIZER_FILE)
    config = dict(config)
    config["weights_digest"] = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()[:16]
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
