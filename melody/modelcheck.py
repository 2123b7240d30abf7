"""Reading a model folder's files with limits, and checking every setting they hold.

``ModelFolder`` opens a folder through these. JSON is read only up to a size
and a nesting depth; each field of ``config.json`` must have its type and
range; ``model.keras`` (a zip) is refused by its directory alone when a member
would unpack to more than the architecture needs, and its architecture must be
exactly the network ``melody.model.build_model`` makes for the folder's
settings. A problem is a ``ModelFolderError`` naming the file, the key or
layer, what is allowed, and what was found.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

from melody.config import TrainConfig
from melody.errors import ModelFolderError

MAX_CONFIG_BYTES = 8 * 2**20  # config.json: 10,000 epochs of history fit in 3 MB
MAX_DEPTH = 32  # nesting of any JSON a model folder holds (ours nest 5 deep)
MAX_HISTORY = 100_000
# Members of model.keras and how large each may unpack, checked before any is read;
# the weights may take twice what the architecture's float32 weights need, plus 1 MB.
ARCHITECTURE_BYTES = {"metadata.json": 2**16, "config.json": 2**20}
WEIGHTS = "model.weights.h5"
KNOWN_LAYERS = ("InputLayer", "Embedding", "GRU", "Dropout", "Dense", "Reshape", "Concatenate",
                "CopyMixture")
COPY_LAYER = "melody>CopyMixture"  # melody.model's copy mixture, as Keras registers it
_GRU_SETTINGS = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                 "go_backwards": False, "return_sequences": True, "return_state": False,
                 "stateful": False}
_DENSE_SETTINGS = {"activation": "linear", "use_bias": True}


def read_json(path: Path, limit: int):
    """The JSON in ``path``: at most ``limit`` bytes, nested at most MAX_DEPTH deep."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ModelFolderError(f"{path}: {size} bytes; at most {limit} are read")
        with open(path, "rb") as f:
            data = json.loads(f.read(limit + 1))
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise ModelFolderError(f"{path}: not readable JSON ({type(e).__name__}: {e})") from None
    if nesting(data) > MAX_DEPTH:
        raise ModelFolderError(f"{path}: JSON nested deeper than {MAX_DEPTH} levels; ours "
                               "nest 5 deep")
    return data


def nesting(data) -> int:
    """How deep lists and objects nest in ``data`` (a scalar: 0), without recursion;
    anything deeper than MAX_DEPTH counts as MAX_DEPTH + 1."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else (
            value if isinstance(value, list) else None)
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:  # deeper is refused anyway: no need to walk it
            stack.extend((child, depth + 1) for child in children)
    return deepest


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- config.json -------------------------------------------------------------------------
def check_config_fields(path: Path, config: dict) -> None:
    """The fields of config.json other than "model", "key_prior" and "form_prior"
    (checked by their readers): each of its type, numbers finite."""
    def fail(key, wanted, value):
        raise ModelFolderError(f"{path}: {key!r} must be {wanted}, got {short(value)}")

    data = config.get("data", {})
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), (str, type(None))) for k in ("folder", "digest")):
        fail("data", "an object with text 'folder' and 'digest'", data)
    for key in ("weights_digest", "trained_on"):
        if not isinstance(config.get(key), (str, type(None))):
            fail(key, "text", config[key])
    parent = config.get("parent")
    if parent is not None and not (isinstance(parent, dict) and set(parent) <= {
            "folder", "weights_digest"} and all(isinstance(v, (str, type(None)))
                                                for v in parent.values())):
        fail("parent", "an object with text 'folder' and 'weights_digest'", parent)
    if "train" in config:
        train = config["train"]
        if not isinstance(train, dict):
            fail("train", "an object of training settings", train)
        settings = {k: v for k, v in train.items() if k != "backend"}
        if not isinstance(train.get("backend", ""), str):
            fail("train.backend", "text", train["backend"])
        try:
            TrainConfig.from_dict(settings)
        except (TypeError, ValueError) as e:
            raise ModelFolderError(f"{path}: bad training settings ({e})") from None
    history = config.get("history", [])
    if not isinstance(history, list) or len(history) > MAX_HISTORY or not all(
            isinstance(h, dict) and all(_is_figure(v) for v in h.values()) for h in history):
        fail("history", f"a list of at most {MAX_HISTORY} objects of numbers", history)
    for key in ("metrics", "evaluation"):
        if not isinstance(config.get(key, {}), dict):
            fail(key, "an object", config[key])
    if not all(_is_figure(v) for v in config.get("metrics", {}).values()):
        fail("metrics", "an object of numbers", config["metrics"])


def _is_figure(value) -> bool:
    """A number (finite, or null), or text: what a history entry or a metric may be."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (int, str))


