"""Sampling new melodies from a model, in NumPy (TensorFlow is never imported).

- ``network``: the GRU, one step at a time with its state carried;
- ``weights``: reading its weights from ``model.keras``;
- ``constraints``: which tokens may come next (grammar, bars, key, range, endings);
- ``sampler``: temperature, top-k, top-p and the sampling loop;
- ``primer``: the melody that new ones continue.
"""

from __future__ import annotations

from melody.config import SampleConfig
from melody.sample.constraints import Constraints
from melody.sample.network import GRULayer, NumpyGRU
from melody.sample.primer import Primer, read_primer
from melody.sample.sampler import draw, key_prior, next_token_probs, sample

__all__ = ["Constraints", "GRULayer", "NumpyGRU", "Primer", "SampleConfig", "draw", "key_prior",
           "next_token_probs", "read_primer", "sample"]
