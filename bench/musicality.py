"""Musicality and originality of a model's melodies against human ones.

    python bench/musicality.py [--model melody/pretrained/folk] [--data DIR] [-n 100]

Samples N melodies at temperature 1.0 with the NumPy sampler, each cut to a
length drawn from the human pieces' note counts (as ``evaluate --samples``
does, so with the same seed the figures are evaluate's), compares them with
the dataset's validation melodies feature by feature (overlap area and KL
divergence, Yang and Lerch 2018), and measures how much of the model's
training set they copy beside the validation melodies (the human baseline).
The training set's index comes from the model folder's ``originality.npz``
when there is one, else it is built from the model's training split. Prints
figures and timings; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody import corpus  # noqa: E402
from melody import musicality as mu  # noqa: E402
from melody.data import load_dataset  # noqa: E402
from melody.errors import ModelFolderError  # noqa: E402
from melody.modelfolder import ModelFolder, shipped_folder  # noqa: E402
from melody.musicality import report  # noqa: E402


def dataset_folder(arg: str | None, config: dict) -> Path:
    if arg:
        return Path(arg)
    trained_on = Path(config.get("data", {}).get("folder", ""))
    if trained_on.name and (trained_on / "manifest.json").is_file():
        return trained_on
    return corpus.DATASET


def generated_melodies(folder: ModelFolder, human, n: int, seed: int, rng, notes: int | None):
    """N melodies, each cut to a human piece's length (or to ``notes``); and the share cut."""
    lengths = [m.n_notes for m in human]
    caps = np.full(n, notes) if notes else np.clip(rng.choice(lengths, n), 1,
                                                   report.MAX_SAMPLE_NOTES)
    return mu.sample_melodies(folder, caps, seed)


def print_stats(stats: dict) -> None:
    print(f"{'feature':<22}{'overlap':>9}{'KL':>9}   {'generated':>10}{'human':>10}")
    for name, s in stats.items():
        means = ("", "")
        if isinstance(s["generated_mean"], float):
            means = (f"{s['generated_mean']:.3f}", f"{s['human_mean']:.3f}")
        print(f"{name:<22}{s['overlap']:>9.3f}{s['kl']:>9.3f}   {means[0]:>10}{means[1]:>10}")


def print_originality(report: dict) -> None:
    t = report["thresholds"]
    share = f"share_{report['ngram']}"
    print(f"thresholds (human p{mu.PERCENTILE}): longest run {t['longest_run']:.1f} notes, "
          f"{share} {t[share]:.3f}")
    print(f"{'set':<11}{'n':>5}{'run mean':>10}{'median':>8}{'p95':>7}"
          f"{'share mean':>12}{'median':>8}{'p95':>7}{'flagged':>9}")
    for name in ("generated", "human"):
        r = report[name]
        run, sh = r["longest_run"], r[share]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{name:<11}{r['melodies']:>5}{fmt(run['mean']):>10}{fmt(run['median']):>8}"
              f"{fmt(run['p95']):>7}{fmt(sh['mean']):>12}{fmt(sh['median']):>8}"
              f"{fmt(sh['p95']):>7}{fmt(r['flagged']):>9}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_folder()), help="model folder")
    parser.add_argument("--data", default=None,
                        help="prepared dataset (default: the model's own, else datasets/folk)")
    parser.add_argument("-n", type=int, default=100, help="melodies to generate (default: 100)")
    parser.add_argument("--notes", type=int, default=None,
                        help="cut every melody to this many notes (default: a length drawn "
                             "from the human pieces for each)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--png", default=None, help="also draw the features into this PNG")
    args = parser.parse_args(argv)

    try:
        folder = ModelFolder(args.model)
    except ModelFolderError as e:
        print(f"bench/musicality.py: {e}", file=sys.stderr)
        return 2
    dataset = load_dataset(dataset_folder(args.data, folder.config))
    rng = np.random.default_rng(args.seed)
    human = report.human_melodies(dataset.split("val"), folder.tokenizer, rng)
    print(f"human: {len(human)} validation melodies of {dataset.folder}, "
          f"{np.mean([m.n_notes for m in human]):.1f} notes on average")

    start = time.perf_counter()
    generated, cut = generated_melodies(folder, human, args.n, args.seed, rng, args.notes)
    print(f"model {folder}: {len(generated)} melodies sampled in "
          f"{time.perf_counter() - start:.1f} s, {np.mean([m.n_notes for m in generated]):.1f} "
          f"notes on average, {cut:.0%} cut to their drawn length")

    start = time.perf_counter()
    stats = mu.compare(generated, human)
    print(f"\nmusicality (Yang and Lerch 2018), in {time.perf_counter() - start:.2f} s")
    print_stats(stats)

    start = time.perf_counter()
    index, where = report.training_index(folder)
    if index is None:
        print(f"\nno originality check: {where}")
    else:
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        copying = mu.originality_report(generated, human, index)
        print(f"\noriginality against the training set ({where}, {loaded:.2f} s), "
              f"in {time.perf_counter() - start:.2f} s")
        print_originality(copying)
    if args.png:
        print(f"\ndrawn: {mu.draw(generated, human, args.png, title=str(folder), stats=stats)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
