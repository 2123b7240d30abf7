"""The built-in corpus: music21's bundled Essen folk-song collection (ABC files).

The collection's ``test*.abc`` files are music21's parser fixtures (the same
few tunes again under other origins), not part of the collection, so they are
left out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from melody.config import DATASETS

NAME = "folk"
DATASET = DATASETS / NAME
_FIXTURES = "test"


def essen_folder() -> Path:
    """Where music21 keeps the Essen ABC files (found without importing music21)."""
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("music21 is not installed; it carries the built-in folk corpus")
    return Path(list(spec.submodule_search_locations)[0]) / "corpus" / "essenFolksong"


def files() -> list[Path]:
    """The corpus's ABC files, in name order, without music21's test fixtures."""
    folder = essen_folder()
    found = sorted(p for p in folder.glob("*.abc") if not p.name.startswith(_FIXTURES))
    if not found:
        raise FileNotFoundError(f"no .abc files in {folder}: music21's corpus is missing")
    return found
