"""Something to listen to and look at: WAV, piano-roll PNG and MusicXML from MIDI.

Every writer takes a ``pretty_midi.PrettyMIDI`` of any origin (all tracks,
drums included) and writes its file atomically. matplotlib, music21 and
FluidSynth are imported only when their output is asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.fileio import atomic_open, atomic_write_bytes, remove_written, reserve_name

SAMPLE_RATE = 44100
PEAK_DBFS = -1.0
# FluidSynth keeps ringing (release, reverb) after the last note-off: keep at
# most this much of it, cut where it has faded below TAIL_FLOOR_DB.
FLUID_TAIL_SECONDS = 1.0
TAIL_FLOOR_DB = -60.0
FADE_SECONDS = 0.005
# The piano roll is always this size so that it can be laid out and tested.
PNG_SIZE_INCHES = (16.0, 6.0)
PNG_DPI = 100  # -> 1600 x 600 pixels
OUTPUTS = {"wav": ".wav", "png": ".png", "musicxml": ".musicxml"}
NOTE_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]


@dataclass(frozen=True)
class SynthConfig:
    """The built-in synthesiser: a few decaying harmonics under an ADSR envelope."""

    harmonics: tuple[float, ...] = (1.0, 0.45, 0.25, 0.12, 0.06)
    harmonic_decay: float = 1.5  # per second, times (harmonic number - 1)
    attack: float = 0.01
    decay: float = 0.12
    sustain: float = 0.6
    release: float = 0.15
    drum_seconds: float = 0.15


# -- WAV ----------------------------------------------------------------------
def write_wav(pm, path, soundfont=None, synth=None) -> str:
    """Write 44.1 kHz 16-bit PCM of all tracks; return the synthesiser used.

    ``synth`` is "fluidsynth", "builtin" or None (FluidSynth when available).
    A ``soundfont`` needs FluidSynth. Raises ValueError (one line) when the
    choice cannot be honoured.
    """
    audio, used = synthesize(pm, soundfont=soundfont, synth=synth)
    _write_pcm16(path, audio)
    return used


def synthesize(pm, soundfont=None, synth=None) -> tuple[np.ndarray, str]:
    """Float audio in [-1, 1] (frames x channels) and the synthesiser's name."""
    if synth not in (None, "fluidsynth", "builtin"):
        raise ValueError(f"synth must be 'fluidsynth', 'builtin' or None, got {synth!r}")
    if soundfont is not None and synth == "builtin":
        raise ValueError("a SoundFont needs synth 'fluidsynth', got synth 'builtin'")
    wants_fluid = synth == "fluidsynth" or soundfont is not None
    if wants_fluid and not fluidsynth_available():
        raise ValueError(f"FluidSynth is not available ({fluidsynth_problem()}); "
                         "install libfluidsynth3 and pyfluidsynth, or leave out the SoundFont")
    if synth == "builtin" or not fluidsynth_available():
        audio, used = builtin_audio(pm), "builtin"
    else:
        audio, used = fluidsynth_audio(pm, soundfont or default_soundfont()), "fluidsynth"
    return _finish(audio), used


def music_end(pm) -> float:
    """Seconds until the last note ends (0 with no notes)."""
    ends = [n.end for inst in pm.instruments for n in inst.notes]
    return max(ends, default=0.0)


