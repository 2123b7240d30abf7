"""How well a model predicts music: bits per token and per note, against an n-gram.

Every piece is scored from BOS: the first token is given, every later token is
predicted from all the tokens before it. The n-gram baseline scores exactly the
same tokens.

- bits per token: total negative log2-likelihood / scored tokens;
- bits per note: the same total / notes (PITCH tokens), comparable across
  tokenisations;
- pitch bits per note: the NLL of the PITCH tokens alone / notes.
"""

from __future__ import annotations

import itertools
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.cli import UsageError
from melody.data import TokenData, is_dataset, load_dataset, prepare
from melody.model import (
    ModelFolderError,
    default_model_folder,
    load_keras_model,
    load_tokenizer,
    read_config,
)

LOG2 = math.log(2.0)


@dataclass
class Totals:
    """Sums over scored tokens, from which the reported rates follow."""

    nll_bits: float = 0.0
    pitch_nll_bits: float = 0.0
    tokens: int = 0
    notes: int = 0
    pieces: int = 0

    def add(self, nll_bits: np.ndarray, targets: np.ndarray, is_pitch: np.ndarray) -> None:
        """Add scored positions: per-token NLL in bits, their targets, pitch flags."""
        self.nll_bits += float(nll_bits.sum())
        self.pitch_nll_bits += float(nll_bits[is_pitch].sum())
        self.tokens += int(nll_bits.size)
        self.notes += int(is_pitch.sum())

    def report(self) -> dict:
        notes = max(self.notes, 1)
        return {
            "bits_per_token": self.nll_bits / max(self.tokens, 1),
            "bits_per_note": self.nll_bits / notes,
            "pitch_bits_per_note": self.pitch_nll_bits / notes,
        }


# -- the model ------------------------------------------------------------------
class ModelScorer:
    """Scores whole pieces with a Keras model, in padded batches of similar length.

    The GRU is causal, so padding after a piece's end never changes the
    predictions inside it; padded positions are left out of the sums.
    """

    def __init__(self, model, tokenizer, token_budget: int = 32768, max_batch: int = 64):
        from melody.backend import backend_name

        self.tokenizer = tokenizer
        self.token_budget = token_budget
        self.max_batch = max_batch
        make = _tf_nll if backend_name() == "tensorflow" else _keras_nll
        self._nll = make(model)

    def batches(self, data: TokenData):
        """Lists of piece indices, shortest pieces first, within the token budget."""
        lengths = np.diff(data.offsets)
        batch, longest = [], 0
        for i in np.argsort(lengths, kind="stable"):
            n = int(lengths[i])
            full = len(batch) == self.max_batch
            if batch and (full or (len(batch) + 1) * max(longest, n) > self.token_budget):
                yield batch
                batch, longest = [], 0
            batch.append(int(i))
            longest = max(longest, n)
        if batch:
            yield batch

    def score(self, data: TokenData) -> Totals:
        totals = Totals()
        for batch in self.batches(data):
            pieces = [data.piece(i) for i in batch]
            width = max(len(p) for p in pieces)
            padded = np.zeros((len(pieces), width), dtype=np.int32)
            for row, piece in enumerate(pieces):
                padded[row, : len(piece)] = piece
            nll = self._nll(padded[:, :-1], padded[:, 1:]) / LOG2
            targets = padded[:, 1:]
            mask = np.arange(width - 1)[None, :] < (np.array([len(p) for p in pieces]) - 1)[:, None]
            totals.add(nll[mask], targets[mask], self.tokenizer.is_pitch(targets[mask]))
            totals.pieces += len(pieces)
        return totals


def _tf_nll(model):
    """Per-token NLL in nats as numpy, from one traced graph for all batch shapes."""
    from melody.backend import tensorflow

    tf = tensorflow()
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def nll(inputs, targets):
        logits = tf.cast(model(inputs, training=False), tf.float32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)

    return lambda inputs, targets: nll(inputs, targets).numpy()


def _keras_nll(model):
    """The same through keras.ops, for Keras backends other than TensorFlow."""
    from melody.backend import keras

    ops = keras().ops

    def nll(inputs, targets):
        logits = ops.cast(model(inputs, training=False), "float32")
        log_probs = ops.log_softmax(logits, axis=-1)
        picked = ops.take_along_axis(log_probs, ops.expand_dims(targets, -1), axis=-1)
        return -ops.convert_to_numpy(ops.squeeze(picked, -1))

    return nll


# -- the n-gram baseline ----------------------------------------------------------------
def score_ngram(lm, order: int, data: TokenData, tokenizer) -> Totals:
    totals = Totals(pieces=len(data))
    nll, targets = lm.nll_bits(data.pieces(), order)
    totals.add(nll, targets, tokenizer.is_pitch(targets))
    return totals


def fit_baseline(train: TokenData, vocab_size: int):
    """The n-gram on the model's training split, its order chosen on held-out pieces."""
    from melody.ngram import fit_best

    return fit_best(list(train.pieces()), vocab_size)


