"""The model folder, opened and checked once, and the melodies it writes.

A model folder holds ``model.keras`` (Keras 3 native format), ``tokenizer.json``
and ``config.json``; that is all that ``generate`` and ``evaluate`` need.
``config.json``: {"model": ModelConfig, "train": arguments, "data": {"folder",
"digest"}, "history": [...], "metrics": {...}, "key_prior": {KEY token: share},
"weights_digest": sha256 of model.keras}.

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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.config import DEFAULT_PROGRAM, DEFAULT_TEMPO, ModelConfig, SampleConfig
from melody.errors import ModelFolderError, UsageError
from melody.notes import Melody
from melody.sample import NumpyGRU, Primer, key_prior, read_primer, sample
from melody.sample.weights import read_network
from melody.tokenizer import Tokenizer

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# What config.json may hold; the first three generate and evaluate read.
CONFIG_KEYS = ("model", "key_prior", "data", "train", "history", "metrics", "weights_digest",
               "evaluation", "trained_on", "parent")
MAX_JSON_BYTES = 16 * 2**20  # config.json, tokenizer.json
# Members of model.keras, and how large each may unpack; checked before any is read.
MAX_MEMBER_BYTES = {"metadata.json": 2**20, "config.json": 16 * 2**20,
                    "model.weights.h5": 2 * 2**30}
KNOWN_LAYERS = ("InputLayer", "Embedding", "GRU", "Dropout", "Dense", "Reshape", "Concatenate")
# The form context's layers (melody.model._context_inputs), as the NumPy sampler reads them.
_GRU_INPUTS = ["embedding", "lookback_flat", "position_embedding", "bar_embedding"]
_GRU_SETTINGS = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                 "go_backwards": False}


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
        self.layers = _read_architecture(self.path / MODEL_FILE, self.model_config.vocab_size)

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
        config = _read_json(path)
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise ModelFolderError(f"{path}: no model settings")
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ModelFolderError(f"{path}: unknown keys {', '.join(map(repr, unknown))}; "
                                   f"a model's config.json holds {', '.join(CONFIG_KEYS)}")
        data = config.get("data", {})
        if not isinstance(data, dict) or not all(
                isinstance(data.get(k), (str, type(None))) for k in ("folder", "digest")):
            raise ModelFolderError(f"{path}: 'data' must be an object with text 'folder' and "
                                   f"'digest', got {_short(data)}")
        if not isinstance(config.get("weights_digest", ""), (str, type(None))):
            raise ModelFolderError(f"{path}: 'weights_digest' must be text, "
                                   f"got {_short(config['weights_digest'])}")
        return config

    def _read_model_config(self) -> ModelConfig:
        settings = dict(self.config["model"])
        settings.setdefault("lookback", [])  # written before form context existed: tokens alone
        try:
            return ModelConfig.from_dict(settings)
        except (TypeError, ValueError) as e:
            raise ModelFolderError(f"{self.path / CONFIG_FILE}: bad model settings ({e})")

    def _read_tokenizer(self) -> Tokenizer:
        path = self.path / TOKENIZER_FILE
        try:
            tok = Tokenizer.from_dict(_read_json(path), path)
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
            raise ModelFolderError(f"{where} must map KEY tokens to shares, got {_short(prior)}")
        for name, share in prior.items():
            if not (name.startswith("KEY_") and name in self.tokenizer.ids):
                raise ModelFolderError(f"{where} names {name!r}, which is not a KEY token")
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not (
                    math.isfinite(share) and 0 <= share <= 1):
                raise ModelFolderError(f"{where}: {name} must be a share in range 0..1, "
                                       f"got {_short(share)}")
        return key_prior(self.config, self.tokenizer)

    # -- the network -------------------------------------------------------------------
    @functools.cached_property
    def network(self) -> NumpyGRU:
        """The network in NumPy, for sampling (reads the weights the first time)."""
        path = self.path / MODEL_FILE
        try:
            with zipfile.ZipFile(path) as z:
                weights = z.read("model.weights.h5")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})")
        return read_network(path, self.layers, weights, self.model_config.lookback)

    def keras_model(self):
        """The Keras model, loaded in safe mode (no Lambda layers, no pickled code)."""
        from melody.backend import keras

        path = self.path / MODEL_FILE
        try:
            model = keras().saving.load_model(path, safe_mode=True, compile=False)
        except Exception as e:  # Keras raises many types for a damaged file
            raise ModelFolderError(f"{path}: could not be loaded ({type(e).__name__}: {e})")
        outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
        if outputs != self.model_config.vocab_size:
            raise ModelFolderError(_outputs_message(self.path, outputs, self.model_config.vocab_size))
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
        seed = secrets.randbelow(2**32) if seed is None else seed
        try:
            config = SampleConfig(n=n, seed=seed, **options)
        except ValueError as e:
            raise UsageError(str(e))
        return self.sample(config, primer, tempo, program).melodies

    def sample(self, config: SampleConfig, primer=None, tempo=None, program=None) -> Batch:
        """Sample ``config.n`` melodies (see ``generate``) and keep their tokens."""
        if primer is not None and not isinstance(primer, Primer):
            primer = read_primer(primer, self.tokenizer)
        try:
            sequences = sample(self.network, self.tokenizer, config,
                               None if primer is None else primer.tokens, key_logp=self.key_prior)
        except ValueError as e:
            raise UsageError(str(e))
        tempo = tempo or (primer.melody.tempo if primer else DEFAULT_TEMPO)
        program = program if program is not None else (
            primer.melody.program if primer else DEFAULT_PROGRAM)
        melodies = [self.tokenizer.decode(s, tempo=tempo, program=program) for s in sequences]
        for i, m in enumerate(melodies, start=1):
            m.source = f"{self.path} seed {config.seed} #{i}"
        return Batch(config, sequences, melodies, primer, tempo, program)


# -- reading with limits -----------------------------------------------------------------
def _read_json(path: Path):
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ModelFolderError(f"{path}: {size} bytes; at most {MAX_JSON_BYTES} are read")
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise ModelFolderError(f"{path}: not readable JSON ({type(e).__name__}: {e})")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _outputs_message(folder: Path, outputs, vocab: int) -> str:
    return (f"{folder}: {MODEL_FILE} has {outputs} outputs but {CONFIG_FILE} and "
            f"{TOKENIZER_FILE} have {vocab} tokens")


def _read_architecture(path: Path, vocab: int) -> list:
    """The layer list of the architecture inside ``model.keras``, checked: member
    sizes before unpacking, only melody-model layers, a GRU the sampler can run,
    ``vocab`` outputs."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            for info in infos:
                limit = MAX_MEMBER_BYTES.get(info.filename)
                if limit is None:
                    raise ModelFolderError(f"{path}: holds {info.filename!r}; a Keras 3 model file "
                                           f"holds only {', '.join(MAX_MEMBER_BYTES)}")
                if info.file_size > limit:
                    raise ModelFolderError(f"{path}: {info.filename} unpacks to {info.file_size} "
                                           f"bytes; at most {limit} are read")
            arch = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile) as e:
        raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})")
    layers = arch.get("config", {}).get("layers") if isinstance(arch, dict) else None
    if not isinstance(layers, list) or not all(
            isinstance(layer, dict) and isinstance(layer.get("config", {}), dict) for layer in layers):
        raise ModelFolderError(f"{path}: no layer list in its architecture; not a melody model")
    for layer in layers:
        _check_layer(path, layer)
    logits = [layer for layer in layers if layer.get("name") == "logits"]
    outputs = logits[0].get("config", {}).get("units") if logits else None
    if outputs != vocab:
        raise ModelFolderError(_outputs_message(path.parent, outputs, vocab))
    return layers


