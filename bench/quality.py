"""Does the model beat the n-gram? Validation bits per note, model against the best n-gram.

    python bench/quality.py --model models/folk     # an existing model folder
    python bench/quality.py                         # train the default model first

Without ``--model`` the default model is trained on ``datasets/folk`` into
``--out`` (default ``models/bench-quality``; resumed if it is there), then
evaluated. Prints both figures and their ratio; the target is a ratio of
0.75 or less.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import melody  # noqa: E402
from melody import corpus  # noqa: E402
from melody.cli import main as cli  # noqa: E402
from melody.training.checkpoints import list_checkpoints  # noqa: E402

TARGET = 0.75


def train_default(data: str, out: Path, extra: list[str]) -> Path:
    argv = ["train", "--data", data, "--out", str(out), *extra]
    if list_checkpoints(out):
        argv.append("--resume")
    if cli(argv):
        sys.exit(f"training failed: {' '.join(argv)}")
    return out


def evaluate(model: Path, data: str) -> dict:
    return melody.evaluate(model, data, samples=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder to evaluate")
    parser.add_argument("--data", default=str(corpus.DATASET), help="prepared dataset")
    parser.add_argument("--out", type=Path, default=Path("models/bench-quality"),
                        help="where to train the default model when --model is not given")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="extra train flags after --, e.g. -- --steps-per-epoch 60 --epochs 30")
    args = parser.parse_args()
    extra = [f for f in args.train_flags if f != "--"]
    model = args.model or train_default(args.data, args.out, extra)
    result = evaluate(model, args.data)
    if not result["baseline"]:
        sys.exit(f"no n-gram baseline: {result['baseline_note']}")
    ours, base = result["model"], result["baseline"]
    ratio = ours["bits_per_note"] / base["bits_per_note"]
    print(f"validation: {result['pieces']} pieces, {result['notes']} notes of {result['data']}")
    print(f"model        {ours['bits_per_note']:.3f} bits/note "
          f"({ours['pitch_bits_per_note']:.3f} for pitch)")
    print(f"{base['order']}-gram KN   {base['bits_per_note']:.3f} bits/note "
          f"({base['pitch_bits_per_note']:.3f} for pitch)")
    print(f"ratio model / n-gram: {ratio:.3f} (target <= {TARGET}: "
          f"{'met' if ratio <= TARGET else 'not met'})")


if __name__ == "__main__":
    main()
