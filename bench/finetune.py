"""Fine-tuning the shipped model against training from scratch, on small collections of another style.

    python bench/finetune.py [--collection bach|oneills] [--sizes 25,100,400] [--samples 100]

A collection bundled with music21 that is not the folk corpus is prepared once;
a fixed set of its pieces is held out, and training collections of each size
are drawn from the rest (the smaller ones inside the larger ones). For each
size: ``melody train`` from scratch with the default settings, ``melody train
--from pretrained`` with its defaults, and the interpolated Kneser-Ney n-gram
of the same training pieces, all scored on the same held-out pieces (bits per
note), with the training minutes; then ``--samples`` melodies of each model are
compared with the held-out pieces (``melody evaluate``'s musicality: the mean
value overlap over every feature). Prints a table; asserts nothing. Aim (issue
17): fine-tuned at most 0.85 of from-scratch bits per note at 25 and 100 pieces,
never worse at 400, in minutes; musicality no worse than from scratch's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import melody  # noqa: E402
from melody.data import TokenData, load_dataset, write_manifest, write_split  # noqa: E402
from melody.scoring import fit_baseline, score_ngram  # noqa: E402

COLLECTIONS = {"bach": ("bach", 40), "oneills": ("oneills1850", 100)}  # folder, pieces held out


def corpus_folder(name: str) -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus" / name


def subsets(full: Path, work: Path, held_out: int, sizes: list[int], seed: int) -> dict:
    """Dataset folders of ``sizes`` training pieces each, all with the same held-out pieces."""
    dataset = load_dataset(full)
    pieces = [p for split in ("train", "val") for p in dataset.split(split).pieces()]
    order = np.random.default_rng(seed).permutation(len(pieces))
    val = [pieces[i] for i in order[:held_out]]
    rest = [pieces[i] for i in order[held_out:]]
    out = {}
    for size in sizes:
        folder = work / f"{full.name}-{size}"
        if not (folder / "manifest.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_split(folder, "train", TokenData.from_pieces(rest[:size]))
            write_split(folder, "val", TokenData.from_pieces(val))
            dataset.tokenizer.save(folder / "tokenizer.json")
            write_manifest(folder, {"sources": [str(full)], "train_pieces": min(size, len(rest)),
                                    "val_pieces": held_out, "seed": seed})
        out[min(size, len(rest))] = folder
    return out


def train(data: Path, out: Path, extra: list[str]) -> tuple[dict, float]:
    if (out / "config.json").is_file():  # a finished run from before: read it back
        config = json.loads((out / "config.json").read_text())
        return {"val_bits_per_note": config["metrics"]["val_bits_per_note"]}, \
            config["metrics"]["train_seconds"] / 60
    start = time.perf_counter()
    result = melody.train(str(data), str(out), **dict(extra))
    return result, (time.perf_counter() - start) / 60


def musicality(model: Path, data: Path, samples: int) -> float:
    report = melody.evaluate(str(model), str(data), samples=samples)
    return float(np.mean([s["value_overlap"] for s in report["musicality"].values()]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", choices=COLLECTIONS, default="bach")
    parser.add_argument("--sizes", default="25,100,400")
    parser.add_argument("--samples", type=int, default=100, help="melodies per model (0: none)")
    parser.add_argument("--work", type=Path, default=Path("models/bench-finetune"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    name, held_out = COLLECTIONS[args.collection]
    full = Path("datasets") / f"bench-{name}"
    if not (full / "manifest.json").is_file():
        melody.prepare([str(corpus_folder(name))], str(full))
    folders = subsets(full, args.work / "data", held_out, [int(s) for s in args.sizes.split(",")],
                      args.seed)
    rows = []
    for size, data in folders.items():
        dataset = load_dataset(data)
        lm, order, _ = fit_baseline(dataset.split("train"), dataset.tokenizer.vocab_size)
        ngram = score_ngram(lm, order, dataset.split("val"), dataset.tokenizer).report()
        scratch, scratch_min = train(data, args.work / f"{data.name}-scratch", [])
        tuned, tuned_min = train(data, args.work / f"{data.name}-tuned", [("parent", "pretrained")])
        row = {"size": size, "ngram": ngram["bits_per_note"], "order": order,
               "scratch": scratch["val_bits_per_note"], "scratch_min": scratch_min,
               "tuned": tuned["val_bits_per_note"], "tuned_min": tuned_min}
        if args.samples:
            row["scratch_music"] = musicality(args.work / f"{data.name}-scratch", data, args.samples)
            row["tuned_music"] = musicality(args.work / f"{data.name}-tuned", data, args.samples)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    print(f"{args.collection}: {held_out} held-out pieces; bits per note on them "
          f"(lower is better), training minutes on this machine")
    print(f"{'pieces':>7}{'n-gram':>9}{'scratch':>9}{'min':>6}{'tuned':>9}{'min':>6}"
          f"{'tuned/scratch':>15}{'music scratch':>15}{'music tuned':>13}")
    for r in rows:
        print(f"{r['size']:>7}{r['ngram']:>9.3f}{r['scratch']:>9.3f}{r['scratch_min']:>6.1f}"
              f"{r['tuned']:>9.3f}{r['tuned_min']:>6.1f}{r['tuned'] / r['scratch']:>15.3f}"
              f"{r.get('scratch_music', float('nan')):>15.3f}{r.get('tuned_music', float('nan')):>13.3f}")


if __name__ == "__main__":
    main()
