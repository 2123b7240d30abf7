"""Reading music files into melodies, and writing melodies as MIDI.

``parts(path)`` lists the units of a file to read one by one (``[None]``, or one
id per tune of a many-tune ABC file); ``read_melody(path, part)`` returns one
``Melody`` or raises ``SkipFile`` whose ``reason`` is one of ``REASONS``.

MIDI (.mid .midi .kar) is read here chunk by chunk, in ticks, so timing never
depends on tempo and a broken track costs only what follows the break (mido's
reader is all-or-nothing). Lenient on purpose: a RIFF RMID wrapper is
unwrapped, data bytes above 127 are clipped (as ``mido``'s ``clip=True``), text
is never decoded except track names, invalid tempo, key and time signature
events are dropped, a track cut short keeps the events before the cut.
MusicXML, ABC and kern go through music21 (the top part is the melody).

Which MIDI track is the melody: notes are grouped by (track, channel), never
channel 10 (drums); each group is reduced to one line by the skyline below.
Among lines with at least ``MIN_NOTES`` notes the melody is the first by:

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

import bisect
import io
from collections import deque
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from melody.notes import STEPS_PER_QUARTER, Key, Melody, estimate_key

REASONS = (
    "not music",
    "empty",
    "unreadable",
    "truncated",
    "no notes",
    "drums only",
    "too short",
    "corrupt timing",
    "parse error",
    "unsupported format",
    "too large",
)

MIDI_EXTENSIONS = frozenset({".mid", ".midi", ".kar"})
SCORE_EXTENSIONS = frozenset({".xml", ".musicxml", ".mxl", ".abc", ".krn"})
MUSIC_EXTENSIONS = MIDI_EXTENSIONS | SCORE_EXTENSIONS

MIN_NOTES = 8
MAX_NOTES = 200_000  # note-ons in a file; more is a "black MIDI" or a bomb
MAX_TRACKS = 1024
MAX_EVENTS = 1_000_000  # all events of a file; large orchestral files have a few 100,000
MAX_META = 10_000  # tempo, key or time signature events kept per track
MAX_FILE_BYTES = 32 * 2**20
MAX_UNZIPPED_BYTES = 64 * 2**20  # all members of an .mxl together
MAX_STEPS = 100_000 * STEPS_PER_QUARTER  # a melody longer than 100,000 beats is broken
DRUM_CHANNEL = 9
MELODY_NAME = re.compile(r"melod|vocal|\bvox\b|\blead\b|\bsolo\b|soprano|singer|gesang|canto", re.I)
BASS_PROGRAMS = range(32, 40)
BASS_MEAN_PITCH = 48
MONOPHONIC_SHARE = 0.75
KEY_FIT = 0.9  # share of note time a stated key's scale must hold to be believed


class SkipFile(Exception):
    """A file (or ABC tune) that yields no melody, with a reason from REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- public entry points --------------------------------------------------------


def parts(path) -> list[str | None]:
    """Units to read separately: one id per tune ("X:12") of a many-tune ABC file, else [None]."""
    path = Path(path)
    if path.suffix.lower() != ".abc":
        return [None]
    try:
        if _file_size(path) > MAX_FILE_BYTES:
            return [None]  # read_melody will say it is too large
        text = _read_text(path)
    except SkipFile:
        return [None]
    ids = [tune_id for tune_id, _ in _abc_tunes(text)[1]]
    return ids if len(ids) > 1 else [None]