# -- which tokens to score ---------------------------------------------------------------
def evaluation_data(data_args, config: dict, tokenizer) -> tuple[TokenData, str]:
    """The token data to score and a description of it.

    A prepared dataset gives its validation split; music files and folders are
    read and tokenised, all of them.
    """
    if not data_args:
        own = (config.get("data") or {}).get("folder")
        data_args = [own] if own and is_dataset(own) else ["datasets/folk"]
    if len(data_args) == 1 and (is_dataset(data_args[0]) or data_args[0] == "datasets/folk"):
        from melody.train import resolve_data

        dataset = resolve_data(data_args[0])
        _check_tokenizer(dataset.tokenizer, tokenizer, dataset.folder)
        return dataset.split("val"), f"{dataset.folder} (validation split)"
    missing = [p for p in data_args if not Path(p).exists()]
    if missing:
        raise UsageError(f"--data must be a prepared dataset or music files/folders; "
                         f"not found: {', '.join(missing)}")
    return _tokenise_files(data_args, tokenizer), ", ".join(data_args)


def _tokenise_files(paths, tokenizer) -> TokenData:
    with tempfile.TemporaryDirectory(prefix="melody-evaluate-") as tmp:
        prepare(list(paths), Path(tmp) / "data", val_fraction=0.0, progress=True)
        dataset = load_dataset(Path(tmp) / "data")
        _check_tokenizer(dataset.tokenizer, tokenizer, paths[0])
        pieces = [p for split in ("train", "val") for p in dataset.split(split).pieces()]
    return TokenData.from_pieces(pieces)


def _check_tokenizer(found, expected, where) -> None:
    if found != expected:
        raise UsageError(f"{where}: tokenised with different settings than the model's tokenizer")


def baseline_training_data(config: dict):
    """The model's training split, or (None, why not)."""
    data = config.get("data") or {}
    folder = data.get("folder")
    if not folder or not is_dataset(folder):
        return None, f"the model's training data ({folder or 'unknown'}) is not available"
    dataset = load_dataset(folder)
    if data.get("digest") and dataset.digest != data["digest"]:
        return None, f"{folder} has changed since the model was trained on it"
    return dataset.split("train"), None


# -- musicality (another module) ------------------------------------------------------------
def check_musicality_args(args) -> None:
    """Refuse, before any scoring, flags the musicality statistics cannot honour."""
    if args.samples == 1:
        raise UsageError("--samples must be 0 (skip) or at least 2 (melodies are compared as "
                         "sets), got 1")
    if args.png and not args.samples:
        raise UsageError("--png draws the musicality statistics; it needs --samples of at "
                         "least 2, got 0")


def musicality_hook(args, model_folder, data: TokenData, tokenizer) -> dict:
    """Statistics of ``args.samples`` generated melodies against ``data``.

    ``melody.musicality.evaluate_report`` returns the ``musicality`` and
    ``originality`` entries (``{}`` for ``--samples 0``).
    """
    from melody import musicality

    try:
        return musicality.evaluate_report(model_folder, data, tokenizer, samples=args.samples,
                                          seed=args.seed, png=args.png)
    except ModelFolderError as e:
        raise UsageError(str(e))


# -- the command -----------------------------------------------------------------------------
def run_evaluate(args):
    check_musicality_args(args)
    folder = Path(args.model) if args.model else default_model_folder()
    try:
        config = read_config(folder)
        tokenizer = load_tokenizer(folder, config)
    except ModelFolderError as e:
        raise UsageError(str(e))
    data, described = evaluation_data(args.data, config, tokenizer)
    if len(data) == 0:
        raise UsageError(f"no pieces to evaluate in {described}")
    try:
        model = load_keras_model(folder)
    except ModelFolderError as e:
        raise UsageError(str(e))
    print(f"scoring {len(data)} pieces of {described}", file=sys.stderr)
    model_totals = ModelScorer(model, tokenizer).score(data)
    result = {
        "model": model_totals.report(),
        "model_folder": str(folder),
        "data": described,
        "notes": model_totals.notes,
        "tokens": model_totals.tokens,
        "pieces": model_totals.pieces,
    }
    train, why_not = baseline_training_data(config)
    if train is None:
        result["baseline"] = None
        result["baseline_note"] = why_not
    else:
        lm, order, held_out = fit_baseline(train, tokenizer.vocab_size)
        result["baseline"] = dict(score_ngram(lm, order, data, tokenizer).report(), order=order)
        result["baseline_held_out_bits_per_token"] = {str(k): v for k, v in held_out.items()}
    result.update(musicality_hook(args, folder, data, tokenizer))
    return result, evaluate_summary(result)


def evaluate_summary(result: dict) -> str:
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
    """Feature overlaps and originality figures as two tables side by side."""
    if "musicality_note" in result:
        return [f"no musicality statistics: {result['musicality_note']}"]
    if "musicality" not in result:
        return []
    sets = result["musicality_sets"]
    left = [f"{'feature':<20}{'overlap':>8}{'KL':>7}"]
    for name, s in result["musicality"].items():
        left.append(f"{name:<20}{s['overlap']:8.3f}{s['kl']:7.3f}")
    right = originality_table(result.get("originality"))
    width = max(len(line) for line in left)
    rows = [f"{a:<{width}}   {b}".rstrip()
            for a, b in itertools.zip_longest(left, right, fillvalue="")]
    lines = ["", f"{sets['generated']} generated melodies against {sets['human']} human ones: "
                 "overlap 1 and KL 0 mean alike", *rows]
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
