"""Audio: 44.1 kHz 16-bit WAV of any ``pretty_midi.PrettyMIDI`` (all tracks, drums included).

FluidSynth with a General MIDI SoundFont when it is installed (imported only
then), else a built-in synthesiser of decaying harmonics. Written atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.config import MAX_WAV_SECONDS
from melody.fileio import atomic_write_bytes

SAMPLE_RATE = 44100
PEAK_DBFS = -1.0
# FluidSynth keeps ringing (release, reverb) after the last note-off: keep at
# most this much of it, cut where it has faded below TAIL_FLOOR_DB.
FLUID_TAIL_SECONDS = 1.0
TAIL_FLOOR_DB = -60.0
FADE_SECONDS = 0.005


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
    choice cannot be honoured, or the music lasts over ``MAX_WAV_SECONDS``.
    """
    data, used = wav_bytes(pm, soundfont=soundfont, synth=synth)
    atomic_write_bytes(path, data)
    return used


def wav_bytes(pm, soundfont=None, synth=None) -> tuple[bytes, str]:
    """The WAV file ``write_wav`` writes, as bytes, and the synthesiser used."""
    seconds = music_end(pm)
    if seconds > MAX_WAV_SECONDS:
        raise ValueError(f"lasts {seconds / 60:.0f} minutes; a WAV is made of at most "
                         f"{MAX_WAV_SECONDS / 60:g}")
    audio, used = synthesize(pm, soundfont=soundfont, synth=synth)
    return pcm16_bytes(audio), used


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


def pcm16_bytes(audio: np.ndarray) -> bytes:
    """A canonical 44-byte-header PCM WAV of ``audio`` (frames x channels, in [-1, 1]).

    >>> import io, wave
    >>> with wave.open(io.BytesIO(pcm16_bytes(np.zeros((10, 2))))) as w:
    ...     w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
    (2, 2, 44100, 10)
    """
    data = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    channels = audio.shape[1]
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16,
                         1, channels, SAMPLE_RATE, SAMPLE_RATE * channels * 2, channels * 2, 16,
                         b"data", len(data))
    return header + data