def read_melody(path, part: str | None = None) -> Melody:
    """One melody from the file (or the ABC tune ``part``), or raise SkipFile."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MUSIC_EXTENSIONS:
        raise SkipFile(
            "unsupported format",
            f"extension must be one of {' '.join(sorted(MUSIC_EXTENSIONS))}, got {ext or 'none'!r}",
        )
    size = _file_size(path)
    if size == 0:
        raise SkipFile("empty", "the file has 0 bytes")
    if size > MAX_FILE_BYTES:
        raise SkipFile("too large", f"{size} bytes; at most {MAX_FILE_BYTES} are read")
    if ext in MIDI_EXTENSIONS:
        melody = melody_from_midi_bytes(_read_bytes(path))
    else:
        melody = _read_score(path, ext, part)
    melody.source = str(path)
    return melody


def melody_from_midi_bytes(data: bytes) -> Melody:
    """The melody of a Standard MIDI File given as bytes, or raise SkipFile."""
    smf = parse_smf(data)
    line = _choose_line(smf)
    return _melody_from_line(smf, line)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise SkipFile("unreadable", f"{type(e).__name__}: {e}") from e


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SkipFile("unreadable", f"{type(e).__name__}: {e}") from e


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # older ABC collections are Latin-1


# -- Standard MIDI File parsing ----------------------------------------------------


@dataclass
class Track:
    """What one MTrk chunk holds that a melody needs; times in ticks."""

    index: int
    name: str = ""
    notes: list = field(default_factory=list)  # (start, end, pitch, channel)
    programs: dict = field(default_factory=dict)  # channel -> first program
    tempos: list = field(default_factory=list)  # (tick, microseconds per quarter)
    time_signatures: list = field(default_factory=list)  # (tick, (num, den))
    keys: list = field(default_factory=list)  # (tick, Key)
    truncated: bool = False


@dataclass
class Smf:
    format: int
    ticks_per_quarter: Fraction
    tracks: list
    truncated: bool = False


class _Cut(Exception):
    """The track's bytes end inside an event."""


def parse_smf(data: bytes) -> Smf:
    """Tracks, notes and meta events of a Standard MIDI File, leniently."""
    if not data:
        raise SkipFile("empty", "the file has 0 bytes")
    data = _unwrap_riff(data)
    start = data.find(b"MThd", 0, 4096)  # some files carry a MacBinary or junk prefix
    if start < 0:
        raise SkipFile("not music", f"no MIDI header (MThd); starts with {data[:8]!r}")
    data = data[start:]
    if len(data) < 14:
        raise SkipFile("truncated", f"MIDI header cut short at {len(data)} bytes")
    header_len = struct.unpack(">L", data[4:8])[0]
    fmt, n_tracks, division = struct.unpack(">HHH", data[8:14])
    if fmt > 2:
        raise SkipFile("unsupported format", f"MIDI format must be 0, 1 or 2, got {fmt}")
    tracks, truncated = _read_chunks(data, 8 + max(header_len, 6))
    truncated |= len(tracks) < n_tracks
    tpq = _ticks_per_quarter(division, tracks)
    return Smf(fmt, tpq, tracks, truncated)


def _unwrap_riff(data: bytes) -> bytes:
    """The SMF inside a RIFF RMID file (its 'data' chunk), or the bytes unchanged."""
    if data[:4] != b"RIFF" or data[8:12] != b"RMID":
        return data
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<L", data[pos + 4:pos + 8])[0]
        if cid == b"data":
            return data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)  # RIFF chunks are padded to even length
    raise SkipFile("not music", "RIFF RMID file without a 'data' chunk")


