"""Collections -> prepared datasets, and the readers that stream them.

A dataset folder holds:

- ``manifest.json``: sources, every input file (path, status, reason, track,
  notes), every piece (id, file, split, notes, tokens, tempo, time signature,
  key, program, duplicate_of), counts, split settings and tokenizer settings;
- ``tokenizer.json``;
- ``{train,val}.tokens.npy`` (uint16, the pieces' tokens end to end, each
  piece from BOS to EOS) and ``{train,val}.offsets.npy`` (int64, piece i is
  ``tokens[offsets[i]:offsets[i+1]]``). They are memory-mapped, so a dataset
  larger than memory streams from disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.fileio import atomic_path, atomic_write_text
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


@dataclass
class Dataset:
    folder: Path
    manifest: dict
    tokenizer: Tokenizer

    def split(self, name: str) -> TokenData:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        tokens = np.load(self.folder / f"{name}.tokens.npy", mmap_mode="r")
        offsets = np.load(self.folder / f"{name}.offsets.npy")
        return TokenData(tokens, offsets)

    @property
    def digest(self) -> str:
        """Short hash of the manifest: which data a model was trained on."""
        return hashlib.sha256((self.folder / "manifest.json").read_bytes()).hexdigest()[:16]


def is_dataset(folder) -> bool:
    return (Path(folder) / "manifest.json").is_file()


def load_dataset(folder) -> Dataset:
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    return Dataset(folder, manifest, Tokenizer.load(folder / "tokenizer.json"))


def write_split(folder, name: str, data: TokenData) -> None:
    """Write one split's arrays atomically."""
    for suffix, array in (("tokens", data.tokens), ("offsets", data.offsets)):
        with atomic_path(Path(folder) / f"{name}.{suffix}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(array))


def write_manifest(folder, manifest: dict) -> None:
    atomic_write_text(Path(folder) / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def run_prepare(args):
    raise NotImplementedError("prepare is being built")
