"""The GRU language model over event tokens, and the config that rebuilds it.

token ids -> Embedding -> GRU x layers (dropout between) -> Dense logits.

``reset_after=True`` (the default) is the variant cuDNN runs, so the same model
trains fast on a GPU; ``reset_after=False`` is the textbook cell.

>>> cfg = ModelConfig(vocab_size=10, embedding=4, units=8, layers=1)
>>> ModelConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the model; saved in ``config.json`` and used to rebuild it."""

    vocab_size: int
    embedding: int = 96
    units: int = 320
    layers: int = 2
    dropout: float = 0.2
    reset_after: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "embedding", "units", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in range [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model settings: {', '.join(sorted(unknown))}")
        return cls(**data)


def build_model(config: ModelConfig, stateful_batch: int | None = None):
    """The Keras model for ``config``: ids [batch, time] -> logits [batch, time, vocab].

    Layer names are fixed (``embedding``, ``gru_0``..., ``logits``) so that the
    NumPy sampler can find each weight.
    """
    from melody.backend import keras

    k = keras()
    inputs = k.Input(shape=(None,), dtype="int32", name="tokens")
    x = k.layers.Embedding(config.vocab_size, config.embedding, name="embedding")(inputs)
    for i in range(config.layers):
        x = k.layers.GRU(
            config.units,
            return_sequences=True,
            reset_after=config.reset_after,
            name=f"gru_{i}",
        )(x)
        if config.dropout:
            x = k.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    logits = k.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    return k.Model(inputs, logits, name="melody_gru")


def flops_per_token(config: ModelConfig) -> int:
    """Forward multiply-adds x2 per token (the embedding lookup counts as zero)."""
    flops = 0
    inp = config.embedding
    for _ in range(config.layers):
        flops += 2 * 3 * (inp + config.units) * config.units
        inp = config.units
    flops += 2 * config.units * config.vocab_size
    return flops


# -- the model folder ---------------------------------------------------------
# model.keras, tokenizer.json and config.json are all that generate/evaluate
# need. config.json: {"model": ModelConfig, "train": arguments, "data":
# {"folder", "digest"}, "history": [...], "metrics": {...},
# "weights_digest": sha256 of model.keras}.

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


class ModelFolderError(ValueError):
    """A model folder that cannot be used; the message names the problem."""


def default_model_folder():
    """The pretrained model shipped inside the package."""
    from pathlib import Path

    return Path(__file__).parent / "pretrained" / "folk"


def read_config(folder) -> dict:
    import json
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder not found: {folder}")
    for name in (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE):
        if not (folder / name).is_file():
            if name == MODEL_FILE and any(folder.glob("*.h5")):
                raise ModelFolderError(
                    f"{folder}: .h5 models are not accepted; a model folder holds {MODEL_FILE}"
                )
            raise ModelFolderError(f"{folder}: missing {name}; is this a model folder?")
    try:
        return json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: not readable JSON ({e})")


def load_tokenizer(folder, config: dict | None = None):
    """The folder's tokenizer, checked against the model's vocabulary size."""
    from pathlib import Path

    from melody.tokenizer import Tokenizer

    config = config or read_config(folder)
    try:
        tok = Tokenizer.load(Path(folder) / TOKENIZER_FILE)
    except (ValueError, KeyError) as e:
        raise ModelFolderError(f"{folder}: bad {TOKENIZER_FILE} ({e})")
    vocab = ModelConfig.from_dict(config["model"]).vocab_size
    if tok.vocab_size != vocab:
        raise ModelFolderError(
            f"{folder}: tokenizer has {tok.vocab_size} tokens but the model expects {vocab}"
        )
    return tok


def load_keras_model(folder):
    """Load ``model.keras`` in Keras safe mode (no Lambda layers, no pickled code)."""
    import json
    import zipfile
    from pathlib import Path

    from melody.backend import keras

    path = Path(folder) / MODEL_FILE
    try:
        with zipfile.ZipFile(path) as z:
            arch = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})")
    if '"Lambda"' in json.dumps(arch):
        raise ModelFolderError(f"{path}: Lambda layers are refused (they can run arbitrary code)")
    k = keras()
    try:
        model = k.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a damaged file
        raise ModelFolderError(f"{path}: could not be loaded ({type(e).__name__}: {e})")
    _check_outputs(folder, model)
    return model


def _check_outputs(folder, model) -> None:
    """The model must score exactly the tokens config.json (and so tokenizer.json) names."""
    import json
    from pathlib import Path

    try:
        vocab = json.loads((Path(folder) / CONFIG_FILE).read_text())["model"]["vocab_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no config to hold it to (read_config reports a missing one)
    outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if outputs != vocab:
        raise ModelFolderError(
            f"{folder}: {MODEL_FILE} has {outputs} outputs but config.json and "
            f"{TOKENIZER_FILE} have {vocab} tokens"
        )


def save_model_folder(folder, model, tokenizer, config: dict) -> None:
    """Write model.keras, tokenizer.json and config.json atomically."""
    import hashlib
    import json
    from pathlib import Path

    from melody.fileio import atomic_save_keras, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_keras(model, folder / MODEL_FILE)
    tokenizer.save(folder / TOKENIZER_FILE)
    config = dict(config)
    config["weights_digest"] = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()[:16]
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
