"""Does ``generate --key`` give the key asked for? music21's key analysis of the melodies.

    python bench/keys.py [--model melody/pretrained/folk] [--per-key 10] [--seed 11]

For 16 keys (8 major, 8 minor, sharps and flats), ``--per-key`` melodies of
the default length are sampled with ``key=`` set, and each is given to
music21's Krumhansl-Schmuckler analysis (``Stream.analyze("key")``), which
knows nothing of melody's key prior. Prints how many melodies of each key it
hears in that key, and the total; asserts nothing (the test suite checks 9 in
10 on five keys).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody.modelfolder import ModelFolder, shipped_folder
from melody.notes import Key
from melody.sample import SampleConfig, sample

KEYS = ["C", "G", "D", "A", "E", "F", "Bb", "Eb", "Am", "Em", "Bm", "F#m", "Dm", "Gm", "Cm", "Fm"]


def heard_key(melody) -> Key:
    found = melody.to_music21().analyze("key")
    return Key(found.tonic.pitchClass, found.mode)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=shipped_folder())
    parser.add_argument("--per-key", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    folder = ModelFolder(args.model)
    agree = 0
    for name in KEYS:
        seqs = sample(folder.network, folder.tokenizer,
                      SampleConfig(n=args.per_key, seed=args.seed, key=name))
        hits = sum(heard_key(folder.tokenizer.decode(s)) == Key.parse(name) for s in seqs)
        agree += hits
        print(f"{name:>4}: {hits}/{args.per_key}", flush=True)
    print(f"{args.model}: music21 hears the key asked for in {agree} of "
          f"{len(KEYS) * args.per_key} melodies")


if __name__ == "__main__":
    main()
