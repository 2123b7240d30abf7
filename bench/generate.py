"""How fast generation is: the NumPy sampler against the naive Keras loop, start-up, batching.

    PYTHONPATH=. python bench/generate.py [--model DIR] [--naive-notes 24] [--repeats 3]

1. Seconds per note: the state-carrying NumPy sampler against a loop that
   calls Keras ``model.predict`` on the whole growing sequence every token
   (the naive loop runs only a few dozen notes).
2. Wall time of ``python app.py generate -n 1`` (a subprocess, start to
   finish) against ``python -c "import tensorflow"``.
3. Notes per second for 64 melodies sampled together.

Uses the shipped model if present, else a freshly built default-size model.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from melody.modelfolder import ModelFolder, shipped_folder  # noqa: E402
from melody.sample import Constraints, SampleConfig, draw, next_token_probs, sample  # noqa: E402
from melody.tokenizer import BOS, Tokenizer  # noqa: E402


def model_folder(given, tmp: Path) -> tuple[Path, str]:
    if given:
        return Path(given), "given"
    shipped = shipped_folder()
    if (shipped / "model.keras").is_file():
        return shipped, "shipped"
    from melody.model import ModelConfig, build_model
    from melody.modelfolder import save_model_folder

    tok = Tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size)  # the default size
    folder = tmp / "model"
    save_model_folder(folder, build_model(cfg), tok, {"model": cfg.to_dict()})
    return folder, "fresh default-size (untrained)"


def numpy_seconds_per_note(gru, tok, notes: int) -> float:
    start = time.perf_counter()
    sequences = sample(gru, tok, SampleConfig(n=1, notes=notes, seed=0))
    elapsed = time.perf_counter() - start
    return elapsed / tok.decode(sequences[0]).n_notes


def naive_seconds_per_note(folder: Path, tok, notes: int) -> float:
    """Re-run Keras on the whole prefix for every token, as simple samplers do."""
    model = ModelFolder(folder).keras_model()
    config = SampleConfig(n=1, notes=notes, seed=0)
    constraints = Constraints(tok, config, 1)
    rng = np.random.default_rng(0)
    tokens = [BOS]
    model.predict(np.array([tokens]), verbose=0)  # build the graph outside the timing
    start = time.perf_counter()
    while not constraints.done.all():
        logits = model.predict(np.array([tokens]), verbose=0)[:, -1]
        token = draw(next_token_probs(logits, constraints.mask()), rng.random(1))
        constraints.update(token)
        tokens.append(int(token[0]))
    return (time.perf_counter() - start) / tok.decode(tokens).n_notes


def wall(cmd: list[str], repeats: int, cwd: Path) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: shipped or fresh)")
    parser.add_argument("--naive-notes", type=int, default=24, help="notes for the naive Keras loop")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each subprocess (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, which = model_folder(args.model, tmp)
        opened = ModelFolder(folder)
        tok, gru = opened.tokenizer, opened.network
        print(f"model: {folder} ({which})")

        fast = numpy_seconds_per_note(gru, tok, 256)
        slow = naive_seconds_per_note(folder, tok, args.naive_notes)
        print(f"1. per note: numpy {fast * 1e3:.2f} ms, naive keras predict {slow * 1e3:.1f} ms "
              f"-> numpy is {slow / fast:.0f}x faster (aim >= 100x)")

        gen = wall([sys.executable, str(ROOT / "app.py"), "generate", "--model", str(folder),
                    "-n", "1", "--out", str(tmp / "out")], args.repeats, ROOT)
        tf = wall([sys.executable, "-c", "import tensorflow"], args.repeats, ROOT)
        print(f"2. wall: `generate -n 1` {gen:.2f} s, `import tensorflow` {tf:.2f} s "
              f"-> ratio {gen / tf:.3f} (aim <= 0.25)")

        start = time.perf_counter()
        batch = sample(gru, tok, SampleConfig(n=64, notes=64, seed=1))
        elapsed = time.perf_counter() - start
        notes = sum(tok.decode(s).n_notes for s in batch)
        single = 1.0 / fast
        print(f"3. 64 melodies at once: {notes} notes in {elapsed:.2f} s = {notes / elapsed:.0f} "
              f"notes/s -> {notes / elapsed / single:.1f}x one melody's {single:.0f} notes/s")


if __name__ == "__main__":
    main()
