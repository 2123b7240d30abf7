"""Grow a model without form context into one with it, predicting exactly as before.

    python bench/grow_form.py melody/pretrained/folk models/folk-grown
    python app.py train --from models/folk-grown --out models/folk-form

How the shipped model got its form context without a GPU: the new network
keeps every weight of the old one; the GRU's first kernel gains rows for the
lookback, position and bar embeddings, all zero, so the context starts out
unheard; the copy gate starts shut (its bias -8 for every distance: the
network's own distribution keeps 99.9% of the mass). The grown model scores
within a hair of its parent, and ``train --from`` (which scores the parent as
epoch 0 and keeps the best epoch) can then only improve it while it learns to
use what the context says. Writes a model folder; trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody.config import ModelConfig
from melody.model import build_model, input_width
from melody.modelfolder import ModelFolder, save_model_folder
from melody.musicality.originality import ORIGINALITY_FILE

SHUT = -8.0  # the copy gate's starting bias for each distance


def grown_config(old: ModelConfig) -> ModelConfig:
    defaults = ModelConfig(vocab_size=old.vocab_size)
    return dataclasses.replace(old, lookback=defaults.lookback, copy=defaults.copy,
                               lookback_embedding=defaults.lookback_embedding,
                               position_embedding=defaults.position_embedding)


def grow(parent: ModelFolder):
    """The grown Keras model of ``parent`` (which has no form context), its config and
    the parent's weight count."""
    old_cfg = parent.model_config
    if old_cfg.lookback:
        raise SystemExit(f"{parent.path} already has form context")
    cfg = grown_config(old_cfg)
    old, new = parent.keras_model(), build_model(cfg)
    for layer in old.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        target = new.get_layer(layer.name)
        if layer.name == "gru_0":  # context rows after the embedding's, zero
            kernel, *rest = weights
            grown = np.zeros((input_width(cfg), kernel.shape[1]), kernel.dtype)
            grown[:kernel.shape[0]] = kernel
            weights = [grown, *rest]
        target.set_weights(weights)
    if cfg.copy:
        gate = new.get_layer("copy_gate")
        kernel, bias = gate.get_weights()
        bias[:] = SHUT
        bias[0] = 0.0
        gate.set_weights([np.zeros_like(kernel), bias])
    return new, cfg, old.count_params()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parent", help="model folder without form context")
    parser.add_argument("out", help="new model folder (must not exist)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; choose another folder")
    parent = ModelFolder(args.parent)
    model, cfg, old_params = grow(parent)
    config = dict(parent.config, model=cfg.to_dict())
    config["parent"] = {"folder": str(parent.path), "weights_digest": parent.weights_digest}
    save_model_folder(out, model, parent.tokenizer, config)
    if (parent.path / ORIGINALITY_FILE).exists():
        shutil.copy2(parent.path / ORIGINALITY_FILE, out / ORIGINALITY_FILE)
    print(f"grew {parent.path} into {out}: lookback {cfg.lookback}, copy gate {cfg.copy}, "
          f"{model.count_params():,} weights (was {old_params:,})")


if __name__ == "__main__":
    main()
