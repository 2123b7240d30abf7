"""``evaluate``: how well a model predicts music, against an n-gram, and how its melodies compare.

Every piece is scored from BOS (``melody.scoring``): bits per token, bits per
note and pitch bits per note, for the model and for an interpolated
Kneser-Ney n-gram trained on the model's own training split. Then
``samples`` generated melodies are compared with the human ones
(``melody.musicality``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from melody.config import EVALUATE_SAMPLES, MAX_SAMPLES, MAX_SEED, check_int
from melody.data import (
    TokenData,
    is_dataset,
    load_dataset,
    prepare,
    resolve_data,
    training_split,
)
from melody.errors import UsageError
from melody.fileio import sweep
from melody.modelfolder import ModelFolder
from melody.scoring import ModelScorer, fit_baseline, score_ngram


def evaluate(model=None, data=None, *, samples: int = EVALUATE_SAMPLES, seed: int = 0,
             png=None) -> dict:
    """Score ``model`` (a model folder; default: the shipped one) on ``data`` and
    return the report (the ``--json`` of ``evaluate``).

    ``data``: a prepared dataset (its validation split is scored) or music
    files and folders (all of them); default: the model's own dataset, else
    ``datasets/folk``. ``samples`` melodies (0: none) are generated and compared
    with the human ones; ``png`` draws that comparison.
    """
    from melody.musicality import evaluate_report

    _check_musicality_args(samples, png)
    try:
        check_int("seed", seed, 0, MAX_SEED)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e))
    folder = ModelFolder(model)
    if png and Path(png).parent.is_dir():
        sweep(Path(png).parent)  # what an evaluate killed there before left
    data = [data] if isinstance(data, (str, Path)) else data
    tokens, described = evaluation_data(data, folder)
    if len(tokens) == 0:
        raise UsageError(f"no pieces to evaluate in {described}")
    model = folder.keras_model()
    print(f"scoring {len(tokens)} pieces of {described}", file=sys.stderr)
    totals = ModelScorer(model, folder.tokenizer, folder.model_config.lookback).score(tokens)
    result = {
        "model": totals.report(),
        "model_folder": str(folder.path),
        "data": described,
        "notes": totals.notes,
        "tokens": totals.tokens,
        "pieces": totals.pieces,
    }
    train, why_not = training_split(folder.config)
    if train is None:
        result["baseline"] = None
        result["baseline_note"] = why_not
    else:
        lm, order, held_out = fit_baseline(train, folder.tokenizer.vocab_size)
        result["baseline"] = dict(score_ngram(lm, order, tokens, folder.tokenizer).report(),
                                  order=order)
        result["baseline_held_out_bits_per_token"] = {str(k): v for k, v in held_out.items()}
    result.update(evaluate_report(folder, tokens, samples=samples, seed=seed, png=png))
    return result


def _check_musicality_args(samples: int, png) -> None:
    """Refuse, before any scoring, settings the musicality statistics cannot honour."""
    if samples == 1:
        raise UsageError("--samples must be 0 (skip) or at least 2 (melodies are compared as "
                         "sets), got 1")
    if png and not samples:
        raise UsageError("--png draws the musicality statistics; it needs --samples of at "
                         "least 2, got 0")
    if png and os.path.lexists(png):
        raise UsageError(f"--png {png} exists; evaluate never replaces a file: remove it or "
                         "give a new name")
    try:
        check_int("samples", samples, 0, MAX_SAMPLES)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e))


# -- which tokens to score ---------------------------------------------------------------
def evaluation_data(data_args, folder: ModelFolder) -> tuple[TokenData, str]:
    """The token data to score and a description of it.

    A prepared dataset gives its validation split; music files and folders are
    read and tokenised, all of them.
    """
    from melody import corpus

    if not data_args:
        own = (folder.config.get("data") or {}).get("folder")
        data_args = [own] if own and is_dataset(own) else [str(corpus.DATASET)]
    data_args = [str(p) for p in data_args]
    if len(data_args) == 1 and (is_dataset(data_args[0]) or Path(data_args[0]) == corpus.DATASET):
        dataset = resolve_data(data_args[0])
        _check_tokenizer(dataset.tokenizer, folder.tokenizer, dataset.folder)
        return dataset.split("val"), f"{dataset.folder} (validation split)"
    missing = [p for p in data_args if not Path(p).exists()]
    if missing:
        raise UsageError(f"--data must be a prepared dataset or music files/folders; "
                         f"not found: {', '.join(missing)}")
    return _tokenise_files(data_args, folder.tokenizer), ", ".join(data_args)


def _tokenise_files(paths, tokenizer) -> TokenData:
    from melody.data.prepare import NoMelody, counted

    with tempfile.TemporaryDirectory(prefix="melody-evaluate-") as tmp:
        try:
            prepare(list(paths), Path(tmp) / "data", val_fraction=0.0)
        except NoMelody as e:
            raise UsageError(f"no pieces to evaluate in {', '.join(paths)}: "
                             f"{counted(e.result['files'], 'file')}, all skipped "
                             f"({e.reasons})") from None
        dataset = load_dataset(Path(tmp) / "data")
        _check_tokenizer(dataset.tokenizer, tokenizer, paths[0])
        pieces = [p for split in ("train", "val") for p in dataset.split(split).pieces()]
    return TokenData.from_pieces(pieces)


def _check_tokenizer(found, expected, where) -> None:
    if found != expected:
        raise UsageError(f"{where}: tokenised with different settings than the model's tokenizer")


# -- the summary -------------------------------------------------------------------------------
def summary_text(result: dict) -> str:
    rows = [("model", result["model"])]
    if result["baseline"]:
        rows.append((f"{result['baseline']['order']}-gram", result["baseline"]))
    lines = [f"{result['pieces']} pieces, {result['notes']} notes of {result['data']}",
             f"{'':10} {'bits/token':>10} {'bits/note':>10} {'pitch bits/note':>16}"]
    for name, r in rows:
        lines.append(f"{name:10} {r['bits_per_token']:10.3f} {r['bits_per_note']:10.3f} "
                     f"{r['pitch_bits_per_note']:16.3f}")
    if result["baseline"]:
        ratio = result["model"]["bits_per_note"] / result["baseline"]["bits_per_note"]
        lines.append(f"model / n-gram bits per note: {ratio:.3f}")
    else:
        lines.append(f"no n-gram baseline: {result['baseline_note']}")
    return "\n".join(lines + musicality_summary(result))


def musicality_summary(result: dict) -> list[str]:
    """The feature table (Yang-Lerch overlap and KL, the overlap of the values and,
    for scalar features, both means) and then the originality figures."""
    if "musicality_note" in result:
        return [f"no musicality statistics: {result['musicality_note']}"]
    if "musicality" not in result:
        return []
    sets = result["musicality_sets"]
    rows = [f"{'feature':<24}{'overlap':>8}{'KL':>7}{'values':>8}{'generated':>11}{'human':>8}"]
    for name, s in result["musicality"].items():
        means = ""
        if isinstance(s["generated_mean"], float):
            means = f"{s['generated_mean']:11.3f}{s['human_mean']:8.3f}"
        rows.append(f"{name:<24}{s['overlap']:8.3f}{s['kl']:7.3f}{s['value_overlap']:8.3f}{means}")
    lines = ["", f"{sets['generated']} generated melodies against {sets['human']} human ones "
                 "(overlap and values 1, KL 0: alike; values compares the feature's values "
                 "themselves, the others their spread):", *rows, "",
             *originality_table(result.get("originality"))]
    if "originality" in result:
        lines.append("originality: notes in a row also found in the training set "
                     f"({result['originality']['index']})")
    else:
        lines.append(f"no originality check: {result['originality_note']}")
    if "png" in result:
        lines.append(f"drawn: {result['png']}")
    return lines


def originality_table(report: dict | None) -> list[str]:
    if not report:
        return []
    share = f"share_{report['ngram']}"
    gen, human = report["generated"], report["human"]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    rows = [("longest run, median", "longest_run", "median", ".1f"),
            ("longest run, p95", "longest_run", "p95", ".1f"),
            (f"{report['ngram']}-note share, mean", share, "mean", ".3f"),
            (f"{report['ngram']}-note share, p95", share, "p95", ".3f")]
    lines = [f"{'originality':<22}{'generated':>10}{'human':>8}"]
    for label, key, stat, spec in rows:
        lines.append(f"{label:<22}{fmt(gen[key][stat], spec):>10}{fmt(human[key][stat], spec):>8}")
    lines.append(f"{'flagged (> human p95)':<22}{fmt(gen['flagged'], '.1%'):>10}"
                 f"{fmt(human['flagged'], '.1%'):>8}")
    return lines
