"""``generate``: sample melodies and write each as MIDI plus a JSON sidecar (and extras).

Nothing here imports TensorFlow: the model runs in NumPy (``melody.sample``).
Files are never overwritten and always written whole: a melody is its MIDI
file, extras and sidecar together, or nothing (``fileio.OutputSet``: written
under temporary names and renamed into place together, the sidecar last). A
run killed on the way leaves only hidden temporaries, which the next run into
the folder removes.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from melody.config import (
    DEFAULT_NOTES,
    GENERATED,
    MAX_SEED,
    MAX_WAV_SECONDS,
    SampleConfig,
    check_name,
)
from melody.errors import UsageError
from melody.fileio import sweep
from melody.modelfolder import Batch, ModelFolder, check_output
from melody.notes import Melody

SUFFIXES = (".mid", ".json", ".wav", ".png", ".musicxml")
EXTRAS = ("wav", "png", "musicxml")


def generate(model=None, out=GENERATED, *, n: int = 4, seed: int | None = None, primer=None,
             tempo: float | None = None, program: int | None = None, name: str | None = None,
             wav: bool = False, png: bool = False, musicxml: bool = False,
             check_originality: bool = False, **options) -> dict:
    """Write ``n`` new melodies of ``model`` (a model folder; default: the shipped
    model) into ``out``; return ``{"files": [...], "seed", "model"}`` (the
    ``--json`` of ``generate``).

    ``options`` are the sampling settings of ``SampleConfig`` (``notes`` or
    ``bars``, ``temperature``, ``top_k``, ``top_p``, ``key``, ``lowest``,
    ``highest``). Each melody is ``NAME.mid`` plus ``NAME.json`` (model, its
    digest, every argument, the seed, notes, seconds) and the ``wav``, ``png``
    and ``musicxml`` asked for; ``name`` is the stem (default ``melody-SEED-I``).
    """
    seed = seed if seed is not None else secrets.randbelow(MAX_SEED + 1)
    try:  # every number checked before any work starts
        config = SampleConfig(n=n, seed=seed, **options)
        if name is not None:
            check_name(name)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e))
    check_output(tempo, program)
    folder = ModelFolder(model)
    if Path(out).is_dir():
        sweep(out)  # what runs killed here before left
    with _bar(n, "sampling") as bar:
        batch = folder.sample(config, primer, tempo, program, on_finished=bar.update)
    if wav:
        _check_wav_length(batch.melodies)
    originality = _originality(batch.melodies, folder) if check_originality else None
    arguments = dict(model=model, out=str(out), n=n, seed=seed, primer=primer and str(primer),
                     tempo=tempo, program=program, name=name, wav=wav, png=png, musicxml=musicxml,
                     check_originality=check_originality, **options)
    extras = [kind for kind, asked in zip(EXTRAS, (wav, png, musicxml)) if asked]
    files = []
    with _bar(n, "writing") as bar:
        for i, (tokens, melody) in enumerate(zip(batch.sequences, batch.melodies), start=1):
            sidecar = _sidecar(folder, batch, arguments, i, tokens, melody)
            if originality is not None:
                sidecar["originality"] = originality[i - 1]
            stem = f"melody-{seed}-{i}" if name is None else (name if n == 1 else f"{name}-{i}")
            files.append(write_melody(Path(out), melody, stem, sidecar, extras))
            bar.update()
    return {"files": files, "seed": seed, "model": str(folder.path)}


def _bar(n: int, what: str):
    """A progress bar on a terminal (none when stderr is not one) for n melodies."""
    import sys

    from tqdm import tqdm

    return tqdm(total=n, unit="melody", desc=what, file=sys.stderr, disable=None, leave=False,
                dynamic_ncols=True)


def _sidecar(folder: ModelFolder, batch: Batch, arguments: dict, index: int, tokens,
             melody: Melody) -> dict:
    from melody.musicality.form import bar_plan, plan_letters

    primer = batch.primer
    resolved = {"notes": arguments.get("notes") if arguments.get("notes") or arguments.get("bars")
                else DEFAULT_NOTES, "tempo": batch.tempo, "program": batch.program}
    return {
        "model": str(folder.path),
        "weights_digest": folder.weights_digest,
        "arguments": dict(arguments, resolved=resolved),
        "seed": batch.config.seed,
        "index": index,
        "notes": melody.n_notes,
        "seconds": round(melody.seconds(int(folder.tokenizer.steps_of(tokens).sum())), 6),
        # A pickup is preceded by this much silence in the MIDI file (bar lines line up).
        "lead_in_seconds": round(melody.seconds(melody.lead_in_steps), 6),
        "key": melody.key.name if melody.key else None,
        "time_signature": "%d/%d" % melody.time_signature if melody.time_signature else None,
        # Per bar from the first downbeat: a letter, the same for a bar heard before.
        "form": plan_letters(bar_plan(melody)) or None,
        "primer": None if primer is None else {
            "file": primer.file, "notes": primer.melody.n_notes, "steps": primer.steps,
            "seconds": round(melody.seconds(primer.steps), 6)},
    }


def _check_wav_length(melodies) -> None:
    for i, m in enumerate(melodies, start=1):
        seconds = m.seconds(m.end + m.lead_in_steps)
        if seconds > MAX_WAV_SECONDS:
            raise UsageError(f"melody {i} lasts {seconds / 60:.0f} minutes; --wav writes at most "
                             f"{MAX_WAV_SECONDS / 60:g}: ask for fewer --notes or --bars, or a "
                             "faster --tempo")


def _originality(melodies, folder: ModelFolder):
    """Per melody: its longest run and 8-note share found in the training set, and
    whether it copies more than 95 in 100 held-out human melodies do."""
    from melody import musicality

    path = folder.path / musicality.ORIGINALITY_FILE
    if not path.is_file():
        raise UsageError(f"--check-originality needs {path}, which this model folder lacks "
                         "(models trained by this version of melody have it)")
    try:
        return musicality.check(melodies, musicality.load_originality(path))
    except ValueError as e:
        raise UsageError(str(e))


def write_melody(out: Path, melody: Melody, stem: str, sidecar: dict, extras=()) -> dict:
    """Write NAME.mid, the ``extras`` asked for and NAME.json as one set (all or
    nothing, under a name no file has); return the paths and counts."""
    from melody.fileio import OutputSet, atomic_write_text

    suffixes = (".mid", *(f".{kind}" for kind in extras), ".json")
    with OutputSet(out, stem, suffixes, taken=SUFFIXES) as files:
        entry = {"midi": str(files.path(".mid")), "notes": sidecar["notes"],
                 "seconds": sidecar["seconds"]}
        melody.write_midi(files.temp(".mid"))
        if extras:
            pm = melody.to_pretty_midi()
            for kind in extras:
                entry[kind] = str(files.path(f".{kind}"))
                entry.update(_render(kind, pm, files.temp(f".{kind}"), files.name))
        entry["json"] = str(files.path(".json"))
        sidecar["files"] = {k: v for k, v in entry.items() if k not in ("notes", "seconds", "json")}
        if "originality" in sidecar:
            entry["originality"] = sidecar["originality"]
        atomic_write_text(files.temp(".json"), json.dumps(sidecar, indent=1) + "\n")
    return entry


def _render(kind: str, pm, path: Path, title: str) -> dict:
    """Write one extra to ``path``; what the entry gains besides its path."""
    # matplotlib and music21 load only when asked for
    if kind == "wav":
        from melody.outputs.audio import write_wav

        return {"synth": write_wav(pm, path)}
    if kind == "png":
        from melody.outputs.pianoroll import write_png

        write_png(pm, path, title=title)
    else:
        from melody.outputs.score import write_musicxml

        write_musicxml(pm, path, title=title)
    return {}


def summary_text(result: dict, out) -> str:
    count = len(result["files"])
    lines = [f"wrote {count} {'melody' if count == 1 else 'melodies'} to {out}/ "
             f"(seed {result['seed']}, model {result['model']})"]
    for f in result["files"]:
        extra = "".join(f", {k}" for k in EXTRAS if k in f)
        if "synth" in f:
            extra = extra.replace(", wav", f", wav ({f['synth']})", 1)
        lines.append(f"  {Path(f['midi']).name}: {f['notes']} notes, {f['seconds']:.1f} s{extra}")
        if f.get("originality", {}).get("flagged"):
            o = f["originality"]
            lines.append(f"    copies the training set more than 95 in 100 human melodies do "
                         f"(longest shared run {o['longest_run']} notes)")
    return "\n".join(lines)
