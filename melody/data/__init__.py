"""Datasets: made from music collections by ``prepare``, opened for training and evaluation.

- ``dataset``: the folder's format (manifest, tokenizer, token arrays) and the
  ``Dataset`` type that opens it;
- ``prepare``: a collection -> a dataset folder, with ``discover`` (finding the
  files), ``unit`` (reading one), ``pool`` (the worker processes that do),
  ``cache`` (what earlier runs read), ``split`` (duplicates and the
  train/validation split) and ``scratch`` (its on-disk lists).
"""

from __future__ import annotations

import sys
from pathlib import Path

from melody.data.dataset import (
    SPLITS,
    Dataset,
    TokenData,
    default_folder,
    is_dataset,
    load_dataset,
    training_split,
    write_manifest,
    write_split,
)
from melody.data.prepare import prepare, summary_text
from melody.data.split import split_pieces
from melody.errors import UsageError

__all__ = ["SPLITS", "Dataset", "TokenData", "default_folder", "is_dataset", "load_dataset",
           "prepare", "resolve_data", "split_pieces", "summary_text", "training_split",
           "write_manifest", "write_split"]


def resolve_data(path) -> Dataset:
    """The dataset ``--data`` names: a prepared dataset as it is; a folder or file
    of music is prepared first (into ``default_folder``), and so is the built-in
    corpus when its dataset is missing."""
    from melody import corpus

    path = Path(path)
    if is_dataset(path):
        return load_dataset(path)
    if path == corpus.DATASET:
        return load_dataset(_prepare([], path))
    if path.exists():
        return load_dataset(_prepare([str(path)], default_folder([path])))
    raise UsageError(f"--data must be a prepared dataset or a folder of music files, got {path}")


def _prepare(sources: list, out: Path) -> Path:
    print(f"preparing {', '.join(sources) or 'the built-in folk corpus'} into {out}", file=sys.stderr)
    prepare(sources, out)
    if not is_dataset(out):
        raise UsageError(f"could not prepare a dataset from {', '.join(sources)}")
    return out
