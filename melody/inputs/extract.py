"""Which line of a MIDI file is the melody, reduced to one note at a time on the grid.

Notes are grouped by (track, channel), never channel 10 (drums); each group is
reduced to one line by the skyline below. Among lines with at least
``MIN_NOTES`` notes the melody is the first by:

1. its track name says melody, vocal, vox, lead, solo, soprano or singer;
2. it is not a bass (GM program 33-40, or a mean pitch below C3 = 48);
3. it is mostly monophonic (the skyline keeps at least 3/4 of its notes);
4. the highest mean pitch.

So the soprano wins in a chorale with one voice per track, and the lead in a
pop song with bass, drums and chords.

Skyline: at each onset the highest note starting there is kept; a note that
starts under a higher kept note still sounding for at least half of the new
note's length is dropped; every kept note is cut where the next kept note
starts (same pitch: struck again).

Grid: onsets and ends are rounded to the nearest of ``STEPS_PER_QUARTER``
steps per quarter note from ticks and resolution; notes that round to no
length are dropped. The first note is moved to step 0 and ``bar_phase`` keeps
where the first downbeat falls, so pickups survive.

Key: the file's key when its scale holds at least ``KEY_FIT`` of the melody's
note time, else ``notes.estimate_key``. Meter: the time signature in effect at
the first note; (4, 4) for MIDI files without one, as the MIDI spec says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from melody.errors import SkipFile
from melody.inputs.smf import Smf, Track, parse_smf
from melody.notes import STEPS_PER_QUARTER, Key, Melody, estimate_key

MIN_NOTES = 8
MAX_STEPS = 100_000 * STEPS_PER_QUARTER  # a melody longer than 100,000 beats is broken
DRUM_CHANNEL = 9
MELODY_NAME = re.compile(r"melod|vocal|\bvox\b|\blead\b|\bsolo\b|soprano|singer|gesang|canto", re.I)
BASS_PROGRAMS = range(32, 40)
BASS_MEAN_PITCH = 48
MONOPHONIC_SHARE = 0.75
KEY_FIT = 0.9  # share of note time a stated key's scale must hold to be believed


def melody_from_midi_bytes(data: bytes) -> Melody:
    """The melody of a Standard MIDI File given as bytes, or raise SkipFile."""
    smf = parse_smf(data)
    line = _choose_line(smf)
    return _melody_from_line(smf, line)


@dataclass
class Line:
    """One (track, channel) reduced to a monophonic line on the grid."""

    track: Track
    channel: int
    notes: list  # (onset_step, end_step, pitch), skyline, absolute steps
    first_tick: int
    n_raw: int
    program: int = 0

    @property
    def mean_pitch(self) -> float:
        return float(np.mean([p for _, _, p in self.notes]))

    def rank(self) -> tuple:
        """Sort key: smaller is more likely the melody (see the module docstring)."""
        named = bool(MELODY_NAME.search(self.track.name))
        bass = self.program in BASS_PROGRAMS or self.mean_pitch < BASS_MEAN_PITCH
        mono = len(self.notes) >= MONOPHONIC_SHARE * self.n_raw
        return (not named, bass, not mono, -self.mean_pitch, self.track.index, self.channel)


def to_steps(ticks: int, ticks_per_quarter: Fraction) -> int:
    """Ticks rounded (half up) to the nearest grid step."""
    n, d = ticks_per_quarter.numerator, ticks_per_quarter.denominator
    return (2 * STEPS_PER_QUARTER * ticks * d + n) // (2 * n)


def skyline(notes) -> list[tuple[int, int, int]]:
    """One line from (onset, end, pitch) notes: the top note, cut where the next starts."""
    out: list = []
    for on, end, pitch in sorted(notes, key=lambda n: (n[0], -n[2], -n[1])):
        if out:
            p_on, p_end, p_pitch = out[-1]
            if on == p_on:
                continue  # a lower (or equal) note of the same chord
            if on < p_end:
                if pitch < p_pitch and 2 * (p_end - on) >= end - on:
                    continue  # under a higher held note
                out[-1] = (p_on, on, p_pitch)
        out.append((on, end, pitch))
    return out


def _lines(smf: Smf) -> list[Line]:
    lines = []
    # Channels are shared by all tracks: a program change may sit in another track.
    programs = {ch: p for track in reversed(smf.tracks) for ch, p in track.programs.items()}
    for track in smf.tracks:
        by_channel: dict = {}
        for start, end, pitch, channel in track.notes:
            by_channel.setdefault(channel, []).append((start, end, pitch))
        for channel, raw in sorted(by_channel.items()):
            if channel == DRUM_CHANNEL:
                continue
            grid = []
            for start, end, pitch in raw:
                on, off = to_steps(start, smf.ticks_per_quarter), to_steps(end, smf.ticks_per_quarter)
                if off > on:
                    grid.append((on, off, pitch))
            if grid:
                first = min(start for start, _, _ in raw)
                program = track.programs.get(channel, programs.get(channel, 0))
                lines.append(Line(track, channel, skyline(grid), first, len(grid), program))
    return lines


def _choose_line(smf: Smf) -> Line:
    lines = _lines(smf)
    candidates = [line for line in lines if len(line.notes) >= MIN_NOTES]
    if candidates:
        return min(candidates, key=Line.rank)
    if lines:
        longest = max(len(line.notes) for line in lines)
        raise SkipFile("too short", f"longest line has {longest} notes; at least {MIN_NOTES} needed")
    if any(track.notes for track in smf.tracks):
        raise SkipFile("drums only", "all notes are on channel 10")
    if smf.truncated:
        raise SkipFile("truncated", "the file ends inside a track before any note")
    raise SkipFile("no notes", f"{len(smf.tracks)} tracks and no notes")


def _first_event(tracks, attr: str):
    events = [e for track in tracks for e in getattr(track, attr)]
    return min(events, key=lambda e: e[0]) if events else None


def _in_effect(tracks, attr: str, tick: int):
    """The last event at or before ``tick``, else the first one, else None."""
    events = sorted((e for track in tracks for e in getattr(track, attr)), key=lambda e: e[0])
    before = [e for e in events if e[0] <= tick]
    return before[-1] if before else (events[0] if events else None)


def _melody_from_line(smf: Smf, line: Line) -> Melody:
    # Type 2 tracks keep their own time, so their meta events come from the track.
    own = [line.track]
    meta_tracks = own if smf.format == 2 and _has_meta(line.track) else smf.tracks
    tempo = _first_event(meta_tracks, "tempos")
    ts = _in_effect(meta_tracks, "time_signatures", line.first_tick) or (0, (4, 4))
    key = _first_event(meta_tracks, "keys")
    pitches = [p for _, _, p in line.notes]
    durations = [end - on for on, end, _ in line.notes]
    first = line.notes[0][0]
    ts_step = to_steps(ts[0], smf.ticks_per_quarter)
    melody = Melody(
        pitches=pitches,
        onsets=[on - first for on, _, _ in line.notes],
        durations=durations,
        tempo=round(60_000_000 / tempo[1], 3) if tempo else 120.0,
        time_signature=ts[1],
        key=stated_or_estimated_key(key[1] if key else None, pitches, durations),
        program=line.program,
        track_name=line.track.name,
        track_index=line.track.index,
    )
    melody.bar_phase = (ts_step - first) % melody.bar_steps
    check_span(melody)
    return melody


def stated_or_estimated_key(stated: Key | None, pitches, durations) -> Key | None:
    """The file's key if its scale holds most of the melody, else an estimate.

    Sequencers write C major by default, and the Essen collection writes only
    the tonic (``K:G`` for a G minor tune): such keys are not believed.
    """
    if stated is not None:
        scale = stated.scale_pitch_classes()
        inside = sum(d for p, d in zip(pitches, durations) if p % 12 in scale)
        if inside >= KEY_FIT * sum(durations):
            return stated
    return estimate_key(pitches, durations)


def _has_meta(track: Track) -> bool:
    return bool(track.tempos or track.time_signatures or track.keys)


def check_span(melody: Melody) -> None:
    if melody.end > MAX_STEPS:
        raise SkipFile(
            "corrupt timing",
            f"melody spans {melody.end // STEPS_PER_QUARTER} quarter notes; "
            f"more than {MAX_STEPS // STEPS_PER_QUARTER} means broken delta times",
        )
