"""Musicality statistics and originality checks for sets of melodies, all NumPy.

- ``features``: per-melody features (``FEATURES`` says what each is);
- ``comparison``: ``compare``, the set comparison of Yang and Lerch (2018);
- ``originality``: runs of notes shared with a training set;
- ``picture``: ``draw``, the picture of the comparison;
- ``report``: a model's melodies against held-out human ones (``evaluate``).
"""

from __future__ import annotations

from melody.musicality.comparison import compare, overlap_and_kl
from melody.musicality.features import FEATURES, melody_features
from melody.musicality.originality import (
    ORIGINALITY_FILE,
    OriginalityIndex,
    build_originality_file,
    check,
    flag,
    load_originality,
    originality_report,
)
from melody.musicality.picture import draw
from melody.musicality.report import evaluate_report, sample_melodies

__all__ = ["FEATURES", "ORIGINALITY_FILE", "OriginalityIndex", "build_originality_file", "check",
           "compare", "draw", "evaluate_report", "flag", "load_originality", "melody_features",
           "originality_report", "overlap_and_kl", "sample_melodies"]
