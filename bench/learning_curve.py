"""Learning curves: held-out bits per note after every epoch, recipe against recipe.

    python bench/learning_curve.py [--collections bach,oneills] [--epochs 20]
                                   [--variants default,plain,previous,transpose-all,...]

Each collection bundled with music21 is prepared once and split as
``bench/finetune.py`` splits it (a fixed set of pieces held out). Every variant
trains the default architecture on the same training pieces for the same
number of training tokens (``--epochs`` epochs of ``--epoch-tokens``, by
default what ``melody train`` gives a small collection: 3,200 windows of 128
tokens; each variant takes as many batches as that is) and is scored on the
same held-out pieces after every epoch. ``plain`` is the baseline of issue 20:
batch 64, no transposition and a constant learning rate; ``default`` is
``melody train``'s recipe as it stands; ``previous`` is the recipe before
issue 20 (batch 64, every window transposed); the others are the default with
one change. Early stopping is off (patience = epochs) so every curve runs to
the end. Prints, per collection, the n-gram's bits per note and each variant's
curve with the training minutes; asserts nothing. Finished runs under
``--work`` are read back, not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import melody
from finetune import COLLECTIONS, corpus_folder, subsets
from melody.config import MIN_WINDOWS, TrainConfig
from melody.data import load_dataset
from melody.scoring import fit_baseline, score_ngram

D = TrainConfig()
VARIANTS = {
    "default": {},
    "plain": {"batch_size": 64, "transpose_low": 0, "transpose_high": 0, "plateau_factor": 1.0},
    "previous": {"batch_size": 64, "transpose_prob": 1.0},
    "transpose-all": {"transpose_prob": 1.0},
    "transpose-0.5": {"transpose_prob": 0.5},
    "transpose-0.25": {"transpose_prob": 0.25},
    "narrow": {"transpose_low": -2, "transpose_high": 2},
    "cosine": {"schedule": "cosine", "warmup_steps": 40},
    "batch-64": {"batch_size": 64},
    "batch-16": {"batch_size": 16},
    "lr-4e-3": {"learning_rate": 4e-3},
    "seq-64": {"seq_len": 64},
    "dropout-0.1": {"dropout": 0.1},
    "dropout-0.3": {"dropout": 0.3},
}


def settings(variant: dict, epochs: int, epoch_tokens: int) -> dict:
    """The variant's settings for ``epochs`` epochs of ``epoch_tokens`` training tokens."""
    per_step = variant.get("batch_size", D.batch_size) * variant.get("seq_len", D.seq_len)
    return dict(variant, epochs=epochs, patience=epochs,
                steps_per_epoch=max(1, round(epoch_tokens / per_step)))


def check_settings(out: Path, config: dict, run: dict) -> None:
    """A run read back must be the variant's: defaults change, folder names do not."""
    train = {k: v for k, v in run.items() if k in TrainConfig.__dataclass_fields__}
    want = dict(TrainConfig(**train).to_dict(), **{k: v for k, v in run.items() if k not in train})
    saved = dict(config["train"], **config["model"])
    for key, value in want.items():
        if (value is not None or key in run) and key not in ("seq_len", "seed") \
                and saved.get(key) != value:
            sys.exit(f"{out} was trained with {key} {saved.get(key)!r}, not {value!r}: "
                     "remove it or give another --work")


def curve(data: Path, out: Path, run: dict) -> list[tuple[float, float]]:
    """(training minutes so far, held-out bits per note) after each epoch."""
    if not (out / "config.json").is_file():
        melody.train(str(data), str(out), **run)
    config = json.loads((out / "config.json").read_text())
    check_settings(out, config, run)
    steps, batch = run["steps_per_epoch"], run.get("batch_size", D.batch_size)
    seq = run.get("seq_len", D.seq_len)
    points = []
    for h in config["history"]:
        if h["tokens_per_second"]:
            tokens = h["epoch"] * steps * batch * seq
            points.append((tokens / h["tokens_per_second"] / 60, h["val_bits_per_note"]))
    return points


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default="bach,oneills")
    parser.add_argument("--variants", default="default,plain,previous")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--epoch-tokens", type=int, default=MIN_WINDOWS * D.seq_len,
                        help="training tokens per epoch")
    parser.add_argument("--work", type=Path, default=Path("models/bench-curve"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    for name in args.collections.split(","):
        folder, held_out = COLLECTIONS[name]
        full = Path("datasets") / f"bench-{folder}"
        if not (full / "manifest.json").is_file():
            melody.prepare([str(corpus_folder(folder))], str(full))
        (size, data), = subsets(full, args.work / "data", held_out, [10**6], args.seed).items()
        dataset = load_dataset(data)
        lm, order, _ = fit_baseline(dataset.split("train"), dataset.tokenizer.vocab_size)
        ngram = score_ngram(lm, order, dataset.split("val"), dataset.tokenizer).report()["bits_per_note"]
        tokens = args.epochs * args.epoch_tokens
        print(f"\n{name}: {size} training pieces ({len(dataset.split('train').tokens):,} tokens), "
              f"{held_out} held out; {tokens:,} training tokens per variant; "
              f"Kneser-Ney {order}-gram {ngram:.3f} bits/note", flush=True)
        print(f"{'variant':<24}" + "".join(f"{'ep ' + str(e):>8}" for e in range(1, args.epochs + 1))
              + f"{'min':>7}{'/n-gram':>9}")
        for variant in args.variants.split(","):
            points = curve(data, args.work / f"{name}-{variant}",
                           settings(VARIANTS[variant], args.epochs, args.epoch_tokens))
            best = min(b for _, b in points)
            print(f"{variant:<24}" + "".join(f"{b:>8.3f}" for _, b in points)
                  + f"{points[-1][0]:>7.1f}{best / ngram:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
