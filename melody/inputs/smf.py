"""Standard MIDI Files (.mid .midi .kar), parsed chunk by chunk, in ticks.

Timing never depends on tempo, and a broken track costs only what follows the
break (mido's reader is all-or-nothing). Lenient on purpose: a RIFF RMID
wrapper is unwrapped, data bytes above 127 are clipped (as ``mido``'s
``clip=True``), text is never decoded except track names, invalid tempo, key
and time signature events are dropped, a track cut short keeps the events
before the cut.
"""

from __future__ import annotations

import bisect
import struct
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

from melody.errors import SkipFile
from melody.notes import STEPS_PER_QUARTER, Key

MAX_NOTES = 200_000  # note-ons in a file; more is a "black MIDI" or a bomb
MAX_TRACKS = 1024
MAX_EVENTS = 1_000_000  # all events of a file; large orchestral files have a few 100,000
MAX_META = 10_000  # tempo, key or time signature events kept per track


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
