"""Helpers the test modules share: tiny MIDI files, datasets and model folders built in code,
and the command line run in this process."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # midi_factory, for every test module

from melody.cli import main  # noqa: E402
from melody.data import TokenData, write_manifest, write_split  # noqa: E402
from melody.model import ModelConfig, build_model  # noqa: E402
from melody.modelfolder import save_model_folder  # noqa: E402
from melody.notes import Key, Melody  # noqa: E402
from melody.outputs.midi import midi_bytes  # noqa: E402
from melody.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOK = Tokenizer()
# train flags for a model that trains in seconds
TINY = ["--units", "24", "--embedding", "8", "--layers", "1", "--seq-len", "32",
        "--batch-size", "16"]


# -- music ---------------------------------------------------------------------------
def tune(seed: int, n: int = 16) -> bytes:
    """A random one-track MIDI file of ``n`` quarter notes."""
    pitches = np.random.default_rng(seed).integers(57, 77, n)
    return midi_bytes(Melody(pitches, np.arange(n) * 12, [12] * n))


def write_songs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"song{i}.mid").write_bytes(tune(i))
    return folder


def folk_like_tune(rng, bars: int | None = None) -> Melody:
    """A tune of repeated motifs in a random major key."""
    tonic = int(rng.integers(55, 67))
    scale = [0, 2, 4, 5, 7, 9, 11, 12]
    motifs = ([0, 2, 4, 2], [4, 5, 7, 0], [7, 4, 2, 0])
    pitches, onsets, durations, t = [], [], [], 0
    for bar in range(bars or int(rng.integers(4, 9))):
        for step in motifs[bar % 3]:
            pitches.append(tonic + scale[step])
            onsets.append(t)
            durations.append(12)
            t += 12
    return Melody(pitches, onsets, durations, key=Key(tonic % 12, "major"), time_signature=(4, 4))


def write_midi_tunes(folder: Path, count: int) -> None:
    """``count`` folk-like tunes as MIDI files, each a different length (never duplicates)."""
    import pretty_midi

    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        melody = folk_like_tune(rng, bars=3 + i)
        pm = pretty_midi.PrettyMIDI(initial_tempo=120)
        inst = pretty_midi.Instrument(program=0, name="melody")
        for p, on, d in zip(melody.pitches, melody.onsets, melody.durations):
            inst.notes.append(pretty_midi.Note(90, int(p), on / 24, (on + d) / 24))
        pm.instruments.append(inst)
        pm.write(str(folder / f"tune{i}.mid"))


# -- datasets and models ----------------------------------------------------------------
def make_dataset(folder: Path, pieces: int = 120, seed: int = 0) -> Path:
    """A prepared dataset of folk-like tunes, a tenth of them for validation."""
    rng = np.random.default_rng(seed)
    tunes = [folk_like_tune(rng) for _ in range(pieces)]
    n_val = pieces // 10
    return dataset_of(folder, tunes[n_val:], tunes[:n_val], seed)


def dataset_of(folder: Path, train: list, val: list, seed: int = 0) -> Path:
    """A prepared dataset of these ``train`` and ``val`` melodies."""
    folder.mkdir(parents=True)
    for name, melodies in (("train", train), ("val", val)):
        write_split(folder, name, TokenData.from_pieces([TOK.encode(m) for m in melodies]))
    TOK.save(folder / "tokenizer.json")
    write_manifest(folder, {"sources": ["synthetic"], "seed": seed})
    return folder


def tiny_model(folder: Path, vocab: int = TOK.vocab_size, config_vocab: int | None = None,
               model=None, **settings) -> Path:
    """An untrained model folder (1 layer of 16 units unless ``settings`` say otherwise);
    ``config_vocab`` writes another vocabulary size into config.json than the model has."""
    settings = dict(dict(embedding=8, units=16, layers=1), **settings)
    cfg = ModelConfig(vocab_size=vocab, **settings)
    config = ModelConfig(vocab_size=config_vocab or vocab, **settings)
    save_model_folder(folder, model or build_model(cfg), TOK, {"model": config.to_dict()})
    return folder


def randomised(model, seed: int, scale: float = 0.5):
    """``model`` with every weight drawn at random, biases included: Keras starts
    biases at zero, which would hide a bias read from the wrong place."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(scale=scale, size=w.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny untrained model folder."""
    return tiny_model(tmp_path_factory.mktemp("model"))


def model_inputs(tokens, lookback: tuple = ()):
    """What a model reads for one piece's ``tokens`` (all of them as inputs): the
    Keras inputs and the NumPy network's context (None for a model without form context)."""
    from melody.context import piece_context

    if not lookback:
        return tokens[None], None
    context = tuple(c[None] for c in piece_context(tokens, TOK, lookback))
    return dict(zip(("tokens", "lookback", "position", "bar"), (tokens[None], *context))), context


# -- the command line ------------------------------------------------------------------
def run(capsys, *argv):
    """main(argv) as the console script runs it: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*argv) -> tuple[int, dict | None, str]:
    """Run the CLI in this process: (exit code, JSON result, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    text = out.getvalue().strip()
    return code, (json.loads(text.splitlines()[-1]) if code == 0 and text else None), err.getvalue()



# -- which synthesisers the audio tests ran -------------------------------------------------
SYNTH_OUTCOMES = {"builtin": Counter(), "fluidsynth": Counter()}


def pytest_configure(config):
    config.addinivalue_line("markers", "synth(name): the test renders audio with that synthesiser")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    params = getattr(item, "callspec", None)
    synth = params.params.get("synth") if params else None
    synth = synth or next((m.args[0] for m in item.iter_markers("synth")), None)
    if synth in SYNTH_OUTCOMES and (report.when == "call" or report.outcome != "passed"):
        SYNTH_OUTCOMES[synth][report.outcome] += 1
    return report


def fluidsynth_version() -> str:
    """FluidSynth's version as its library reports it, or why it is not usable."""
    import ctypes

    from melody.outputs import audio

    if not audio.fluidsynth_available():
        return f"not usable: {audio.fluidsynth_problem()}"
    version = getattr(audio._fluidsynth_module()[0]._fl, "fluid_version_str", None)
    if version is None:
        return "version unknown"
    version.restype = ctypes.c_char_p
    return version().decode()


def pytest_terminal_summary(terminalreporter):
    """One line in every run's output (``-q`` too) naming the synthesisers tested."""
    if not any(SYNTH_OUTCOMES.values()):
        return
    names = {"builtin": "built-in synthesiser", "fluidsynth": f"FluidSynth ({fluidsynth_version()})"}
    parts = [f"{names[synth]}: " + (", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
                                    or "not run")
             for synth, counts in SYNTH_OUTCOMES.items()]
    terminalreporter.write_line("audio tests: " + "; ".join(parts))
