"""melody: learn melodies from MIDI collections with a GRU and write new ones.

The Python interface is the one the command line uses; each name is imported
when first used, so ``import melody`` is quick and never starts TensorFlow.

>>> import melody
>>> tunes = melody.load_model().generate(2, bars=4, seed=7)   # the shipped model
>>> [t.n_notes > 0 for t in tunes]
[True, True]
>>> tunes[0].to_midi_bytes()[:4], type(tunes[0].to_pretty_midi()).__name__
(b'MThd', 'PrettyMIDI')

- ``prepare(sources, out)``: music files -> a dataset folder;
- ``train(data, out, **settings)``: a dataset -> a model folder;
- ``load_model(path)``: a model folder (``ModelFolder``), whose ``generate``
  returns ``Melody`` objects (``to_pretty_midi``, ``to_music21``,
  ``to_midi_bytes``, ``write_midi``);
- ``generate(model, out, ...)``: melodies written as MIDI plus sidecars;
- ``evaluate(model, data)``, ``render(files)``, ``read_melody(path)``.

Errors are the command line's one-line errors (``melody.errors``):
``UsageError`` for what the caller asked, ``RunError`` for the rest, both
``MelodyError``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "prepare": "melody.data.prepare",
    "train": "melody.training.run",
    "evaluate": "melody.evaluation",
    "generate": "melody.generation",
    "render": "melody.outputs.render",
    "read_melody": "melody.inputs",
    "ModelFolder": "melody.modelfolder",
    "Melody": "melody.notes",
    "Key": "melody.notes",
    "MelodyError": "melody.errors",
    "UsageError": "melody.errors",
    "RunError": "melody.errors",
    "ModelFolderError": "melody.errors",
}
__all__ = sorted(_API) + ["load_model"]


def load_model(path=None):
    """The model folder at ``path`` (default: the pretrained model shipped inside
    the package), opened and checked: a ``ModelFolder``."""
    from melody.modelfolder import ModelFolder

    return ModelFolder(path)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'melody' has no attribute {name!r}")