# -- model.keras -------------------------------------------------------------------------
def weights_limit(params: int, optimizer: bool = False) -> int:
    """Bytes ``model.weights.h5`` may unpack to for a model of ``params`` weights
    (a checkpoint also holds Adam's two moments and its gradients' step)."""
    return 2 * 4 * params * (3 if optimizer else 1) + 2**20


def check_zip(path: Path, weights_bytes: int) -> None:
    """Refuse ``path`` by its zip directory alone: only a Keras 3 file's members, each
    no larger than it may unpack to, nothing read yet."""
    limits = dict(ARCHITECTURE_BYTES, **{WEIGHTS: weights_bytes})
    try:
        size = os.stat(path).st_size
        if size > sum(limits.values()) + 2**20:
            raise ModelFolderError(f"{path}: {size} bytes; a model of config.json's settings "
                                   f"takes at most {sum(limits.values()) + 2**20}")
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})") from None
    seen = set()
    for info in infos:
        limit = limits.get(info.filename)
        if limit is None or info.filename in seen:
            raise ModelFolderError(f"{path}: holds {info.filename!r}"
                                   f"{' twice' if limit is not None else ''}; a Keras 3 model "
                                   f"file holds only {', '.join(limits)}, once each")
        seen.add(info.filename)
        if info.file_size > limit:
            raise ModelFolderError(f"{path}: {info.filename} unpacks to {info.file_size} "
                                   f"bytes; at most {limit} for a model of config.json's settings")


