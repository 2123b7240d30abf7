"""Musicality and originality of a model's melodies against human ones.

    python bench/musicality.py [--model melody/pretrained/folk] [--data DIR] [-n 100]

Samples N melodies at temperature 1.0 with the NumPy sampler, compares them
with the dataset's validation melodies feature by feature (overlap area and
KL divergence, Yang and Lerch 2018), and measures how much of the training set
they copy beside the validation melodies (the human baseline). The training
set's index comes from the model folder's ``originality.npz`` when there is
one, else it is built from the dataset's training split. Prints figures and
timings; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody import musicality as mu  # noqa: E402
from melody.data import load_dataset  # noqa: E402
from melody.model import (  # noqa: E402
    ModelFolderError,
    default_model_folder,
    load_tokenizer,
    read_config,
)


def sample_melodies(folder: Path, n: int, seed: int, notes: int | None):
    from melody.sample import NumpyGRU, SampleConfig, sample

    config = read_config(folder)
    tokenizer = load_tokenizer(folder, config)
    model = NumpyGRU.load(folder)
    pieces = sample(model, tokenizer, SampleConfig(n=n, temperature=1.0, seed=seed, notes=notes))
    return [tokenizer.decode(p) for p in pieces], config


def dataset_folder(arg: str | None, config: dict) -> Path:
    if arg:
        return Path(arg)
    trained_on = Path(config.get("data", {}).get("folder", ""))
    if trained_on.name and (trained_on / "manifest.json").is_file():
        return trained_on
    return Path("datasets/folk")


def split_melodies(dataset, name: str, limit: int | None = None):
    data = dataset.split(name)
    count = len(data) if limit is None else min(limit, len(data))
    return [dataset.tokenizer.decode(data.piece(i)) for i in range(count)]


def originality_index(folder: Path, dataset) -> tuple[mu.OriginalityIndex, str]:
    path = folder / mu.ORIGINALITY_FILE
    if path.is_file():
        return mu.load_originality(path), str(path)
    start = time.perf_counter()
    train = split_melodies(dataset, "train")
    index = mu.OriginalityIndex.from_melodies(train)
    return index, f"built from {len(train)} training melodies in {time.perf_counter() - start:.1f} s"


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
    parser.add_argument("--model", default=str(default_model_folder()), help="model folder")
    parser.add_argument("--data", default=None,
                        help="prepared dataset (default: the model's own, else datasets/folk)")
    parser.add_argument("-n", type=int, default=100, help="melodies to generate (default: 100)")
    parser.add_argument("--notes", type=int, default=None, help="notes per melody (default: 64)")
    parser.add_argument("--human", type=int, default=None,
                        help="validation melodies to use (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--png", default=None, help="also draw the features into this PNG")
    args = parser.parse_args(argv)

    folder = Path(args.model)
    start = time.perf_counter()
    try:
        generated, config = sample_melodies(folder, args.n, args.seed, args.notes)
    except ModelFolderError as e:
        print(f"bench/musicality.py: {e}", file=sys.stderr)
        return 2
    print(f"model {folder}: {len(generated)} melodies sampled in "
          f"{time.perf_counter() - start:.1f} s")
    dataset = load_dataset(dataset_folder(args.data, config))
    human = split_melodies(dataset, "val", args.human)
    print(f"human: {len(human)} validation melodies of {dataset.folder}")

    start = time.perf_counter()
    stats = mu.compare(generated, human)
    print(f"\nmusicality (Yang and Lerch 2018), in {time.perf_counter() - start:.2f} s")
    print_stats(stats)

    index, where = originality_index(folder, dataset)
    start = time.perf_counter()
    report = mu.originality(generated, human, index)
    print(f"\noriginality against the training set ({where}), "
          f"in {time.perf_counter() - start:.2f} s")
    print_originality(report)
    if args.png:
        print(f"\ndrawn: {mu.draw(generated, human, args.png, title=str(folder), stats=stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
