"""Build Standard MIDI File bytes in tests, event by event.

>>> data = smf([track(tempo(0, 120), *notes([60, 62, 64], ticks=480))])
>>> data[:4]
b'MThd'
"""

from __future__ import annotations

import struct


def vlq(value: int) -> bytes:
    """A variable-length quantity as SMF delta times and lengths use."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def event(delta: int, *data: int) -> bytes:
    return vlq(delta) + bytes(data)


def note_on(delta: int, pitch: int, velocity: int = 90, channel: int = 0) -> bytes:
    return event(delta, 0x90 | channel, pitch, velocity)


def note_off(delta: int, pitch: int, channel: int = 0) -> bytes:
    return event(delta, 0x80 | channel, pitch, 0)


def program_change(delta: int, program: int, channel: int = 0) -> bytes:
    return event(delta, 0xC0 | channel, program)


def meta(delta: int, kind: int, payload: bytes) -> bytes:
    return vlq(delta) + bytes([0xFF, kind]) + vlq(len(payload)) + payload


def tempo(delta: int, bpm: float) -> bytes:
    return meta(delta, 0x51, round(60_000_000 / bpm).to_bytes(3, "big"))


def time_signature(delta: int, num: int, den: int) -> bytes:
    return meta(delta, 0x58, bytes([num, den.bit_length() - 1, 24, 8]))


def key_signature(delta: int, sharps: int, minor: bool = False) -> bytes:
    return meta(delta, 0x59, bytes([sharps & 0xFF, int(minor)]))


def track_name(delta: int, name: str | bytes) -> bytes:
    return meta(delta, 0x03, name.encode() if isinstance(name, str) else name)


def lyric(delta: int, text: bytes) -> bytes:
    return meta(delta, 0x05, text)


def notes(pitches, ticks: int = 480, channel: int = 0, velocity: int = 90, gap: int = 0) -> list[bytes]:
    """Note on/off pairs, one after another, each ``ticks`` long with ``gap`` ticks between."""
    out = []
    for i, pitch in enumerate(pitches):
        out.append(note_on(gap if i else 0, pitch, velocity, channel))
        out.append(note_off(ticks, pitch, channel))
    return out


def chords(chord_list, ticks: int = 480, channel: int = 0) -> list[bytes]:
    """Block chords, one after another, each ``ticks`` long."""
    out = []
    for chord in chord_list:
        out += [note_on(0, p, 80, channel) for p in chord]
        out += [note_off(ticks if i == 0 else 0, p, channel) for i, p in enumerate(chord)]
    return out


END_OF_TRACK = meta(0, 0x2F, b"")


def chunk(name: bytes, body: bytes, size: int | None = None) -> bytes:
    return name + struct.pack(">L", len(body) if size is None else size) + body


def track(*events: bytes, end: bool = True) -> bytes:
    """An MTrk chunk of the given events, ended by End of Track unless ``end`` is False."""
    body = b"".join(events) + (END_OF_TRACK if end else b"")
    return chunk(b"MTrk", body)


def header(fmt: int = 1, n_tracks: int = 1, division: int = 480) -> bytes:
    return chunk(b"MThd", struct.pack(">HHH", fmt, n_tracks, division))


def smf(tracks: list[bytes], fmt: int | None = None, division: int = 480) -> bytes:
    """A whole file: header plus track chunks (format 0 for one track, else 1)."""
    if fmt is None:
        fmt = 0 if len(tracks) == 1 else 1
    return header(fmt, len(tracks), division) + b"".join(tracks)


def riff_wrap(data: bytes) -> bytes:
    """The RIFF RMID container some Windows tools save MIDI in."""
    inner = b"data" + struct.pack("<L", len(data)) + data + (b"\0" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<L", 4 + len(inner)) + b"RMID" + inner


def scale(n: int = 10, low: int = 60) -> list[int]:
    """``n`` pitches of a major scale from ``low`` upwards."""
    steps = [0, 2, 4, 5, 7, 9, 11]
    return [low + 12 * (i // 7) + steps[i % 7] for i in range(n)]
