"""The ``generate`` command: sample melodies and write MIDI plus a JSON sidecar each.

Nothing here imports TensorFlow: the model runs in NumPy (``melody.sample``).
Files are never overwritten (``reserve_name``) and always written whole.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# A GRU step is a few small matrix products: extra BLAS threads only wait for
# each other (several times slower on a busy machine). Effective only before
# NumPy's first import, which on the command line happens just below.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from melody.cli import UsageError  # noqa: E402
from melody.notes import Melody  # noqa: E402
from melody.midi_io import lead_in_steps  # noqa: E402
from melody.sample import NumpyGRU, SampleConfig, key_prior, sample  # noqa: E402

DEFAULT_TEMPO = 120.0
DEFAULT_PROGRAM = 0
SUFFIXES = (".mid", ".json", ".wav", ".png", ".musicxml")


@dataclass
class Primer:
    """The melody every new one continues: its file, tokens (no EOS) and decoded notes."""

    file: str
    tokens: np.ndarray
    melody: Melody
    steps: int  # where the primer's last note ends


def run_generate(args):
    folder = Path(args.model) if args.model else _default_folder()
    model, tokenizer, model_config = open_model(folder)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    primer = read_primer(args.primer, tokenizer) if args.primer else None
    config = _sample_config(args, seed)
    try:
        sequences = sample(model, tokenizer, config, None if primer is None else primer.tokens,
                           key_logp=key_prior(model_config, tokenizer))
    except ValueError as e:
        raise UsageError(str(e))
    tempo = args.tempo or (primer.melody.tempo if primer else DEFAULT_TEMPO)
    program = args.program if args.program is not None else (
        primer.melody.program if primer else DEFAULT_PROGRAM
    )
    melodies = [tokenizer.decode(s, tempo=tempo, program=program) for s in sequences]
    originality = check_originality(melodies, folder) if args.check_originality else None
    files = []
    for i, (tokens, melody) in enumerate(zip(sequences, melodies), start=1):
        sidecar = {
            "model": str(folder),
            "weights_digest": model_config.get("weights_digest"),
            "arguments": _arguments(args, seed, tempo, program),
            "seed": seed,
            "index": i,
            "notes": melody.n_notes,
            "seconds": round(melody.seconds(int(tokenizer.steps_of(tokens).sum())), 6),
            # A pickup is preceded by this much silence in the MIDI file (bar lines line up).
            "lead_in_seconds": round(melody.seconds(lead_in_steps(melody)), 6),
            "key": melody.key.name if melody.key else None,
            "time_signature": "%d/%d" % melody.time_signature if melody.time_signature else None,
            "primer": _primer_end(primer, melody),
        }
        if originality is not None:
            sidecar["originality"] = originality[i - 1]
        files.append(write_melody(args, melody, _stem(args, seed, i), sidecar))
    result = {"files": files, "seed": seed, "model": str(folder)}
    return result, _summary(result, args.out)


# -- inputs ---------------------------------------------------------------------------


def open_model(folder: Path):
    """(NumpyGRU, Tokenizer, config.json) of a model folder; a bad folder is a UsageError."""
    from melody.model import ModelFolderError, load_tokenizer, read_config

    try:
        config = read_config(folder)
        if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
            raise ModelFolderError(f"{folder}/config.json: no model settings")
        tokenizer = load_tokenizer(folder, config)
        model = NumpyGRU.load(folder)
    except (ModelFolderError, TypeError) as e:
        raise UsageError(str(e))
    if model.vocab_size != tokenizer.vocab_size:
        raise UsageError(
            f"{folder}: model.keras has {model.vocab_size} outputs "
            f"but tokenizer.json has {tokenizer.vocab_size} tokens"
        )
    return model, tokenizer, config


def _default_folder() -> Path:
    from melody.model import default_model_folder

    folder = default_model_folder()
    if not folder.is_dir():
        raise UsageError(
            f"the shipped model is missing ({folder}); pass --model DIR with a trained model folder"
        )
    return folder


def read_primer(path, tokenizer) -> Primer:
    """The primer's melody as tokens from BOS on, without EOS; unreadable -> UsageError."""
    from melody.midi_io import SkipFile, read_melody

    if not Path(path).is_file():
        raise UsageError(f"primer {path}: file not found")
    try:
        melody = read_melody(path)
        tokens = tokenizer.encode(melody)[:-1]
    except (SkipFile, ValueError, OSError) as e:
        raise UsageError(f"primer {path}: cannot be used ({e})")
    decoded = tokenizer.decode(tokens, tempo=melody.tempo, program=melody.program)
    return Primer(str(path), tokens, decoded, decoded.end)


