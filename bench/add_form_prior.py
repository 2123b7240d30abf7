"""Give a model folder made before form priors its training pieces' forms.

    python bench/add_form_prior.py melody/pretrained/folk [--data datasets/folk]

``train`` writes ``form_prior`` into config.json itself; this adds it to an
older folder from the training split of the dataset it was trained on (or
``--data``, with that dataset's own split), so ``generate`` draws each
melody's form from them. The rest of the folder is left as it was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody.data import load_dataset, training_split  # noqa: E402
from melody.fileio import atomic_write_text  # noqa: E402
from melody.modelfolder import CONFIG_FILE, ModelFolder  # noqa: E402
from melody.musicality.form import collection_forms  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model folder")
    parser.add_argument("--data", help="prepared dataset (default: the one it was trained on)")
    args = parser.parse_args(argv)
    folder = ModelFolder(args.model)
    if args.data:
        train = load_dataset(args.data).split("train")
    else:
        train, why_not = training_split(folder.config)
        if train is None:
            sys.exit(f"{args.model}: {why_not}; give --data")
    forms = collection_forms(train, folder.tokenizer)
    config = dict(folder.config, form_prior=forms)
    atomic_write_text(folder.path / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
    ModelFolder(args.model)  # it still opens
    print(f"{args.model}: forms of {len(forms)} training pieces added", file=sys.stderr)


if __name__ == "__main__":
    main()
