"""The NumPy network's weights, read from the ``model.weights.h5`` inside ``model.keras``.

Keras stores a functional model's weights under ``layers/<class in snake
case>[_<n>]`` in the order of the architecture's layer list, so the
architecture names which group belongs to which of our layers. Every array is
checked against the shapes the network needs, so a damaged file is one
``ModelFolderError``, never a failure halfway through sampling.
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np

from melody.context import BAR_IDS, POSITIONS
from melody.errors import ModelFolderError
from melody.sample.network import ContextTables, GRULayer, NumpyGRU


def _snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``: how the weights file names each layer."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read_network(path, layers: list, weights: bytes, max_values: int,
                 lookback: tuple[int, ...] = ()) -> NumpyGRU:
    """The NumpyGRU of ``layers`` (the architecture's layer list, already
    checked) and ``weights`` (the bytes of ``model.weights.h5``); ``lookback``
    the form context's distances in bars (none for a model without it);
    ``path`` names the file in errors. Each array's size is read from its header
    first: all of them together may hold at most ``max_values`` numbers (what the
    architecture needs), so a compressed array that would unpack to gigabytes
    is refused before it is unpacked."""
    import h5py

    groups, by_name, used = {}, {}, {}
    for layer in layers:
        base = _snake_case(layer["class_name"])
        used[base] = used.get(base, -1) + 1
        groups[layer["name"]] = base if used[base] == 0 else f"{base}_{used[base]}"
        by_name[layer["name"]] = layer
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            sizes = []  # of every array, from its header: nothing is unpacked yet
            h5.visititems(lambda _, item: sizes.append(item.size)
                          if isinstance(item, h5py.Dataset) else None)
            if sum(sizes) > max_values:
                raise ModelFolderError(f"{path}: its weights hold more numbers than the "
                                       f"architecture's {max_values}")

            def variables(name, sub="vars"):
                if name not in groups:
                    raise ModelFolderError(f"{path}: no layer named {name!r}; not a melody model")
                group = h5["layers"][groups[name]][sub]
                if len(group) > 4:
                    raise ModelFolderError(f"{path}: layer {name!r} has {len(group)} weight "
                                           "arrays; a melody model's layers have at most 3")
                return [np.asarray(group[str(i)], dtype=np.float32) for i in range(len(group))]

            (embedding,) = variables("embedding")
            context = None
            if "lookback_embedding" in groups:
                context = ContextTables(*(variables(name)[0] for name in (
                    "lookback_embedding", "position_embedding", "bar_embedding")))
            grus = []
            for i in range(len([n for n in by_name if re.fullmatch(r"gru_\d+", n)])):
                reset_after = bool(by_name[f"gru_{i}"]["config"].get("reset_after", True))
                kernel, recurrent, bias = variables(f"gru_{i}", "cell/vars")
                rec_bias = bias[1] if reset_after else None
                bias = bias[0] if reset_after else bias
                grus.append(GRULayer(kernel, recurrent, bias, rec_bias, reset_after))
            logits_kernel, logits_bias = variables("logits")
            if context is not None and "copy_gate" in groups:
                context = dataclasses.replace(context, **dict(zip(
                    ("gate_kernel", "gate_bias"), variables("copy_gate"))))
    except (OSError, KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
        raise ModelFolderError(f"{path}: weights unreadable ({type(e).__name__}: {e})")
    if not grus:
        raise ModelFolderError(f"{path}: no GRU layers named gru_0...; not a melody model")
    distances = _distances(by_name) if context is not None else 0
    if distances != len(lookback):
        raise ModelFolderError(f"{path}: the model reads {distances} lookback distances but "
                               f"config.json names {len(lookback)} ({list(lookback)})")
    _check_shapes(path, embedding, grus, logits_kernel, logits_bias, context, distances)
    return NumpyGRU(embedding, grus, logits_kernel, logits_bias, context, lookback)


def _distances(by_name: dict) -> int:
    """How many lookback distances the architecture's ``lookback`` input holds."""
    shape = by_name.get("lookback", {}).get("config", {}).get("batch_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and isinstance(shape[2], int)):
        raise ModelFolderError(f"lookback input has shape {shape}, expected [batch, time, distances]")
    return shape[2]


def _check_shapes(path, embedding, grus, logits_kernel, logits_bias, context, distances) -> None:
    """Every array the shape the next one needs: [vocab, embedding], [inputs, 3 units]..."""
    vocab, width = embedding.shape if embedding.ndim == 2 else (None, None)
    expected = []
    if context is not None and vocab is not None:
        wide, pos = context.lookback.shape[-1], context.position.shape[-1]
        expected += [("lookback embedding", context.lookback, (vocab + 1, wide)),
                     ("position embedding", context.position, (POSITIONS, pos)),
                     ("bar embedding", context.bar, (BAR_IDS, pos))]
        width += distances * wide + 2 * pos
    for i, layer in enumerate(grus):
        units = layer.recurrent.shape[0] if layer.recurrent.ndim == 2 else -1
        expected += [(f"gru_{i} kernel", layer.kernel, (width, 3 * units)),
                     (f"gru_{i} recurrent kernel", layer.recurrent, (units, 3 * units)),
                     (f"gru_{i} bias", layer.bias, (3 * units,))]
        if layer.reset_after:
            expected.append((f"gru_{i} recurrent bias", layer.recurrent_bias, (3 * units,)))
        width = units
    expected += [("logits kernel", logits_kernel, (width, vocab)), ("logits bias", logits_bias, (vocab,))]
    if context is not None and context.gate_kernel is not None:
        expected += [("copy gate kernel", context.gate_kernel, (width, 1 + distances)),
                     ("copy gate bias", context.gate_bias, (1 + distances,))]
    if vocab is None:
        raise ModelFolderError(f"{path}: embedding weights have shape {embedding.shape}, "
                               "expected [vocabulary, embedding]")
    for what, array, shape in expected:
        if array.shape != shape:
            raise ModelFolderError(f"{path}: {what} has shape {list(array.shape)}, "
                                   f"expected {list(shape)}")
        if not np.isfinite(array).all():
            raise ModelFolderError(f"{path}: {what} holds NaN or infinite values")


def check_values(path, weights: bytes, max_values: int) -> None:
    """Refuse an HDF5 weights file whose arrays, by their headers, hold more than
    ``max_values`` numbers in all (before Keras unpacks any of them)."""
    import h5py

    total, arrays = 0, []
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            h5.visititems(lambda name, obj: arrays.append(obj.size)
                          if isinstance(obj, h5py.Dataset) else None)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ModelFolderError(f"{path}: weights unreadable ({type(e).__name__}: {e})")
    total = sum(arrays)
    if total > max_values:
        raise ModelFolderError(f"{path}: its weights hold {total} numbers; at most "
                               f"{max_values} for a model of these settings")