def _sample_config(args, seed: int) -> SampleConfig:
    try:
        return SampleConfig(
            n=args.n, notes=args.notes, bars=args.bars, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, seed=seed, key=args.key,
            lowest=args.lowest, highest=args.highest,
        )
    except ValueError as e:
        raise UsageError(str(e))


def check_originality(melodies, folder):
    """Per melody: its longest run and 8-note share found in the training set, and
    whether it copies more than 95 in 100 held-out human melodies do."""
    from melody import musicality

    path = Path(folder) / musicality.ORIGINALITY_FILE
    if not path.is_file():
        raise UsageError(f"--check-originality needs {path}, which this model folder lacks "
                         "(models trained by this version of melody have it)")
    try:
        index = musicality.load_originality(path)
        return musicality.check(melodies, index)
    except ValueError as e:
        raise UsageError(str(e))


# -- outputs ------------------------------------------------------------------------------


def _stem(args, seed: int, index: int) -> str:
    if args.name is None:
        return f"melody-{seed}-{index}"
    if Path(args.name).name != args.name or args.name in ("", ".", ".."):
        raise UsageError(f"--name must be a file name stem without folders, got {args.name!r}")
    return args.name if args.n == 1 else f"{args.name}-{index}"


def write_melody(args, melody: Melody, stem: str, sidecar: dict) -> dict:
    """Write NAME.mid, the extras asked for, then NAME.json; return the paths and counts."""
    from melody.fileio import atomic_write_text, remove_written, reserve_name
    from melody.midi_io import to_pretty_midi, write_midi

    out = Path(args.out)
    name = reserve_name(out, stem, SUFFIXES)
    entry = {"midi": str(out / f"{name}.mid"), "notes": sidecar["notes"],
             "seconds": sidecar["seconds"]}
    written = [entry["midi"]]  # the reserved, still empty, MIDI file first
    try:
        write_midi(melody, entry["midi"])
        extras = [kind for kind in ("wav", "png", "musicxml") if getattr(args, kind)]
        if extras:
            pm = to_pretty_midi(melody)
            for kind in extras:
                written.append(str(out / f"{name}.{kind}"))
                entry.update(_render(kind, pm, out / f"{name}.{kind}", name))
        entry["json"] = str(out / f"{name}.json")
        sidecar["files"] = {k: v for k, v in entry.items() if k not in ("notes", "seconds", "json")}
        if "originality" in sidecar:
            entry["originality"] = sidecar["originality"]
        atomic_write_text(entry["json"], json.dumps(sidecar, indent=1) + "\n")
    except BaseException:
        # A melody is its MIDI file plus sidecar: never leave a part of one (disk
        # full, Ctrl-C) where a later run would have to step around it.
        remove_written(written)
        raise
    return entry


def _render(kind: str, pm, path: Path, title: str) -> dict:
    from melody import render  # matplotlib and music21 load only when asked for

    if kind == "wav":
        return {"wav": str(path), "synth": render.write_wav(pm, path)}
    if kind == "png":
        render.write_png(pm, path, title=title)
    else:
        render.write_musicxml(pm, path, title=title)
    return {kind: str(path)}


def _primer_end(primer: Primer | None, melody: Melody) -> dict | None:
    if primer is None:
        return None
    return {"file": primer.file, "notes": primer.melody.n_notes,
            "steps": primer.steps, "seconds": round(melody.seconds(primer.steps), 6)}


def _arguments(args, seed: int, tempo: float, program: int) -> dict:
    """Every flag as given, with the seed and the defaults that were filled in."""
    given = {k: v for k, v in vars(args).items() if k != "command" and not callable(v)}
    given["seed"] = seed
    given["resolved"] = {
        "notes": args.notes if args.notes or args.bars else 64,
        "tempo": tempo,
        "program": program,
    }
    return given


def _summary(result: dict, out) -> str:
    count = len(result["files"])
    lines = [f"wrote {count} {'melody' if count == 1 else 'melodies'} to {out}/ "
             f"(seed {result['seed']}, model {result['model']})"]
    for f in result["files"]:
        extra = "".join(f", {k}" for k in ("wav", "png", "musicxml") if k in f)
        if "synth" in f:
            extra = extra.replace(", wav", f", wav ({f['synth']})", 1)
        lines.append(f"  {Path(f['midi']).name}: {f['notes']} notes, {f['seconds']:.1f} s{extra}")
        if f.get("originality", {}).get("flagged"):
            o = f["originality"]
            lines.append(f"    copies the training set more than 95 in 100 human melodies do "
                         f"(longest shared run {o['longest_run']} notes)")
    return "\n".join(lines)
