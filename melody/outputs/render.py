"""The ``render`` operation: WAV, piano-roll PNG and MusicXML from MIDI files.

One bad file never stops the run: it is named with its reason and the others
are still rendered. Only regular files are opened (a FIFO, a device or a
folder is named and skipped, never read). Each file is rendered in a worker
process (``melody.worker``) under a time limit and a memory cap, so a file
that hangs, is too dense or crashes its reader costs that file alone; the
worker hands back the outputs' bytes and this process writes them. Outputs
never overwrite (``NAME-2.*`` ...), and a file's outputs appear together or
not at all (``fileio.OutputSet``).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from melody.config import MAX_FILE_BYTES, RENDER_MEMORY, RENDER_TIMEOUT
from melody.errors import UsageError
from melody.fileio import OutputSet, atomic_write_bytes, sweep
from melody.outputs.audio import fluidsynth_available, fluidsynth_problem
from melody.worker import Worker, WorkerLost

OUTPUTS = {"wav": ".wav", "png": ".png", "musicxml": ".musicxml"}
# What a render worker imports before its clock starts, by output.
_LIBRARIES = {"wav": ("pretty_midi",), "png": ("pretty_midi", "matplotlib.figure",
                                               "matplotlib.backends.backend_agg"),
              "musicxml": ("pretty_midi", "music21.musicxml.m21ToXml")}
_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device",
          stat.S_ISSOCK: "a socket"}


def check_source(path: Path) -> None:
    """ValueError with the one-line reason unless ``path`` is a regular file of a
    size we read (looked at with ``stat``: a FIFO would block whoever opens it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError("is a folder, not a MIDI file")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS.items() if test(st.st_mode)), "not a file")
        raise ValueError(f"is {kind}, not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ValueError(f"too large: {st.st_size} bytes; at most {MAX_FILE_BYTES} are read")


def read_midi(path):
    """PrettyMIDI of a file; ValueError with the one-line reason when it cannot be read."""
    import pretty_midi

    path = Path(path)
    check_source(path)
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


def render_bytes(source: str, kinds, soundfont=None) -> dict:
    """The outputs of one MIDI file as bytes, by kind, and the synthesiser used
    (what a render worker hands back)."""
    from melody.outputs.audio import wav_bytes
    from melody.outputs.pianoroll import png_bytes
    from melody.outputs.score import musicxml_bytes

    path = Path(source)
    pm = read_midi(path)
    made = {"synth": None}
    for kind in kinds:
        if kind == "wav":
            made["wav"], made["synth"] = wav_bytes(pm, soundfont=soundfont)
        elif kind == "png":
            made["png"] = png_bytes(pm, title=path.name)
        else:
            made["musicxml"] = musicxml_bytes(pm, title=path.stem)
    return made


def render_file(source, kinds, out_dir=None, soundfont=None, worker: Worker | None = None) -> dict:
    """Render one MIDI file into the ``kinds`` asked for; return the paths written.
    With a ``worker``, the file is read and rendered there (``WorkerLost`` when
    it runs past its time or memory), else in this process."""
    source = Path(source)
    check_source(source)
    try:
        made = (worker.call(str(source), list(kinds), soundfont) if worker is not None
                else render_bytes(str(source), kinds, soundfont))
    except OSError as e:  # reading the file (or the SoundFont) failed: this file's fault
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    folder = Path(out_dir) if out_dir else source.parent
    suffixes = tuple(OUTPUTS[k] for k in kinds)
    entry = {"source": str(source), "wav": None, "png": None, "musicxml": None,
             "synth": made["synth"]}
    with OutputSet(folder, source.stem, suffixes) as files:
        for kind in kinds:
            atomic_write_bytes(files.temp(OUTPUTS[kind]), made[kind])
            entry[kind] = str(files.path(OUTPUTS[kind]))
    return entry


def render(files, *, wav: bool = False, png: bool = False, musicxml: bool = False,
           soundfont=None, out=None, timeout: float = RENDER_TIMEOUT,
           memory_limit: int = RENDER_MEMORY) -> dict:
    """Render every MIDI file of ``files`` into the outputs asked for (all three
    when none is), beside each file or into ``out``; return ``{"files": [...],
    "errors": [...]}``. Each file gets ``timeout`` seconds and ``memory_limit``
    bytes in a worker process. A file that cannot be read or rendered is named
    on stderr and the others are still rendered; when none could be, UsageError."""
    import sys

    from melody.config import MAX_TIMEOUT, MIN_TIMEOUT, check_float

    try:
        check_float("timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e))
    asked = {"wav": wav, "png": png, "musicxml": musicxml}
    kinds = [k for k in OUTPUTS if asked[k]] or list(OUTPUTS)
    _check_soundfont(soundfont, kinds)
    files = list(files)
    done, errors, swept = [], [], set()
    with Worker("melody.outputs.render:render_bytes", timeout, memory_limit,
                preload=[library for kind in kinds for library in _LIBRARIES[kind]]) as worker:
        for source in files:
            folder = Path(out) if out else Path(source).parent
            if folder not in swept and folder.is_dir():
                sweep(folder)  # what runs killed here before left
                swept.add(folder)
            try:
                done.append(render_file(source, kinds, out, soundfont, worker))
            except OSError:
                raise  # the output side failed (disk full, read-only): every next file would too
            except Exception as e:  # one bad file never stops the run; its reason is shown
                reason = str(e) if isinstance(e, (ValueError, WorkerLost, RuntimeError)) else (
                    f"{type(e).__name__}: {e}")
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
