"""Form: do a model's melodies come back to their phrases as human ones do?

    python bench/form.py --models melody/pretrained/folk models/folk-form [--data datasets/folk]

For each model folder, on the dataset's held-out pieces (``melody.evaluate``:
the same figures as ``melody evaluate --json``): bits per note against the
n-gram, then every musicality feature of ``--samples`` melodies sampled at
temperature 1.0 against the held-out human melodies, the form figures first:
the human mean, and per model the generated mean, the overlap of the two value
distributions ("values") and the Yang-Lerch overlap of their distances
("Y-L"); then copying from the training set beside the human baseline. The
first model is the baseline the others are read against ("today"). Prints
figures; asserts nothing. Aims (issue 16): each repetition mean within 20% of
the human mean, their value overlap at least 0.8, no other feature below 0.8,
copying no worse than the human baseline, and bits per note no worse.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import melody  # noqa: E402
from melody import corpus  # noqa: E402

FORM = ("bar_repeats", "bar_repeats_transposed", "recurrence", "longest_repeat", "repetition")


def ngram_on(folder: str) -> dict:
    """The n-gram baseline of ``evaluate``, fitted on the dataset's own training split."""
    from melody.data import load_dataset
    from melody.scoring import fit_baseline, score_ngram

    dataset = load_dataset(folder)
    lm, order, _ = fit_baseline(dataset.split("train"), dataset.tokenizer.vocab_size)
    return dict(score_ngram(lm, order, dataset.split("val"), dataset.tokenizer).report(), order=order)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["melody/pretrained/folk"],
                        help="model folders; the first is the baseline")
    parser.add_argument("--data", default=str(corpus.DATASET), help="prepared dataset")
    parser.add_argument("--samples", type=int, default=100, help="melodies per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    reports = {}
    for model in args.models:
        start = time.perf_counter()
        reports[model] = melody.evaluate(model, args.data, samples=args.samples, seed=args.seed)
        print(f"{model}: evaluated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    baseline = None
    for r in reports.values():  # a model trained on an older copy of the dataset has none
        if not r["baseline"]:
            baseline = baseline or ngram_on(args.data)
            r["baseline"] = baseline
    first = reports[args.models[0]]
    print(f"{first['pieces']} held-out pieces, {first['notes']} notes of {first['data']}; "
          f"{args.samples} generated melodies per model at temperature 1.0\n")
    names = [Path(m).name if Path(m).name != "folk" else m for m in args.models]

    print(f"{'model':<34}{'bits/note':>10}{'n-gram':>8}{'ratio':>7}{'pitch b/n':>10}")
    for name, r in zip(names, reports.values()):
        base = r["baseline"]
        ratio = r["model"]["bits_per_note"] / base["bits_per_note"] if base else float("nan")
        print(f"{name:<34}{r['model']['bits_per_note']:>10.3f}"
              f"{base['bits_per_note'] if base else float('nan'):>8.3f}{ratio:>7.3f}"
              f"{r['model']['pitch_bits_per_note']:>10.3f}")

    features = list(first["musicality"])
    ordered = [f for f in FORM if f in features] + [f for f in features if f not in FORM]
    head = f"\n{'feature':<24}{'human':>8}"
    for name in names:
        head += f" | {name[:22]:>22}"
    print(head)
    print(f"{'':<24}{'mean':>8}" + " | mean  values   Y-L  " * len(names))
    for feature in ordered:
        human = first["musicality"][feature]["human_mean"]
        line = f"{feature:<24}{human if isinstance(human, float) else float('nan'):>8.3f}"
        for r in reports.values():
            s = r["musicality"][feature]
            mean = s["generated_mean"] if isinstance(s["generated_mean"], float) else float("nan")
            line += f" | {mean:5.3f} {s['value_overlap']:6.3f} {s['overlap']:5.3f} "
        print(line)

    print(f"\n{'originality (notes in a row in the training set)':<50}{'human':>8}"
          + "".join(f"{n[:14]:>16}" for n in names))
    for label, key, stat in (("longest run, median", "longest_run", "median"),
                             ("longest run, p95", "longest_run", "p95"),
                             ("8-note share, mean", "share_8", "mean"),
                             ("flagged (above the human p95)", "flagged", None)):
        human = first["originality"]["human"][key]
        human = human if stat is None else human[stat]
        line = f"{label:<50}{human:>8.3f}"
        for r in reports.values():
            value = r["originality"]["generated"][key]
            line += f"{(value if stat is None else value[stat]):>16.3f}"
        print(line)


if __name__ == "__main__":
    main()
