"""A model's melodies against human ones: what ``evaluate`` reports beside its scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from melody.config import MAX_BARS, MAX_SEED
from melody.data import training_split
from melody.modelfolder import ModelFolder
from melody.musicality.comparison import compare
from melody.musicality.form import bar_count
from melody.musicality.originality import (
    ORIGINALITY_FILE,
    OriginalityIndex,
    load_originality,
    originality_report,
)
from melody.musicality.picture import draw
from melody.notes import Melody

HUMAN_LIMIT = 1000  # human melodies compared at most; pairwise distances grow as n^2
MAX_SAMPLE_NOTES = 512


def evaluate_report(folder: ModelFolder, data, samples: int, seed: int = 0, png=None) -> dict:
    """Musicality and originality of ``samples`` melodies of the model against ``data``.

    ``data`` is the token data evaluate scores (``TokenData``); its pieces,
    decoded, are the human set (a seeded subset of ``HUMAN_LIMIT`` when there
    are more). Melodies are sampled with the NumPy sampler at temperature 1.0,
    each as long as a human piece drawn at random (``sample_melodies``): pitch
    range, pitch classes used and repetition grow with length, so both sets
    must share one spread of lengths for the comparison to be about style.
    The training set's index comes from the model folder's ``originality.npz``,
    else from its training split; without either, ``originality_note`` says
    why. With ``png`` the features are drawn there. ``samples`` of 0 gives
    ``{}``.
    """
    if not samples:
        return {}
    rng = np.random.default_rng(seed)
    human = human_melodies(data, folder.tokenizer, rng)
    if len(human) < 2:
        return {"musicality_note": f"musicality needs at least 2 pieces to compare with, "
                                   f"got {len(human)}"}
    lengths = np.array([m.n_notes for m in human])
    bars = np.array([bar_count(m) for m in human])  # 0: no meter
    drawn = rng.choice(len(human), samples)
    generated, cut = sample_melodies(folder, lengths[drawn], np.minimum(bars[drawn], MAX_BARS), seed)
    stats = compare(generated, human)
    report = {
        "musicality": stats,
        "musicality_sets": {
            "generated": len(generated),
            "human": len(human),
            "generated_notes_mean": float(np.mean([m.n_notes for m in generated])),
            "human_notes_mean": float(lengths.mean()),
            "cut": cut,  # share of generated melodies stopped at their length in notes
        },
    }
    index, where = training_index(folder)
    if index is None:
        report["originality_note"] = where
    else:
        report["originality"] = dict(originality_report(generated, human, index), index=where)
    if png:
        title = f"{folder.path}: {len(generated)} generated vs {len(human)} human melodies"
        report["png"] = str(draw(generated, human, png, title=title, stats=stats))
    return report


def human_melodies(data, tokenizer, rng) -> list[Melody]:
    """The pieces of ``data`` decoded, at most ``HUMAN_LIMIT`` of them (a seeded choice)."""
    chosen = np.arange(len(data))
    if len(chosen) > HUMAN_LIMIT:
        chosen = np.sort(rng.choice(chosen, HUMAN_LIMIT, replace=False))
    return [tokenizer.decode(data.piece(int(i))) for i in chosen]


def sample_melodies(folder: ModelFolder, notes: np.ndarray, bars: np.ndarray, seed: int):
    """One melody per human piece drawn, sampled at temperature 1.0 as long as it: as
    many bars where it has a meter (``bars`` > 0), else as many ``notes``; at most
    ``MAX_SAMPLE_NOTES`` notes. Each length is asked for as a user would ask
    (``--bars``, ``--notes``), so a model folder's forms are drawn for it.

    Returns the melodies and the share cut to ``MAX_SAMPLE_NOTES`` or stopped at
    their notes (that had not ended by themselves before).
    """
    melodies = [None] * len(notes)
    asked = [("bars", int(b)) if b else ("notes", int(min(max(n, 1), MAX_SAMPLE_NOTES)))
             for n, b in zip(notes, bars)]
    for length in sorted(set(asked)):
        at = [i for i, a in enumerate(asked) if a == length]
        offset = 1000 * (length[0] == "bars") + length[1]  # each length its own seed
        batch = folder.generate(len(at), **dict([length]), temperature=1.0,
                                seed=(seed + offset) % (MAX_SEED + 1))
        for i, m in zip(at, batch):
            melodies[i] = m
    cut = [m.n_notes >= (MAX_SAMPLE_NOTES if kind == "bars" else value)
           for m, (kind, value) in zip(melodies, asked)]
    return [first_notes(m, MAX_SAMPLE_NOTES) for m in melodies], float(np.mean(cut))


def first_notes(m: Melody, count: int) -> Melody:
    if m.n_notes <= count:
        return m
    velocities = None if m.velocities is None else m.velocities[:count]
    return replace(m, pitches=m.pitches[:count], onsets=m.onsets[:count],
                   durations=m.durations[:count], velocities=velocities)


def training_index(folder: ModelFolder) -> tuple[OriginalityIndex | None, str]:
    """The model's training melodies indexed, and where from; or None and why not."""
    path = folder.path / ORIGINALITY_FILE
    damaged = ""
    if path.is_file():
        try:
            return load_originality(path), str(path)
        except ValueError as e:
            damaged = f"{e}; "
    train, why_not = training_split(folder.config)
    if train is None:
        return None, f"{damaged}no usable {path} and {why_not}"
    melodies = [folder.tokenizer.decode(p) for p in train.pieces()]
    where = f"built from {len(melodies)} training pieces of {folder.config['data']['folder']}"
    return OriginalityIndex.from_melodies(melodies), where