def read_member(path: Path, name: str) -> bytes:
    """One member of a zip already passed by ``check_zip`` (its size is bounded)."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.read(name)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})") from None


def read_architecture(path: Path, model) -> list:
    """The layer list inside ``model.keras``, checked against ``model`` (the folder's
    ``ModelConfig``): the layers ``build_model`` makes, in its order, with its
    settings, and nothing the NumPy sampler would skip (a Lambda most of all)."""
    check_zip(path, weights_limit(model.params))
    try:
        arch = json.loads(read_member(path, "config.json"))
    except (ValueError, RecursionError) as e:
        raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})") from None
    if nesting(arch) > MAX_DEPTH:
        raise ModelFolderError(f"{path}: its architecture is nested deeper than {MAX_DEPTH}")
    layers = arch.get("config", {}).get("layers") if isinstance(arch, dict) else None
    if not isinstance(layers, list) or not all(
            isinstance(layer, dict) and isinstance(layer.get("config", {}), dict) for layer in layers):
        raise ModelFolderError(f"{path}: no layer list in its architecture; not a melody model")
    for layer in layers:
        _check_kind(path, layer)
    logits = [layer for layer in layers if layer.get("name") == "logits"]
    outputs = logits[0].get("config", {}).get("units") if logits else None
    if outputs != model.vocab_size:
        raise ModelFolderError(outputs_message(path.parent, outputs, model.vocab_size))
    _check_order(path, layers, model)
    return layers


def outputs_message(folder: Path, outputs, vocab: int) -> str:
    return (f"{folder}: model.keras has {outputs} outputs but config.json and "
            f"tokenizer.json have {vocab} tokens")


def _check_kind(path, layer: dict) -> None:
    kind = layer.get("class_name")
    if kind == "Lambda":
        raise ModelFolderError(f"{path}: Lambda layers are refused (they can run arbitrary code)")
    if kind == "CopyMixture" and layer.get("registered_name") != COPY_LAYER:
        raise ModelFolderError(f"{path}: layer {short(layer.get('name'))} is a CopyMixture "
                               f"registered as {short(layer.get('registered_name'))}, not "
                               f"melody's ({COPY_LAYER})")
    if kind not in KNOWN_LAYERS:
        raise ModelFolderError(f"{path}: layer {short(layer.get('name'))} is a {short(kind)}; a "
                               f"melody model has only {', '.join(KNOWN_LAYERS)} layers")


def _check_order(path, layers: list, model) -> None:
    """Exactly tokens, embedding, (gru_i, [dropout_i]) x layers, logits, each set as
    ``model`` says; with form context, its inputs and embeddings before the GRUs
    (in the order Keras lists them), joined as the NumPy sampler reads them."""
    expected = [("InputLayer", "tokens", {}),
                ("Embedding", "embedding", {"input_dim": model.vocab_size,
                                            "output_dim": model.embedding})]
    if model.lookback:
        expected = _context_layers(path, layers, model)
    for i in range(model.layers):
        expected.append(("GRU", f"gru_{i}", dict(_GRU_SETTINGS, units=model.units,
                                                 reset_after=model.reset_after)))
        if model.dropout:
            expected.append(("Dropout", f"dropout_{i}", {"rate": model.dropout}))
    expected.append(("Dense", "logits", dict(_DENSE_SETTINGS, units=model.vocab_size)))
    if model.lookback and model.copy:
        expected.append(("Dense", "copy_gate", dict(_DENSE_SETTINGS, units=1 + len(model.lookback))))
        expected.append(("CopyMixture", "log_probs", {"vocab_size": model.vocab_size}))
    found = [(layer.get("class_name"), layer.get("name")) for layer in layers]
    if model.lookback:  # the inputs' order is Keras's to choose: compare them as a set
        order = {name: i for i, (_, name, _) in enumerate(expected)}
        layers = sorted(layers, key=lambda layer: order.get(layer.get("name"), len(order)))
        found = [(layer.get("class_name"), layer.get("name")) for layer in layers]
    wanted = [(kind, name) for kind, name, _ in expected]
    if found != wanted:
        extra = [n for k, n in found if (k, n) not in wanted]
        missing = [n for k, n in wanted if (k, n) not in found]
        which = (f"has {short(extra)}" if extra else "") + (" and " if extra and missing else "") + (
            f"lacks {short(missing)}" if missing else "") or "has its layers in another order"
        raise ModelFolderError(
            f"{path}: its architecture {which}; config.json's settings ({model.layers} GRU "
            f"layers{', dropout' if model.dropout else ''}"
            f"{', form context' if model.lookback else ''}) make {short([n for _, n in wanted])}")
    for layer, (kind, name, settings) in zip(layers, expected):
        cfg = layer.get("config", {})
        for key, value in settings.items():
            got = cfg.get(key, value if key in _GRU_SETTINGS or key in _DENSE_SETTINGS else None)
            if got != value or type(got) is not type(value):
                raise ModelFolderError(f"{path}: {kind} {name} has {key}={short(got)}; "
                                       f"config.json's settings need {key}={value!r}")


_GRU_INPUTS = ["embedding", "lookback_flat", "position_embedding", "bar_embedding"]


def _context_layers(path, layers: list, model) -> list:
    """The layers before the GRUs of a model with form context (``melody.model``),
    with their settings; the join of the embeddings must be in the sampler's order."""
    from melody.config import CONTEXT_BARS, CONTEXT_POSITIONS

    wide = len(model.lookback) * model.lookback_embedding
    join = [layer for layer in layers if layer.get("name") == "gru_input"]
    if join and _sources(join[0]) != _GRU_INPUTS:
        raise ModelFolderError(f"{path}: layer 'gru_input' joins {short(_sources(join[0]))}; a "
                               f"melody model joins {_GRU_INPUTS}, in that order")
    shape = [layer.get("config", {}).get("batch_shape") for layer in layers
             if layer.get("name") == "lookback"]
    if shape and shape[0] != [None, None, len(model.lookback)]:
        raise ModelFolderError(f"{path}: input 'lookback' has shape {short(shape[0])}; config.json's "
                               f"{len(model.lookback)} lookback distances need "
                               f"[null, null, {len(model.lookback)}]")
    return [("InputLayer", "tokens", {}), ("InputLayer", "lookback", {}),
            ("InputLayer", "position", {}), ("InputLayer", "bar", {}),
            ("Embedding", "embedding", {"input_dim": model.vocab_size,
                                        "output_dim": model.embedding}),
            ("Embedding", "lookback_embedding", {"input_dim": model.vocab_size + 1,
                                                 "output_dim": model.lookback_embedding}),
            ("Reshape", "lookback_flat", {"target_shape": [-1, wide]}),
            ("Embedding", "position_embedding", {"input_dim": CONTEXT_POSITIONS,
                                                 "output_dim": model.position_embedding}),
            ("Embedding", "bar_embedding", {"input_dim": CONTEXT_BARS,
                                            "output_dim": model.position_embedding}),
            ("Concatenate", "gru_input", {"axis": -1})]


def _sources(layer: dict) -> list:
    """The names of the layers whose outputs a layer takes, in order."""
    try:
        (node,) = layer["inbound_nodes"]
        return [t["config"]["keras_history"][0] for t in node["args"][0]]
    except (KeyError, TypeError, ValueError, IndexError):
        return []
