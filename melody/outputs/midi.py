"""Melodies as Standard MIDI Files: tempo, time and key signature, program, velocities.

Takes any object with a ``Melody``'s fields and imports nothing of melody's
at run time, so ``Melody.to_pretty_midi`` can call it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from melody.notes import Melody


def to_pretty_midi(melody: "Melody", velocity: int = 80):
    """A PrettyMIDI with one instrument: tempo, time and key signature, program.

    A pickup starts after ``melody.lead_in_steps`` of silence, so the first full bar
    starts on a bar line (as notation software expects). Downbeats are played
    a little louder than other notes.
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=float(melody.tempo))  # 40 ticks a grid step
    step = 60.0 / melody.tempo / melody.steps_per_quarter
    if melody.time_signature:
        num, den = melody.time_signature
        pm.time_signature_changes.append(pretty_midi.TimeSignature(num, den, 0.0))
    if melody.key is not None:
        number = melody.key.tonic + (12 if melody.key.mode == "minor" else 0)
        pm.key_signature_changes.append(pretty_midi.KeySignature(number, 0.0))
    inst = pretty_midi.Instrument(program=int(melody.program), name="melody")
    bar = melody.bar_steps
    lead = melody.lead_in_steps
    for i, (p, on, d) in enumerate(zip(melody.pitches, melody.onsets, melody.durations)):
        if melody.velocities is not None:
            v = int(melody.velocities[i])
        else:
            on_beat = bar and (int(on) - melody.bar_phase) % bar == 0
            v = min(127, velocity + 12) if on_beat else velocity
        on = int(on) + lead
        inst.notes.append(pretty_midi.Note(v, int(p), on * step, (on + int(d)) * step))
    pm.instruments.append(inst)
    return pm


def midi_bytes(melody: "Melody") -> bytes:
    """The Standard MIDI File of a melody, deterministic byte for byte."""
    buf = io.BytesIO()
    to_pretty_midi(melody).write(buf)
    return buf.getvalue()


def write_midi(melody: "Melody", path) -> None:
    from melody.fileio import atomic_write_bytes

    atomic_write_bytes(path, midi_bytes(melody))