def _check_layer(path, layer: dict) -> None:
    """Refuse layers the NumPy sampler would silently skip (a Lambda most of all)."""
    kind = layer.get("class_name")
    if kind == "Lambda":
        raise ModelFolderError(f"{path}: Lambda layers are refused (they can run arbitrary code)")
    if kind not in KNOWN_LAYERS:
        raise ModelFolderError(f"{path}: layer {layer.get('name')!r} is a {kind}; a melody "
                               f"model has only {', '.join(KNOWN_LAYERS)} layers")
    cfg = layer.get("config", {})
    if kind == "GRU":
        for name, value in _GRU_SETTINGS.items():
            if cfg.get(name, value) != value:
                raise ModelFolderError(
                    f"{path}: GRU {cfg.get('name')} has {name}={cfg.get(name)!r}; "
                    f"the sampler supports only {name}={value!r}")
    elif kind == "Reshape" and not (layer.get("name") == "lookback_flat" and isinstance(
            cfg.get("target_shape"), list) and cfg["target_shape"][:1] == [-1]):
        raise ModelFolderError(f"{path}: layer {layer.get('name')!r} reshapes to "
                               f"{cfg.get('target_shape')}; only the lookback inputs are reshaped")
    elif kind == "Concatenate" and (layer.get("name") != "gru_input" or cfg.get("axis") != -1
                                    or _sources(layer) != _GRU_INPUTS):
        raise ModelFolderError(f"{path}: layer {layer.get('name')!r} joins {_sources(layer)}; "
                               f"a melody model joins only {_GRU_INPUTS}, in that order")


def _sources(layer: dict) -> list:
    """The names of the layers whose outputs a layer takes, in order."""
    try:
        (node,) = layer["inbound_nodes"]
        return [t["config"]["keras_history"][0] for t in node["args"][0]]
    except (KeyError, TypeError, ValueError, IndexError):
        return []


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