def default_soundfont() -> str:
    """The small General MIDI SoundFont that pretty_midi ships."""
    import pretty_midi

    return str(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2")


@functools.lru_cache(maxsize=None)
def _fluidsynth_module():
    """pyfluidsynth, or the one-line reason it cannot be used."""
    try:
        # pyfluidsynth prints where it found the library when $CI is set.
        with contextlib.redirect_stdout(io.StringIO()):
            import fluidsynth
        fluidsynth.Synth  # noqa: B018 - a different package may own the name
    except (ImportError, OSError, AttributeError) as e:
        return None, f"{type(e).__name__}: {e}"
    _silence_fluidsynth_log(fluidsynth)
    return fluidsynth, ""


def _silence_fluidsynth_log(fluidsynth) -> None:
    """FluidSynth logs to stderr by itself; we report problems in our own words."""
    set_log = getattr(getattr(fluidsynth, "_fl", None), "fluid_set_log_function", None)
    if set_log is None:
        return
    set_log.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    set_log.restype = ctypes.c_void_p
    for level in (1, 2, 3, 4):  # error, warning, info, debug (panic stays)
        set_log(level, None, None)


def fluidsynth_available() -> bool:
    return _fluidsynth_module()[0] is not None


def fluidsynth_problem() -> str:
    return _fluidsynth_module()[1]


def fluidsynth_audio(pm, soundfont) -> np.ndarray:
    """Stereo audio of every track, each on its own channel of one FluidSynth."""
    fluidsynth = _fluidsynth_module()[0]
    if not Path(soundfont).is_file():
        raise ValueError(f"SoundFont not found: {soundfont}")
    synth = fluidsynth.Synth(samplerate=float(SAMPLE_RATE))
    try:
        sfid = synth.sfload(str(soundfont))
        if sfid < 0:
            raise ValueError(f"not a SoundFont that FluidSynth can read: {soundfont}")
        events = _fluid_events(pm, synth, sfid)
        chunks, cursor = [], 0
        for time, _, action in events:
            target = int(round(time * SAMPLE_RATE))
            if target > cursor:
                chunks.append(synth.get_samples(target - cursor))
                cursor = target
            action()
        chunks.append(synth.get_samples(int(FLUID_TAIL_SECONDS * SAMPLE_RATE)))
    finally:
        synth.delete()
    audio = np.concatenate(chunks).astype(np.float64).reshape(-1, 2) / 32768.0
    return _trim_tail(audio, music_end(pm))


def _fluid_events(pm, synth, sfid) -> list:
    """Sorted (seconds, order, action); note-offs go before note-ons at a tie."""
    events = []
    for i, inst in enumerate(pm.instruments):
        chan = i % 256  # pyfluidsynth's Synth opens 256 channels
        bank = 128 if inst.is_drum else 0
        if synth.program_select(chan, sfid, bank, inst.program) < 0:
            synth.program_select(chan, sfid, bank, 0)
        for n in inst.notes:
            events.append((n.start, 2, functools.partial(synth.noteon, chan, n.pitch, n.velocity)))
            events.append((n.end, 0, functools.partial(synth.noteoff, chan, n.pitch)))
        for b in inst.pitch_bends:
            events.append((b.time, 1, functools.partial(synth.pitch_bend, chan, b.pitch)))
        for c in inst.control_changes:
            events.append((c.time, 1, functools.partial(synth.cc, chan, c.number, c.value)))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def _trim_tail(audio: np.ndarray, end: float) -> np.ndarray:
    """Cut the ringing after ``end`` where it falls below TAIL_FLOOR_DB."""
    level = np.abs(audio).max(axis=1)
    floor = level.max() * 10 ** (TAIL_FLOOR_DB / 20)
    loud = np.nonzero(level > floor)[0]
    last = loud[-1] + 1 if len(loud) else 0
    keep = max(last, int(round(end * SAMPLE_RATE)))
    return audio[:keep]


def builtin_audio(pm, config: SynthConfig = SynthConfig()) -> np.ndarray:
    """Mono audio from NumPy alone: harmonics for pitched notes, noise for drums."""
    length = int(np.ceil((music_end(pm) + config.release) * SAMPLE_RATE)) + 1
    out = np.zeros(length)
    for inst in pm.instruments:
        voice = _drum_hit if inst.is_drum else _tone
        for n in inst.notes:
            start = int(round(n.start * SAMPLE_RATE))
            wave_ = voice(n.pitch, n.end - n.start, config) * (n.velocity / 127.0)
            wave_ = wave_[: length - start]
            out[start : start + len(wave_)] += wave_
    return out[:, None]


def _tone(pitch: int, seconds: float, c: SynthConfig) -> np.ndarray:
    freq = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    t = np.arange(int((seconds + c.release) * SAMPLE_RATE)) / SAMPLE_RATE
    wave_ = np.zeros_like(t)
    for k, amp in enumerate(c.harmonics, start=1):
        if k * freq < SAMPLE_RATE / 2:  # no aliasing
            wave_ += amp * np.exp(-(k - 1) * c.harmonic_decay * t) * np.sin(2 * np.pi * k * freq * t)
    return wave_ * _adsr(t, seconds, c)


def _adsr(t: np.ndarray, seconds: float, c: SynthConfig) -> np.ndarray:
    """Envelope from 0 back to 0, so notes never click in or out."""
    ads_t, ads_v = [0.0, c.attack, c.attack + c.decay], [0.0, 1.0, c.sustain]
    held = float(np.interp(seconds, ads_t, ads_v))  # the level when the key is let go
    release = np.clip(1.0 - (t - seconds) / c.release, 0.0, 1.0)
    return np.where(t < seconds, np.interp(t, ads_t, ads_v), held * release)


def _drum_hit(pitch: int, seconds: float, c: SynthConfig) -> np.ndarray:
    """A short noise burst (a low thump for bass drums, MIDI 35 and 36)."""
    t = np.arange(int(c.drum_seconds * SAMPLE_RATE)) / SAMPLE_RATE
    env = np.minimum(t / 0.002, 1.0) * np.exp(-t / 0.04) * (1 - t / c.drum_seconds)
    if pitch in (35, 36):
        return np.sin(2 * np.pi * (50 + 60 * np.exp(-t / 0.03)) * t) * env
    noise = np.random.default_rng(pitch).standard_normal(len(t)) * 0.5
    return noise * env


def _finish(audio: np.ndarray) -> np.ndarray:
    """No DC, no clicks at the ends, peak at PEAK_DBFS."""
    audio = _remove_dc(audio)
    n = min(int(FADE_SECONDS * SAMPLE_RATE), len(audio) // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n)[:, None]
        audio[:n] *= ramp
        audio[-n:] *= ramp[::-1]
    peak = np.abs(audio).max() if audio.size else 0.0
    if peak > 0:
        audio *= 10 ** (PEAK_DBFS / 20) / peak
    return audio


def _remove_dc(audio: np.ndarray, window: float = 0.1) -> np.ndarray:
    """High-pass (about 10 Hz): subtract a centred moving average."""
    n = int(window * SAMPLE_RATE)
    if len(audio) < 2 * n:
        return audio - audio.mean(axis=0)
    padded = np.pad(audio, ((n // 2 + 1, n - n // 2), (0, 0)))
    sums = np.cumsum(padded, axis=0)
    average = (sums[n:-1] - sums[:-n - 1])[: len(audio)] / n
    return audio - average


def _write_pcm16(path, audio: np.ndarray) -> None:
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with atomic_open(path) as f:
        with wave.open(f, "wb") as w:
            w.setnchannels(pcm.shape[1])
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())


# -- PNG piano roll ----------------------------------------------------------------
def pitch_name(pitch: int) -> str:
    """C4 = 60."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def write_png(pm, path, title=None) -> None:
    """A 1600x600 piano roll: pitch names, bar lines and bar numbers, one colour per track."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=PNG_SIZE_INCHES, dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    tracks = _roll_tracks(pm)
    pitches = [n.pitch for _, inst in tracks for n in inst.notes] or [60]
    low, high = min(pitches) - 2, max(pitches) + 2
    end = max(music_end(pm), 1e-3)
    _draw_keys(ax, low, high)
    _draw_bars(ax, pm, end)
    _draw_notes(ax, tracks)
    ax.set_xlim(0, end)
    ax.set_ylim(low - 0.5, high + 0.5)
    ax.set_title(_roll_title(pm, title), loc="left")
    if len(tracks) > 1:
        ax.legend(loc="upper right", fontsize=9, framealpha=0.9)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.09)
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=PNG_DPI)


def _roll_tracks(pm) -> list:
    """(label, instrument) of the tracks to draw: drums only when nothing else sounds."""
    import pretty_midi

    pitched = [i for i in pm.instruments if i.notes and not i.is_drum]
    shown = pitched or [i for i in pm.instruments if i.notes]
    labels = []
    for i in shown:
        label = i.name.strip() or ("Drums" if i.is_drum else
                                   pretty_midi.program_to_instrument_name(i.program))
        labels.append(label)
    return list(zip(labels, shown))


def _draw_keys(ax, low: int, high: int) -> None:
    """Grey rows for black keys; names on the white keys (fewer when the range is wide)."""
    for p in range(low, high + 1):
        if p % 12 in (1, 3, 6, 8, 10):
            ax.axhspan(p - 0.5, p + 0.5, color="#f0f0f0", zorder=0, lw=0)
    span = high - low
    named = (0, 2, 4, 5, 7, 9, 11) if span <= 48 else (0, 7) if span <= 96 else (0,)
    ticks = [p for p in range(low, high + 1) if p % 12 in named]
    ax.set_yticks(ticks, [pitch_name(p) for p in ticks])
    for p in range(low, high + 1):
        if p % 12 == 0:
            ax.axhline(p - 0.5, color="#c8c8c8", lw=0.8, zorder=0)
    ax.set_ylabel("pitch")


def _draw_bars(ax, pm, end: float) -> None:
    """Bar lines at the downbeats, lighter beat lines, bars numbered on the x axis."""
    downbeats = [t for t in pm.get_downbeats() if t <= end + 1e-6]
    for t in pm.get_beats():
        ax.axvline(t, color="#e4e4e4", lw=0.6, zorder=0.5)
    for t in downbeats:
        ax.axvline(t, color="#909090", lw=1.0, zorder=0.6)
    every = max(1, int(np.ceil(len(downbeats) / 40)))
    ticks = downbeats[::every]
    ax.set_xticks(ticks, [str(1 + i * every) for i in range(len(ticks))])
    ax.set_xlabel("bar")


def _draw_notes(ax, tracks) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    colors = ["#1f6fb4", "#e0701b", "#2a9d3a", "#c62d2d", "#8457b5",
              "#8c564b", "#d459b0", "#6b6b6b", "#a8a81c", "#17a7b8"]
    for k, (label, inst) in enumerate(tracks):
        color = colors[k % len(colors)]
        boxes = [Rectangle((n.start, n.pitch - 0.4), max(n.end - n.start, 1e-3), 0.8)
                 for n in inst.notes]
        edge = tuple(0.6 * c for c in to_rgba(color)[:3])
        ax.add_collection(PatchCollection(boxes, facecolor=color, edgecolor=edge,
                                          linewidth=0.6, zorder=2, label=label))


def _roll_title(pm, title) -> str:
    import pretty_midi

    facts = []
    _, tempi = pm.get_tempo_changes()
    if len(tempi):
        facts.append(f"{tempi[0]:.0f} BPM")
    if pm.time_signature_changes:
        ts = pm.time_signature_changes[0]
        facts.append(f"{ts.numerator}/{ts.denominator}")
    if pm.key_signature_changes:
        facts.append(pretty_midi.key_number_to_key_name(pm.key_signature_changes[0].key_number))
    head = title or "piano roll"
    return f"{head}    ({', '.join(facts)})" if facts else head


# -- MusicXML ------------------------------------------------------------------------
def write_musicxml(pm, path, title=None) -> None:
    """A score with key, meter and tempo; times quantised to sixteenths and triplets."""
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    score = to_music21(pm, title)
    atomic_write_bytes(path, GeneralObjectExporter(score).parse())


def to_music21(pm, title=None):
    """A music21 Score, one part per track, through music21's own MIDI reader."""
    from music21 import metadata
    from music21.midi import MidiFile
    from music21.midi.translate import midiFileToStream

    buf = io.BytesIO()
    pm.write(buf)
    mf = MidiFile()
    mf.readstr(buf.getvalue())
    # Divisors 4 and 3 are the 12-steps-per-quarter grid: sixteenths and triplets.
    score = midiFileToStream(mf, quantizePost=True, quarterLengthDivisors=(4, 3))
    score.metadata = metadata.Metadata(title=title or "")
    return score


# -- the render command ----------------------------------------------------------------
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


def run_render(args):
    """CLI handler: render every file, report the broken ones, go on with the rest."""
    import sys

    from melody.cli import UsageError

    kinds = [k for k in OUTPUTS if getattr(args, k)] or list(OUTPUTS)
    _check_soundfont(args.soundfont, kinds)
    files, errors = [], []
    for source in args.files:
        try:
            files.append(render_file(source, kinds, args.out, args.soundfont))
        except OSError:
            raise  # the output side failed (disk full, read-only): every next file would too
        except Exception as e:  # one bad file never stops the run; its reason is shown
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            errors.append({"source": str(source), "error": reason})
            if len(args.files) > 1:
                print(f"melody render: error: {source}: {reason}", file=sys.stderr)
    if not files:
        if len(errors) == 1:
            raise UsageError(f"{errors[0]['source']}: {errors[0]['error']}")
        raise UsageError(f"no file could be rendered ({len(errors)} failed, see above)")
    result = {"files": files, "errors": errors}
    return result, _summary(files, errors)


def _check_soundfont(soundfont, kinds) -> None:
    from melody.cli import UsageError

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


def _summary(files, errors) -> str:
    lines = []
    for f in files:
        written = [os.path.basename(f[k]) for k in OUTPUTS if f[k]]
        synth = f" (WAV by {f['synth']})" if f["synth"] else ""
        lines.append(f"{f['source']} -> {', '.join(written)}{synth}")
    lines.append(f"rendered {len(files)} file(s), {len(errors)} failed")
    return "\n".join(lines)