def _read_chunks(data: bytes, pos: int) -> tuple[list, bool]:
    tracks, truncated = [], False
    budget = [MAX_NOTES, MAX_EVENTS]  # what the whole file may still hold
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack(">L", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        pos += 8 + size
        if cid != b"MTrk":
            if not cid.isalnum():
                break  # trailing garbage, not a chunk
            continue  # unknown chunks are to be skipped, says the SMF spec
        if len(tracks) >= MAX_TRACKS:
            raise SkipFile("too large", f"more than {MAX_TRACKS} tracks")
        track = _parse_track(body, len(tracks), budget)
        track.truncated |= len(body) < size
        truncated |= track.truncated
        tracks.append(track)
    return tracks, truncated


def _ticks_per_quarter(division: int, tracks: list) -> Fraction:
    if division == 0:
        raise SkipFile("corrupt timing", "ticks per quarter note must be positive, got 0")
    if not division & 0x8000:
        return Fraction(division)
    # SMPTE: ticks per second. Take the first tempo to say how long a quarter is.
    fps, ticks_per_frame = 256 - (division >> 8), division & 0xFF
    if fps not in (24, 25, 29, 30) or ticks_per_frame == 0:
        raise SkipFile(
            "corrupt timing",
            f"SMPTE division must be 24, 25, 29 or 30 fps with ticks per frame > 0, "
            f"got {fps} fps and {ticks_per_frame}",
        )
    fps_exact = Fraction(30000, 1001) if fps == 29 else Fraction(fps)
    tempos = sorted(t for track in tracks for t in track.tempos)
    mpq = tempos[0][1] if tempos else 500_000
    return fps_exact * ticks_per_frame * Fraction(mpq, 1_000_000)


def _varlen(body: bytes, i: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):  # the SMF spec allows at most 4 bytes
        if i >= len(body):
            raise _Cut
        byte = body[i]
        i += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, i
    return value, i


def _take(body: bytes, i: int, n: int) -> tuple[bytes, int]:
    if i + n > len(body):
        raise _Cut
    return body[i:i + n], i + n


def _parse_track(body: bytes, index: int, budget: list) -> Track:
    """Notes (paired on/off) and meta events of one MTrk chunk."""
    track = Track(index)
    sounding: dict = {}  # (channel, pitch) -> onset ticks of notes not yet ended
    tick, status, i = 0, None, 0
    try:
        while i < len(body):
            budget[1] -= 1
            if budget[1] < 0:
                raise SkipFile("too large", f"more than {MAX_EVENTS} events")
            delta, i = _varlen(body, i)
            tick += delta
            if i >= len(body):
                raise _Cut
            byte, i = body[i], i + 1
            if byte == 0xFF:
                kind, i = _take(body, i, 1)
                length, i = _varlen(body, i)
                payload, i = _take(body, i, length)
                if kind[0] == 0x2F:
                    break
                _meta(track, tick, kind[0], payload)
                continue
            if byte in (0xF0, 0xF7):
                length, i = _varlen(body, i)
                _, i = _take(body, i, length)
                status = None
                continue
            if byte >= 0xF0:
                break  # system common/real-time bytes do not belong in files
            if byte >= 0x80:
                status, first = byte, None
            elif status is None:
                break  # data without a status: the rest of the track is noise
            else:
                first = byte  # running status
            need = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
            n_more = need - (first is not None)
            more, i = _take(body, i, n_more)
            data = ([first] if first is not None else []) + list(more)
            data = [min(b, 127) for b in data]  # as mido's clip=True
            _channel_event(track, sounding, tick, status, data, budget)
    except _Cut:
        track.truncated = True
    _end_hanging_notes(track, sounding)
    return track


def _channel_event(track, sounding, tick, status, data, budget) -> None:
    kind, channel = status & 0xF0, status & 0x0F
    if kind == 0xC0:
        track.programs.setdefault(channel, data[0])
    elif kind == 0x90 and data[1] > 0:
        budget[0] -= 1
        if budget[0] < 0:
            raise SkipFile("too large", f"more than {MAX_NOTES} notes")
        sounding.setdefault((channel, data[0]), deque()).append(tick)
    elif kind in (0x80, 0x90):
        onsets = sounding.get((channel, data[0]))
        if not onsets:
            return  # a note-off with no note: ignore
        # The oldest note ends first, so a note-on just before the note-off of
        # the same pitch at one tick (a repeated note) keeps its length.
        start = onsets.popleft()
        if start < tick:
            track.notes.append((start, tick, data[0], channel))


def _end_hanging_notes(track: Track, sounding: dict) -> None:
    """End notes never switched off at the next onset on their channel, or drop them."""
    onsets_by_channel: dict = {}
    for start, _, _, channel in track.notes:
        onsets_by_channel.setdefault(channel, []).append(start)
    for (channel, _), starts in sounding.items():
        onsets_by_channel.setdefault(channel, []).extend(starts)
    for ticks in onsets_by_channel.values():
        ticks.sort()
    for (channel, pitch), starts in sounding.items():
        ticks = onsets_by_channel[channel]
        for start in starts:
            k = bisect.bisect_right(ticks, start)
            if k < len(ticks):
                track.notes.append((start, ticks[k], pitch, channel))


def _meta(track: Track, tick: int, kind: int, payload: bytes) -> None:
    """Keep the meta events a melody needs; invalid ones are dropped."""
    if len(track.tempos) + len(track.time_signatures) + len(track.keys) >= MAX_META:
        return
    if kind == 0x03 and not track.name:
        track.name = _decode_text(payload)
    elif kind == 0x51 and len(payload) == 3:
        mpq = int.from_bytes(payload, "big")
        if mpq > 0:
            track.tempos.append((tick, mpq))
    elif kind == 0x58 and len(payload) >= 2:
        num, den_power = payload[0], payload[1]
        if 1 <= num <= 64 and den_power <= 6 and num * 4 * STEPS_PER_QUARTER >= 2**den_power:
            track.time_signatures.append((tick, (num, 2**den_power)))
    elif kind == 0x59 and len(payload) == 2:
        sharps = payload[0] - 256 if payload[0] > 127 else payload[0]
        if -7 <= sharps <= 7 and payload[1] in (0, 1):
            major_tonic = (sharps * 7) % 12
            if payload[1]:
                track.keys.append((tick, Key((major_tonic + 9) % 12, "minor")))
            else:
                track.keys.append((tick, Key(major_tonic, "major")))


def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return payload.decode("latin-1").strip()


# -- choosing and reducing the melody line -------------------------------------------


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
    _check_span(melody)
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


def _check_span(melody: Melody) -> None:
    if melody.end > MAX_STEPS:
        raise SkipFile(
            "corrupt timing",
            f"melody spans {melody.end // STEPS_PER_QUARTER} quarter notes; "
            f"more than {MAX_STEPS // STEPS_PER_QUARTER} means broken delta times",
        )


# -- MusicXML, ABC and kern through music21 ----------------------------------------------


def _abc_tunes(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The file header and (id, text) of each tune, split at ``X:`` lines."""
    header: list = []
    tunes: list = []
    seen: dict = {}
    for line in text.splitlines(keepends=True):
        if line.startswith("X:"):
            number = line[2:].strip()
            seen[number] = seen.get(number, 0) + 1
            tune_id = f"X:{number}" + (f"#{seen[number]}" if seen[number] > 1 else "")
            tunes.append([tune_id, [line]])
        elif tunes:
            tunes[-1][1].append(line)
        else:
            header.append(line)
    return "".join(header), [(tid, "".join(lines)) for tid, lines in tunes]


def _read_score(path: Path, ext: str, part: str | None) -> Melody:
    if ext == ".mxl":
        _check_zip(path)
    elif ext in (".xml", ".musicxml"):
        _check_xml(_read_bytes(path), str(path.name))
    if ext == ".abc":
        text = _read_text(path)
        if not text.strip():
            raise SkipFile("empty", "the file holds only white space")
        return _parse_with_music21(_abc_tune_text(text, part), "abc", data=True)
    fmt = {".krn": "humdrum", ".mxl": "musicxml"}.get(ext, "musicxml")
    return _parse_with_music21(path, fmt, data=False)


_ABC_FIELD = re.compile(r"^([XKLM]):", re.M)


def _abc_tune_text(text: str, part: str | None) -> str:
    """The header plus tune ``part`` (the first tune when None), with a default L: if missing."""
    fields = set(_ABC_FIELD.findall(text))
    if not fields & {"X", "K"} or "\0" in text:
        raise SkipFile("not music", "no X: or K: line; this is not ABC notation")
    header, tunes = _abc_tunes(text)
    if part is not None:
        found = [t for tid, t in tunes if tid == part]
        if not found:
            raise SkipFile("parse error", f"no tune {part} in the file")
        text = header + found[0]
    elif tunes:
        text = header + tunes[0][1]
    if not fields & {"L", "M"}:
        text = "L:1/8\n" + text  # the ABC standard's default; music21 insists on one
    return text


def _check_zip(path: Path) -> None:
    """Refuse .mxl archives that are not zips or that unpack to too much."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            total = sum(info.file_size for info in infos)
            if len(infos) > 1000 or total > MAX_UNZIPPED_BYTES:
                raise SkipFile(
                    "too large",
                    f"archive unpacks to {total} bytes in {len(infos)} files; "
                    f"at most {MAX_UNZIPPED_BYTES} bytes are read",
                )
            for info in infos:  # the score's name is in container.xml: check them all
                _refuse_entities(archive.read(info), info.filename)
    except zipfile.BadZipFile as e:
        raise SkipFile("not music", f"not a zip archive (.mxl): {e}") from e
    except (OSError, RuntimeError, NotImplementedError) as e:  # encrypted, odd compression
        raise SkipFile("parse error", f"{type(e).__name__}: {e}") from e


_ENTITY = re.compile(r"<!ENTITY|<!DOCTYPE[^>\[]*\[", re.I)


def _check_xml(data: bytes, name: str) -> None:
    """Refuse blank XML and XML that declares entities."""
    if not data.strip():
        raise SkipFile("empty", f"{name} holds only white space")
    _refuse_entities(data, name)


def _refuse_entities(data: bytes, name: str) -> None:
    """Refuse entity declarations (billion laughs, external entities) before any parser sees them.

    A plain DOCTYPE naming the MusicXML DTD is fine: it is never fetched.
    """
    wide = data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\0" in data[:4]
    text = data.decode("utf-16" if wide else "latin-1", errors="replace")
    if _ENTITY.search(text):
        raise SkipFile("unsupported format", f"{name}: XML entity declarations are refused")


def _parse_with_music21(source, fmt: str, data: bool) -> Melody:
    from music21 import converter

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # music21 warns about every oddity it mends
            if data:
                score = converter.parseData(source, format=fmt)
            else:
                score = converter.parseFile(source, format=fmt, forceSource=True, storePickle=False)
            return _melody_from_score(score)
    except SkipFile:
        raise
    except MemoryError:
        raise
    except Exception as e:  # music21 raises dozens of types; the detail keeps which
        raise SkipFile("parse error", f"{type(e).__name__}: {e}"[:300]) from e


def _melody_from_score(score) -> Melody:
    from music21 import stream

    if isinstance(score, stream.Opus):
        scores = list(score.scores)
        if not scores:
            raise SkipFile("no notes", "the file holds no tunes")
        score = scores[0]
    found = list(score.parts) if hasattr(score, "parts") else []
    part = found[0] if found else score
    notes = _score_notes(part)
    if not notes:
        raise SkipFile("no notes", "the top part has no pitched notes")
    line = skyline(notes)
    if len(line) < MIN_NOTES:
        raise SkipFile("too short", f"the top part has {len(line)} notes; at least {MIN_NOTES} needed")
    return _melody_from_score_line(score, part, line)


def _score_notes(part) -> list[tuple[int, int, int]]:
    from music21 import chord, harmony, note

    part.stripTies(inPlace=True)  # the parsed score is ours; copying it is slow
    flat = part.flatten()
    elements = flat.notes
    if len(elements) > MAX_NOTES:
        raise SkipFile("too large", f"more than {MAX_NOTES} notes")
    notes = []
    for el in elements:
        if isinstance(el, harmony.Harmony):
            continue  # chord symbols are not played
        if isinstance(el, note.Note):
            pitch = el.pitch.midi
        elif isinstance(el, chord.Chord) and el.pitches:
            pitch = max(p.midi for p in el.pitches)
        else:
            continue
        on = _ql_steps(el.offset)
        end = _ql_steps(el.offset + el.duration.quarterLength)
        if end > on and 0 <= pitch <= 127:
            notes.append((on, end, int(pitch)))
    return notes


def _ql_steps(quarter_length) -> int:
    x = Fraction(quarter_length).limit_denominator(10_000) * STEPS_PER_QUARTER
    return int((2 * x.numerator + x.denominator) // (2 * x.denominator))


def _melody_from_score_line(score, part, line) -> Melody:
    from music21 import key as m21key
    from music21 import meter, tempo

    flat = part.flatten()
    ts = flat.getElementsByClass(meter.TimeSignature).first()
    ks = flat.getElementsByClass(m21key.KeySignature).first()
    mm = flat.getElementsByClass(tempo.MetronomeMark).first()
    if mm is None and score is not part:
        mm = score.flatten().getElementsByClass(tempo.MetronomeMark).first()
    pitches = [p for _, _, p in line]
    durations = [end - on for on, end, _ in line]
    first = line[0][0]
    instrument = part.getInstrument(returnDefault=False) if hasattr(part, "getInstrument") else None
    melody = Melody(
        pitches=pitches,
        onsets=[on - first for on, _, _ in line],
        durations=durations,
        tempo=_bpm(mm),
        time_signature=_score_time_signature(ts),
        key=stated_or_estimated_key(_score_key(ks), pitches, durations),
        program=int(getattr(instrument, "midiProgram", None) or 0),
        track_name=str(getattr(part, "partName", "") or ""),
        track_index=0,
    )
    if melody.bar_steps:
        melody.bar_phase = (_first_downbeat(part, melody.bar_steps) - first) % melody.bar_steps
    _check_span(melody)
    return melody


def _bpm(mark) -> float:
    try:
        bpm = float(mark.getQuarterBPM()) if mark is not None else 120.0
    except (TypeError, ValueError, AttributeError):
        bpm = 120.0
    return bpm if 1.0 <= bpm <= 1000.0 else 120.0


def _score_time_signature(ts) -> tuple[int, int] | None:
    if ts is None:
        return None
    num, den = int(ts.numerator), int(ts.denominator)
    if 1 <= num <= 64 and den in (1, 2, 4, 8, 16, 32, 64) and num * 48 >= den:
        return (num, den)
    return None


def _score_key(ks) -> Key | None:
    from music21 import key as m21key

    if ks is None:
        return None
    if isinstance(ks, m21key.Key) and ks.mode in ("major", "minor"):
        return Key(ks.tonic.pitchClass, ks.mode)
    return Key((ks.sharps * 7) % 12, "major")


def _first_downbeat(part, bar_steps: int) -> int:
    """Step of the first full bar's start: after a short first measure (a pickup)."""
    from music21 import stream

    measures = list(part.getElementsByClass(stream.Measure))
    if not measures:
        return 0
    m0 = measures[0]
    start = _ql_steps(m0.offset)
    length = _ql_steps(m0.duration.quarterLength)
    if m0.paddingLeft or 0 < length < bar_steps:
        return start + length
    return start


# -- writing ------------------------------------------------------------------------


def lead_in_steps(melody: Melody) -> int:
    """Silence written before a pickup so that MIDI bar lines fall on the melody's downbeats."""
    bar = melody.bar_steps
    if not bar or melody.bar_phase % bar == 0:
        return 0
    return (-melody.bar_phase) % bar


def to_pretty_midi(melody: Melody, velocity: int = 80):
    """A PrettyMIDI with one instrument: tempo, time and key signature, program.

    A pickup starts after ``lead_in_steps`` of silence, so the first full bar
    starts on a bar line (as notation software expects). Downbeats are played
    a little louder than other notes.
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=float(melody.tempo))  # 40 ticks a grid step
    step = 60.0 / melody.tempo / STEPS_PER_QUARTER
    if melody.time_signature:
        num, den = melody.time_signature
        pm.time_signature_changes.append(pretty_midi.TimeSignature(num, den, 0.0))
    if melody.key is not None:
        number = melody.key.tonic + (12 if melody.key.mode == "minor" else 0)
        pm.key_signature_changes.append(pretty_midi.KeySignature(number, 0.0))
    inst = pretty_midi.Instrument(program=int(melody.program), name="melody")
    bar = melody.bar_steps
    lead = lead_in_steps(melody)
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


def midi_bytes(melody: Melody) -> bytes:
    """The Standard MIDI File of a melody, deterministic byte for byte."""
    buf = io.BytesIO()
    to_pretty_midi(melody).write(buf)
    return buf.getvalue()


def write_midi(melody: Melody, path) -> None:
    from melody.fileio import atomic_write_bytes

    atomic_write_bytes(path, midi_bytes(melody))
