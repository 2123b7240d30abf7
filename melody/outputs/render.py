"""The ``render`` operation: WAV, piano-roll PNG and MusicXML from MIDI files.

One bad file never stops the run: it is named with its reason and the others
are still rendered. Outputs never overwrite (``NAME-2.*`` ...), and a file is
rendered whole or not at all.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from melody.errors import UsageError
from melody.fileio import remove_written, reserve_name
from melody.outputs.audio import fluidsynth_available, fluidsynth_problem, write_wav
from melody.outputs.pianoroll import write_png
from melody.outputs.score import write_musicxml

OUTPUTS = {"wav": ".wav", "png": ".png", "musicxml": ".musicxml"}


def read_midi(path):
    """PrettyMIDI of a file; ValueError with the one-line reason when it cannot be read."""
    import pretty_midi

    path = Path(path)
    if not path.exists():
        raise ValueError("no such file")
    if path.is_dir():
        raise ValueError("is a folder, not a MIDI file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # mido and pretty_midi raise many types on corrupt files
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ValueError(f"not a readable MIDI file ({detail})") from None
    if not any(inst.notes for inst in pm.instruments):
        raise ValueError("has no notes")
    return pm


def render_file(source, kinds, out_dir=None, soundfont=None) -> dict:
    """Render one MIDI file into the ``kinds`` asked for; return the paths written."""
    source = Path(source)
    pm = read_midi(source)
    folder = Path(out_dir) if out_dir else source.parent
    suffixes = tuple(OUTPUTS[k] for k in kinds)
    stem = reserve_name(folder, source.stem, suffixes)
    entry = {"source": str(source), "wav": None, "png": None, "musicxml": None, "synth": None}
    targets = [folder / (stem + suffix) for suffix in suffixes]  # the first one is reserved
    try:
        for kind, target in zip(kinds, targets):
            if kind == "wav":
                entry["synth"] = write_wav(pm, target, soundfont=soundfont)
            elif kind == "png":
                write_png(pm, target, title=source.name)
            else:
                write_musicxml(pm, target, title=source.stem)
            entry[kind] = str(target)
    except BaseException:
        # A file is rendered whole or not at all: no empty reserved name, no
        # WAV without the PNG asked for beside it.
        remove_written(targets)
        raise
    return entry


def render(files, *, wav: bool = False, png: bool = False, musicxml: bool = False,
           soundfont=None, out=None) -> dict:
    """Render every MIDI file of ``files`` into the outputs asked for (all three
    when none is), beside each file or into ``out``; return ``{"files": [...],
    "errors": [...]}``. A file that cannot be read is named on stderr and the
    others are still rendered; when none could be, UsageError."""
    import sys

    asked = {"wav": wav, "png": png, "musicxml": musicxml}
    kinds = [k for k in OUTPUTS if asked[k]] or list(OUTPUTS)
    _check_soundfont(soundfont, kinds)
    files = list(files)
    done, errors = [], []
    for source in files:
        try:
            done.append(render_file(source, kinds, out, soundfont))
        except OSError:
            raise  # the output side failed (disk full, read-only): every next file would too
        except Exception as e:  # one bad file never stops the run; its reason is shown
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            errors.append({"source": str(source), "error": reason})
            if len(files) > 1:
                print(f"melody render: error: {source}: {reason}", file=sys.stderr)
    if not done:
        if len(errors) == 1:
            raise UsageError(f"{errors[0]['source']}: {errors[0]['error']}")
        raise UsageError(f"no file could be rendered ({len(errors)} failed, see above)")
    return {"files": done, "errors": errors}


def _check_soundfont(soundfont, kinds) -> None:
    if soundfont is None:
        return
    if "wav" not in kinds:
        raise UsageError("--soundfont only applies to WAV: add --wav, "
                         f"got only --{' --'.join(kinds)}")
    if not Path(soundfont).is_file():
        raise UsageError(f"--soundfont must be an existing .sf2 file, got {soundfont!r}")
    if not fluidsynth_available():
        raise UsageError(f"--soundfont needs FluidSynth, which is not available "
                         f"({fluidsynth_problem()}); install libfluidsynth3 and pyfluidsynth")


def summary_text(result: dict) -> str:
    files, errors = result["files"], result["errors"]
    lines = []
    for f in files:
        written = [os.path.basename(f[k]) for k in OUTPUTS if f[k]]
        synth = f" (WAV by {f['synth']})" if f["synth"] else ""
        lines.append(f"{f['source']} -> {', '.join(written)}{synth}")
    lines.append(f"rendered {len(files)} file(s), {len(errors)} failed")
    return "\n".join(lines)
