"""The dataset folder: its format, and the one type that opens it.

A dataset folder holds:

- ``manifest.json``: sources, every input file (path, status, reason, track,
  notes), every piece (id, file, split, notes, tokens, tempo, time signature,
  key, program, duplicate_of), counts, split settings and tokenizer settings;
- ``tokenizer.json``;
- ``{train,val}.tokens.npy`` (uint16, the pieces' tokens end to end, each
  piece from BOS to EOS) and ``{train,val}.offsets.npy`` (int64, piece i is
  ``tokens[offsets[i]:offsets[i+1]]``). They are memory-mapped, so a dataset
  larger than memory streams from disk.
- ``cache/``: what ``prepare`` read from each file (``index.jsonl`` plus one
  ``tokens-NAME.u16``), reused while a file's size and mtime are unchanged,
  and ``dataset.json``, the hash of everything the dataset was made from, so
  that a rerun over an unchanged collection with the same settings stops
  after looking at the files.

A "piece" is one unit read: a file, or one tune of a many-tune ABC file. A
skipped piece's reason is one of ``errors.REASONS`` or "timed out", "out of
memory", "crashed", "duplicate", "pitch out of range", "unencodable", "read
error". ``manifest.json`` is written last, so a folder is a dataset
(``is_dataset``) only once all of it is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType

import numpy as np

from melody.config import DATASETS
from melody.fileio import atomic_open, write_npy
from melody.tokenizer import Tokenizer

SPLITS = ("train", "val")


@dataclass
class TokenData:
    """The pieces of one split: a token array and piece offsets, memory-mapped."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def piece(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def pieces(self):
        for i in range(len(self)):
            yield self.piece(i)

    @classmethod
    def from_pieces(cls, pieces) -> "TokenData":
        pieces = [np.asarray(p) for p in pieces]
        lengths = [len(p) for p in pieces]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tokens = np.concatenate(pieces).astype(np.uint16) if pieces else np.zeros(0, np.uint16)
        return cls(tokens, offsets)


class Dataset:
    """A prepared dataset folder. The manifest (tens of MB for a large
    collection) is read only when asked for: training and evaluation need just
    the token arrays, the tokenizer and the digest."""

    def __init__(self, folder, manifest: dict | None = None, tokenizer: Tokenizer | None = None):
        self.folder = Path(folder)
        self._manifest = manifest
        self.tokenizer = tokenizer or Tokenizer.load(self.folder / "tokenizer.json")

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = json.loads((self.folder / "manifest.json").read_text())
        return self._manifest

    def split(self, name: str) -> TokenData:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        tokens = np.load(self.folder / f"{name}.tokens.npy", mmap_mode="r")
        offsets = np.load(self.folder / f"{name}.offsets.npy")
        return TokenData(tokens, offsets)

    @property
    def digest(self) -> str:
        """Short hash of the manifest: which data a model was trained on."""
        h = hashlib.sha256()
        with open(self.folder / "manifest.json", "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]


def is_dataset(folder) -> bool:
    return (Path(folder) / "manifest.json").is_file()


def load_dataset(folder) -> Dataset:
    return Dataset(folder)


def write_split(folder, name: str, data: TokenData) -> None:
    """Write one split's arrays atomically."""
    write_split_blocks(folder, name, data.offsets, [data.tokens])


def write_split_blocks(folder, name: str, offsets, blocks) -> None:
    """One split's arrays, atomically, its tokens from ``blocks`` as they come."""
    with atomic_open(Path(folder) / f"{name}.tokens.npy") as f:
        write_npy(f, np.uint16, int(offsets[-1]), blocks)
    with atomic_open(Path(folder) / f"{name}.offsets.npy") as f:
        np.save(f, np.asarray(offsets, np.int64))


def write_manifest(folder, manifest: dict) -> None:
    """Write ``manifest.json`` atomically, one top-level key, file or piece per line.

    A value may be a list or a generator of entries (``prepare`` streams them
    from disk). Streamed line by line through the C encoder: ``indent`` would
    force the pure-Python one (seconds for a large collection) and one big
    string would double the memory the manifest takes.
    """
    with atomic_open(Path(folder) / "manifest.json", "w", encoding="utf-8") as f:
        f.write("{")
        for n, (key, value) in enumerate(manifest.items()):
            f.write(f"{',' if n else ''}\n {json.dumps(key)}: ")
            if isinstance(value, (list, GeneratorType)):
                f.write("[")
                i = -1
                for i, item in enumerate(value):
                    f.write(f"{',' if i else ''}\n  {json.dumps(item)}")
                f.write("\n ]" if i >= 0 else "]")
            else:
                f.write(json.dumps(value))
        f.write("\n}\n")


def default_folder(sources) -> Path:
    """Where a collection is prepared unless told: ``datasets/NAME`` of its first
    source (a file's name without its suffix, a folder's whole name)."""
    first = Path(os.path.abspath(sources[0]))
    name = first.stem if first.is_file() else first.name
    return DATASETS / (name or "dataset")


def training_split(model_config: dict):
    """The training split a model was trained on (from its ``config.json``), or
    (None, why not): the folder may be gone or changed since."""
    data = model_config.get("data") or {}
    folder = data.get("folder")
    if not folder or not is_dataset(folder):
        return None, f"the model's training data ({folder or 'unknown'}) is not available"
    dataset = load_dataset(folder)
    if data.get("digest") and dataset.digest != data["digest"]:
        return None, f"{folder} has changed since the model was trained on it"
    return dataset.split("train"), None
