"""The command line: parse and check flags, call the Python API, print its result.

Each command's work lives in the module named for its role; this file only
knows the flags, and takes their defaults from ``melody.config``. A handler
returns ``(result_dict, summary_text)``: the summary goes to stdout (stderr
with ``--json``), the dict to stdout as JSON. Errors the library raises
(``melody.errors``) become one line: ``UsageError`` exit code 2, ``RunError`` 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading

from melody import __version__, corpus
from melody import config as c
from melody.cli import flags
from melody.cli.flags import (bar_distances, form_letters, fraction, key_name, midi_pitch,
                              positive_float, probability, program_number, whole)
from melody.config import (
    DATASETS,
    DEFAULT_NOTES,
    DEFAULT_PROGRAM,
    DEFAULT_TEMPO,
    EVALUATE_SAMPLES,
    FINE_TUNE_LEARNING_RATE,
    GENERATED,
    PRETRAINED,
    SECTION_BARS,
    STRATEGIES,
    ModelConfig,
    PrepareConfig,
    SampleConfig,
    TrainConfig,
)
from melody.errors import RunError, Terminated, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage is one ``--help`` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Add "(default: X)" to each flag's help unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        # `is`, not `in`: a default of 0 equals False but must still be shown.
        if "default" in text or action.default is False or action.default is argparse.SUPPRESS:
            return text
        if action.default is None:
            return text + " (default: not set)" if action.option_strings else text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


def _formatter(prog):
    return _HelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="melody",
        description="Learn melodies from MIDI collections with a GRU and write new ones.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"melody {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_formatter)
        return p

    def add_json(p):
        p.add_argument("--json", action="store_true",
                       help="print one JSON object on stdout (the summary goes to stderr)")

    # prepare ------------------------------------------------------------------
    p = command("prepare", "Turn music files into a token dataset (built-in folk corpus by default).")
    p.epilog = ("One run at a time writes a dataset folder: a second is refused, naming the "
                "first. A collection in which no file yields a melody is an error (exit code "
                "2); the manifest still says why each file was skipped.")
    p.add_argument("sources", nargs="*", metavar="SOURCES",
                   help="files or folders (searched recursively) of .mid .midi .kar "
                        ".xml .musicxml .mxl .abc .krn; none: the built-in folk corpus")
    p.add_argument("--out", default=None,
                   help=f"dataset folder (default: {corpus.DATASET} for the built-in corpus, "
                        f"else {DATASETS}/NAME of the first source)")
    p.add_argument("--jobs", type=whole(1, c.MAX_JOBS), default=None,
                   help=f"parallel worker processes, 1..{c.MAX_JOBS} (default: all cores)")
    p.add_argument("--val-fraction", type=fraction, default=PrepareConfig.val_fraction,
                   help="share of pieces held out for validation, in [0, 1)")
    p.add_argument("--seed", type=flags.seed, default=PrepareConfig.seed,
                   help=f"seed of the train/validation split, 0..{c.MAX_SEED}")
    p.add_argument("--timeout", type=flags.timeout, default=PrepareConfig.timeout,
                   help=f"seconds allowed to read one file before it is skipped, "
                        f"{c.MIN_TIMEOUT:g}..{c.MAX_TIMEOUT:g}")
    add_json(p)

    # train --------------------------------------------------------------------
    p = command("train", "Train a GRU on a prepared dataset or a folder of music files.")
    p.add_argument("--data", default=str(corpus.DATASET),
                   help="prepared dataset folder, or music files folder (prepared on the fly)")
    p.add_argument("--out", default=None, help="model folder (default: models/NAME-of-data)")
    p.epilog = (f"The model may have at most {c.MAX_PARAMS:,} weights (--units, --layers, "
                "--embedding), and a training step must fit in this machine's memory "
                "(--batch-size x --seq-len); larger settings are refused before training "
                "starts. One run at a time writes an --out folder: a second is refused, "
                "naming the first.")
    p.add_argument("--from", dest="parent", default=None, metavar="pretrained|MODEL_DIR",
                   help="fine-tune a model instead of starting from random weights: "
                        f"'{PRETRAINED}' (the model shipped inside the package) or a model "
                        "folder; its architecture and tokenizer are kept")
    p.add_argument("--epochs", type=whole(1, c.MAX_EPOCHS), default=TrainConfig.epochs,
                   help=f"maximum number of epochs, 1..{c.MAX_EPOCHS}")
    # Architecture flags (and the learning rate) are absent unless given, so that
    # --from and --resume can tell a flag given from a default.
    unset = argparse.SUPPRESS
    p.add_argument("--units", type=whole(1, c.MAX_WIDTH), default=unset,
                   help=f"GRU units per layer, 1..{c.MAX_WIDTH} (default: {ModelConfig.units})")
    p.add_argument("--layers", type=whole(1, c.MAX_LAYERS), default=unset,
                   help=f"number of GRU layers, 1..{c.MAX_LAYERS} (default: {ModelConfig.layers})")
    p.add_argument("--embedding", type=whole(1, c.MAX_WIDTH), default=unset,
                   help=f"token embedding size, 1..{c.MAX_WIDTH} (default: {ModelConfig.embedding})")
    p.add_argument("--dropout", type=fraction, default=unset,
                   help=f"dropout after each GRU layer, in [0, 1) (default: {ModelConfig.dropout})")
    p.add_argument("--lookback", type=bar_distances, default=unset,
                   help="form context: the model also reads what came at the same place this "
                        "many bars back (comma-separated), or none (default: "
                        f"{','.join(map(str, ModelConfig.lookback))})")
    p.add_argument("--reset-after", choices=("true", "false"), default=unset,
                   help="GRU variant: true runs on cuDNN; false is the textbook cell "
                        f"(default: {str(ModelConfig.reset_after).lower()})")
    p.add_argument("--seq-len", type=whole(1, c.MAX_SEQ_LEN), default=TrainConfig.seq_len,
                   help=f"tokens per training window, 1..{c.MAX_SEQ_LEN}")
    p.add_argument("--batch-size", type=whole(1, c.MAX_BATCH_SIZE), default=unset,
                   help=f"windows per batch, 1..{c.MAX_BATCH_SIZE} (default: "
                        f"{TrainConfig.batch_size}, {c.GPU_BATCH_SIZE} with a GPU)")
    p.add_argument("--learning-rate", type=flags.number(0.0, c.MAX_LEARNING_RATE, low_open=True),
                   default=unset, help=f"Adam learning rate, in (0, {c.MAX_LEARNING_RATE:g}] "
                   f"(default: {TrainConfig.learning_rate:g}, {FINE_TUNE_LEARNING_RATE:g} with --from)")
    p.add_argument("--patience", type=whole(1, c.MAX_EPOCHS), default=TrainConfig.patience,
                   help="epochs without validation improvement before stopping "
                        "(each such epoch also halves the learning rate)")
    p.add_argument("--steps-per-epoch", type=whole(1, c.MAX_STEPS_PER_EPOCH), default=None,
                   help=f"batches per epoch, 1..{c.MAX_STEPS_PER_EPOCH} (default: one pass "
                        f"over the training tokens, at least {c.MIN_WINDOWS:,} windows, "
                        f"{c.FINE_TUNE_WINDOWS} with --from)")
    p.add_argument("--seed", type=flags.seed, default=TrainConfig.seed,
                   help=f"random seed, 0..{c.MAX_SEED}")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out from its last checkpoint, with its "
                        "architecture and data (Ctrl-C once saves one, twice aborts)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue on --data other than (or changed since) the "
                        "run's own; the best score starts over on the new validation split")
    p.add_argument("--strategy", choices=STRATEGIES, default=TrainConfig.strategy,
                   help="where to train: mirrored = all local GPUs (tf.distribute); "
                        "multi-worker = one model across processes or machines on JAX "
                        "(pip install 'melody[jax]'), each process started with the same "
                        "command and KERAS_DISTRIBUTION_JOB_ADDRESSES (host:port of process 0), "
                        "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID; "
                        "--batch-size is the whole run's, split over the processes; "
                        "--out must be a folder they share")
    add_json(p)

    # generate -------------------------------------------------------------------
    p = command("generate", "Write new melodies (the built-in pretrained model by default).")
    p.add_argument("--model", default=None, help="model folder (default: the shipped pretrained model)")
    p.epilog = (f"Ceilings that keep a call within minutes and memory: -n x --notes at most "
                f"{c.MAX_BATCH_NOTES}, -n x --bars at most {c.MAX_BATCH_BARS}; a primer of at "
                f"most {c.MAX_NOTES} notes; a WAV of at most {c.MAX_WAV_SECONDS / 60:g} minutes. "
                "A melody's files (.mid, .json and the extras) appear together or not at all.")
    p.add_argument("-n", "--count", type=whole(1, c.MAX_MELODIES), default=SampleConfig.n,
                   dest="n", help=f"number of melodies, sampled together, 1..{c.MAX_MELODIES}")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--notes", type=whole(1, c.MAX_NOTES), default=None,
                        help=f"stop after this many notes, 1..{c.MAX_NOTES} (default: "
                             f"{DEFAULT_NOTES}, or the melody's own end)")
    length.add_argument("--bars", type=whole(1, c.MAX_BARS), default=None,
                        help=f"length in bars, 1..{c.MAX_BARS} (ends on a bar line)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--form", type=form_letters, default=None,
                       help="sections such as AABB or ABA: a repeated letter brings its section "
                            "back (its last bar may vary), a new letter brings new material, and "
                            "the melody ends on a cadence; --bars is shared evenly among the "
                            f"sections (default: {SECTION_BARS} bars each). Without it each melody "
                            "takes the form of a piece of the model's collection")
    shape.add_argument("--free-form", action="store_true",
                       help="no form from the collection: the network alone decides what comes back")
    p.add_argument("--temperature", type=positive_float, default=SampleConfig.temperature,
                   help="sampling temperature, any finite number > 0 (lower is safer, higher "
                        "is wilder; near 0 it always takes the likeliest token)")
    p.add_argument("--top-k", type=whole(1), default=None,
                   help="sample among the K most likely tokens")
    p.add_argument("--top-p", type=probability, default=None,
                   help="nucleus sampling: the smallest set of tokens with this total probability")
    p.add_argument("--seed", type=flags.seed, default=None,
                   help=f"random seed, 0..{c.MAX_SEED} (default: a fresh one, written to the "
                        "sidecar)")
    p.add_argument("--primer", default=None, help="music file whose melody the new ones continue")
    p.add_argument("--key", type=key_name, default=None, help="key such as D, F#m or 'Bb minor'")
    p.add_argument("--lowest", type=midi_pitch, default=None, help="lowest pitch allowed (e.g. 55 or G3)")
    p.add_argument("--highest", type=midi_pitch, default=None, help="highest pitch allowed (e.g. 84 or C6)")
    p.add_argument("--tempo", type=flags.tempo, default=None,
                   help=f"tempo in BPM, {c.MIN_TEMPO:g}..{c.MAX_TEMPO:g} (default: the "
                        f"primer's, else {DEFAULT_TEMPO:g})")
    p.add_argument("--program", type=program_number, default=None,
                   help=f"General MIDI program 0..127 (default: the primer's, else "
                        f"{DEFAULT_PROGRAM}, piano)")
    p.add_argument("--out", default=str(GENERATED), help="output folder")
    p.add_argument("--name", type=flags.stem, default=None,
                   help=f"file name stem, at most {c.MAX_NAME_BYTES} bytes (default: "
                        "melody-SEED-I)")
    p.add_argument("--wav", action="store_true", help="also write a WAV")
    p.add_argument("--png", action="store_true", help="also draw a piano roll")
    p.add_argument("--musicxml", action="store_true", help="also write a MusicXML score")
    p.add_argument("--check-originality", action="store_true",
                   help="flag melodies that copy the training set more than human melodies do")
    add_json(p)

    # evaluate -------------------------------------------------------------------
    p = command("evaluate", "Measure how well a model predicts music, against an n-gram baseline.")
    p.add_argument("--model", default=None, help="model folder (default: the shipped pretrained model)")
    p.add_argument("--data", nargs="+", default=None,
                   help="prepared dataset (validation split) or music files/folders "
                        f"(default: the model's own dataset, else {corpus.DATASET})")
    p.add_argument("--samples", type=whole(0, c.MAX_SAMPLES), default=EVALUATE_SAMPLES,
                   help=f"melodies to generate for the musicality statistics, 0..{c.MAX_SAMPLES} "
                        "(0: skip them)")
    p.add_argument("--seed", type=flags.seed, default=0, help=f"random seed, 0..{c.MAX_SEED}")
    p.add_argument("--png", default=None,
                   help="draw the statistics into this new PNG file (an existing file is "
                        "never replaced: the command refuses it)")
    add_json(p)

    # render ---------------------------------------------------------------------
    p = command("render", "Make WAV, piano-roll PNG and MusicXML from MIDI files.")
    p.epilog = ("Without --wav/--png/--musicxml all three are written. Outputs are named after "
                "each file (NAME.wav, NAME.png, NAME.musicxml), appear together or not at all, "
                "and never overwrite: NAME-2.* and so on. Each file is rendered in a worker "
                f"process with a time limit (--timeout) and a memory cap "
                f"({c.RENDER_MEMORY / 2**30:g} GB); only regular files are opened (a FIFO, a "
                f"device or a folder is named and skipped), of at most {c.MAX_FILE_BYTES // 2**20} MB, and a "
                f"WAV is made of at most {c.MAX_WAV_SECONDS / 60:g} minutes of music. A file "
                "that cannot be read or rendered is named on stderr with the reason and the "
                "others are still rendered; the exit code is then 1 (2 when no file could be "
                "rendered).")
    p.add_argument("files", nargs="+", metavar="FILES", help="MIDI files (any tracks, drums included)")
    p.add_argument("--wav", action="store_true",
                   help="write a 44.1 kHz 16-bit WAV (FluidSynth when installed, "
                        "else a built-in synthesiser; the summary says which)")
    p.add_argument("--png", action="store_true", help="draw a 1600x600 piano roll")
    p.add_argument("--musicxml", action="store_true",
                   help="write a MusicXML score (quantised to sixteenths and triplets)")
    p.add_argument("--soundfont", default=None, metavar="SF2",
                   help="SoundFont for FluidSynth (default: the General MIDI TimGM6mb.sf2 "
                        "that pretty_midi ships)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: beside each file)")
    p.add_argument("--timeout", type=flags.timeout, default=c.RENDER_TIMEOUT,
                   help=f"seconds allowed to render one file before it is given up, "
                        f"{c.MIN_TIMEOUT:g}..{c.MAX_TIMEOUT:g}")
    add_json(p)
    return parser


# -- the commands: flags -> the Python API -> (result, summary) ----------------------
def _prepare(args):
    from melody.data import prepare, summary_text

    result = prepare(args.sources, args.out, jobs=args.jobs, val_fraction=args.val_fraction,
                     seed=args.seed, timeout=args.timeout)
    return result, summary_text(result)


def _train(args):
    from melody.training import summary_text, train

    given = {k: getattr(args, k) for k in ("units", "layers", "embedding", "dropout", "lookback",
                                            "reset_after", "learning_rate", "batch_size")
             if hasattr(args, k)}
    if "reset_after" in given:
        given["reset_after"] = given["reset_after"] == "true"
    result = train(args.data, args.out, resume=args.resume, parent=args.parent,
                   allow_data_change=args.allow_data_change,
                   epochs=args.epochs, seq_len=args.seq_len,
                   patience=args.patience, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                   strategy=args.strategy, **given)
    return result, summary_text(result)


def _generate(args):
    from melody.generation import generate, summary_text

    result = generate(args.model, args.out, n=args.n, seed=args.seed, primer=args.primer,
                      tempo=args.tempo, program=args.program, name=args.name, wav=args.wav,
                      png=args.png, musicxml=args.musicxml,
                      check_originality=args.check_originality, notes=args.notes, bars=args.bars,
                      form=args.form, free_form=args.free_form, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, key=args.key, lowest=args.lowest,
                      highest=args.highest)
    return result, summary_text(result, args.out)


def _evaluate(args):
    from melody.evaluation import evaluate, summary_text

    result = evaluate(args.model, args.data, samples=args.samples, seed=args.seed, png=args.png)
    return result, summary_text(result)


def _render(args):
    from melody.outputs.render import render, summary_text

    result = render(args.files, wav=args.wav, png=args.png, musicxml=args.musicxml,
                    soundfont=args.soundfont, out=args.out, timeout=args.timeout)
    return result, summary_text(result)


COMMANDS = {"prepare": _prepare, "train": _train, "generate": _generate, "evaluate": _evaluate,
            "render": _render}


def _json_safe(value):
    """NaN and infinity are not JSON: strict parsers refuse them, so they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return _json_safe(value.tolist())
    return value


@contextlib.contextmanager
def _terminate_by_exception():
    """SIGTERM and SIGHUP raise ``Terminated`` where the program is, so the cleanups
    on the way out (temporary files, half-written sets, locks) run as for Ctrl-C."""
    def terminate(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, terminate) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"melody {args.command}"
    try:
        # Libraries that print (pyfluidsynth does when $CI is set) must not corrupt --json.
        with _terminate_by_exception(), contextlib.redirect_stdout(sys.stderr):
            flags.check_together(args)
            result, summary = COMMANDS[args.command](args)
    except Terminated as e:
        print(f"{prog}: terminated by {e}", file=sys.stderr)
        return 143
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, read-only folder, ...
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"{prog}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    if summary:
        print(summary, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(_json_safe(result), allow_nan=False))
    return 1 if result.get("errors") else 0  # some inputs failed (each named on stderr)
