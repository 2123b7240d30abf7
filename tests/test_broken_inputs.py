"""Broken and odd inputs: each reads to a melody or is skipped with a named reason.

Every case is built in code. ``read_melody`` must never raise anything but
``SkipFile``, and ``parts`` must never raise at all.
"""

from __future__ import annotations

import io
import random
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from midi_factory import (
    END_OF_TRACK,
    chunk,
    event,
    header,
    key_signature,
    lyric,
    meta,
    note_off,
    note_on,
    notes,
    riff_wrap,
    scale,
    smf,
    tempo,
    time_signature,
    track,
    track_name,
)

from melody.inputs import (
    MIN_NOTES,
    REASONS,
    SkipFile,
    melody_from_midi_bytes,
    parts,
    read_melody,
)

TUNE = scale(10)
GOOD = smf([track(*notes(TUNE))])


def tune_events(pitches=TUNE, ticks=480, channel=0):
    return notes(pitches, ticks=ticks, channel=channel)


def cut_track():
    body = b"".join(tune_events()) + note_on(0, 80)[:-1]  # ends inside a note-on
    return header(0, 1) + chunk(b"MTrk", body)


def chunk_longer_than_file():
    body = b"".join(tune_events())
    return header(0, 1) + chunk(b"MTrk", body, size=len(body) + 10_000)


def high_data_bytes():
    events = [event(0, 0x90, p, 200) + event(480, 0x80, p, 0xFF) for p in TUNE]
    return smf([track(*events)])


def huge_deltas():
    events = []
    for p in TUNE:
        events += [note_on(0x0FFFFFFF, p), note_off(480, p)]
    return smf([track(*events)])


def memory_bomb():
    # Slowest tempo, one tick per quarter and the largest delta: a tick-to-time
    # table for this would need gigabytes.
    events = [meta(0, 0x51, b"\xff\xff\xff")] + tune_events(ticks=1)
    events += [note_on(0x0FFFFFFF, 60), note_off(1, 60)]
    return smf([track(*events)], division=1)


def many_tracks(n=20_000):
    return smf([track(*notes([60 + i % 12], ticks=48)) for i in range(n)])


def notes_at_one_tick(n):
    on = [note_on(0, 20 + i % 100, 90) for i in range(n)]
    off = [note_off(480 if i == 0 else 0, 20 + i % 100) for i in range(n)]
    return smf([track(*on, *off)])


def zero_length_notes():
    events = []
    for p in TUNE:
        events += [note_on(0, p + 1), note_off(0, p + 1), note_on(0, p), note_off(480, p)]
    return smf([track(*events)])


def never_ended_notes():
    events = [note_on(480 if i else 0, p) for i, p in enumerate(TUNE)]
    return smf([track(*events)])


def overlapping_same_pitch():
    events = []
    for p in TUNE:  # each pitch struck twice, the second before the first ends
        events += [note_on(0, p), note_on(240, p), note_off(120, p), note_off(120, p)]
    return smf([track(*events)])


def off_before_on_at_the_same_tick():
    # Repeated pitch where the new note-on comes before the old note-off.
    events = [note_on(0, 60)]
    for _ in range(9):
        events += [note_on(480, 60), note_off(0, 60)]
    events.append(note_off(480, 60))
    return smf([track(*events)])


def running_status():
    # One status byte, then data only; note-on with velocity 0 ends each note.
    events = [event(0, 0x90, TUNE[0], 90)]
    for previous, pitch in zip(TUNE, TUNE[1:]):
        events += [event(480, previous, 0), event(0, pitch, 90)]
    events.append(event(480, TUNE[-1], 0))
    return smf([track(*events)])


def data_without_status():
    return smf([track(event(0, 60, 90), *tune_events())])


def sysex_and_unknown_meta():
    events = [event(0, 0xF0, 3, 1, 2, 0xF7), meta(0, 0x7F, b"\x00\x00\x41junk"), meta(0, 0x21, b"\x00")]
    return smf([track(*events, *tune_events())])


def unknown_chunk_first():
    return header(0, 1) + chunk(b"XFIH", b"\x01\x02\x03") + track(*tune_events())


def junk_prefix():
    return bytes(128) + GOOD


def undecodable_text():
    names = [track_name(0, b"\xff\xfe\x00bad\xc3"), lyric(0, b"\x80\x81\xfe"), meta(0, 0x01, b"\xe9\xff")]
    return smf([track(*names, *tune_events())])


def kar_file():
    words = track(meta(0, 0x01, b"@KMIDI KARAOKE FILE"), lyric(0, b"\\La"), lyric(480, b"/l\xe0 \xff"))
    return smf([track(tempo(0, 90)), words, track(track_name(0, "Melody"), *tune_events())])


def format_two():
    first = track(tempo(0, 60), *tune_events(scale(9, 48)))
    second = track(tempo(0, 140), time_signature(0, 3, 4), *tune_events(scale(12, 72)))
    return smf([first, second], fmt=2)


def smpte(fps=25, ticks_per_frame=40):
    division = ((256 - fps) << 8) | ticks_per_frame
    # 25 fps x 40 = 1000 ticks a second; at 120 BPM a quarter is 500 ticks.
    return smf([track(tempo(0, 120), *tune_events(ticks=500))], division=division)


def invalid_meta():
    bad = [key_signature(0, 20, True), meta(0, 0x59, b"\x03\x07"), meta(0, 0x58, b"\x00\x1e\x18\x08"),
           meta(0, 0x58, b"\x03"), meta(0, 0x51, b"\x07")]
    return smf([track(*bad, *tune_events())])


def tempo_zero():
    return smf([track(meta(0, 0x51, b"\x00\x00\x00"), *tune_events())])


def drums_only():
    return smf([track(*tune_events(channel=9))])


def no_notes():
    return smf([track(tempo(0, 100), time_signature(0, 4, 4), track_name(0, "Empty"))])


def html_page():
    return b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>Not here</body></html>"


def random_bytes():
    return random.Random(7).randbytes(4096)


def overlong_varlen():
    # Five continuation bytes: longer than the four the spec allows.
    return smf([track(b"\x81\x81\x81\x81\x81\x00\x90\x3c\x40", *tune_events())])


def bad_status_byte():
    return smf([track(*tune_events(), event(0, 0xF4), *tune_events(scale(10, 70)))])


def eot_then_garbage():
    body = b"".join(tune_events()) + END_OF_TRACK + b"\x00\x99\x99\x99garbage"
    return header(0, 1) + chunk(b"MTrk", body)


def ntracks_wrong():
    # The header says 5 tracks; one follows.
    return header(1, 5) + track(*tune_events())


def zipped(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def mxl_zip_bomb():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/container.xml", "<container/>")
        archive.writestr("score.xml", b"<a>" + b" " * (70 * 2**20) + b"</a>")
    return buf.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<score-partwise><work><work-title>&lol3;</work-title></work></score-partwise>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE score-partwise [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<score-partwise><work><work-title>&xxe;</work-title></work></score-partwise>
"""

MUSICXML_HEAD = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 4.0 Partwise//EN" "http://www.musicxml.org/dtds/partwise.dtd">
<score-partwise version="4.0"><part-list><score-part id="P1"><part-name>Voice</part-name></score-part></part-list>
<part id="P1"><measure number="1"><attributes><divisions>1</divisions></attributes>
"""


def musicxml_notes(n):
    one = b"<note><pitch><step>C</step><octave>5</octave></pitch><duration>1</duration><type>quarter</type></note>"
    return MUSICXML_HEAD + one * n + b"</measure></part></score-partwise>"


def truncated_musicxml():
    return musicxml_notes(12)[:-60]


def mxl_not_zip():
    return b"PK\x03\x04 this is not really a zip archive" + bytes(100)


GOOD_ABC = "X:1\nT:Ok\nM:4/4\nL:1/8\nK:C\nCDEF GABc|cBAG FEDC|\n"

CASES = {
    # name: (extension, bytes builder, expected reason or "melody")
    "empty": (".mid", lambda: b"", "empty"),
    "random bytes": (".mid", random_bytes, "not music"),
    "html named .mid": (".mid", html_page, "not music"),
    "header cut short": (".mid", lambda: GOOD[:10], "truncated"),
    "header without tracks": (".mid", lambda: header(1, 1), "truncated"),
    "track cut mid-event": (".mid", cut_track, "melody"),
    "track cut before any note": (".mid", lambda: GOOD[:24], "truncated"),
    "track chunk longer than file": (".mid", chunk_longer_than_file, "melody"),
    "RIFF RMID wrapper": (".mid", lambda: riff_wrap(GOOD), "melody"),
    "RIFF without data chunk": (".mid", lambda: b"RIFF\x04\x00\x00\x00RMID", "not music"),
    "format 2": (".mid", format_two, "melody"),
    "format 7": (".mid", lambda: header(7, 1) + track(*tune_events()), "unsupported format"),
    "ticks per beat 0": (".mid", lambda: smf([track(*tune_events())], division=0), "corrupt timing"),
    "SMPTE division": (".mid", smpte, "melody"),
    "SMPTE with 0 ticks per frame": (".mid", lambda: smpte(25, 0), "corrupt timing"),
    "SMPTE with 100 fps": (".mid", lambda: smpte(100, 4), "corrupt timing"),
    "data bytes above 127": (".mid", high_data_bytes, "melody"),
    "invalid key and time signatures": (".mid", invalid_meta, "melody"),
    "tempo 0": (".mid", tempo_zero, "melody"),
    "huge delta times": (".mid", huge_deltas, "corrupt timing"),
    "memory bomb": (".mid", memory_bomb, "corrupt timing"),
    "20,000 tracks": (".mid", many_tracks, "too large"),
    "100,000 notes at one tick": (".mid", lambda: notes_at_one_tick(100_000), "too short"),
    "250,000 notes": (".mid", lambda: notes_at_one_tick(250_000), "too large"),
    "no notes": (".mid", no_notes, "no notes"),
    "drums only": (".mid", drums_only, "drums only"),
    "zero-length notes": (".mid", zero_length_notes, "melody"),
    "never-ended notes": (".mid", never_ended_notes, "melody"),
    "overlapping same-pitch notes": (".mid", overlapping_same_pitch, "melody"),
    "note-on before note-off at one tick": (".mid", off_before_on_at_the_same_tick, "melody"),
    "running status": (".mid", running_status, "melody"),
    "data byte without status": (".mid", data_without_status, "no notes"),
    "sysex and unknown meta": (".mid", sysex_and_unknown_meta, "melody"),
    "unknown chunk before the track": (".mid", unknown_chunk_first, "melody"),
    "junk before the header": (".midi", junk_prefix, "melody"),
    "undecodable track name and lyrics": (".mid", undecodable_text, "melody"),
    "karaoke .kar": (".kar", kar_file, "melody"),
    "upper-case extension": (".MID", lambda: GOOD, "melody"),
    "over-long variable-length number": (".mid", overlong_varlen, "melody"),
    "system byte inside a track": (".mid", bad_status_byte, "melody"),
    "garbage after end of track": (".mid", eot_then_garbage, "melody"),
    "header promises more tracks": (".mid", ntracks_wrong, "melody"),
    "broken MusicXML": (".musicxml", truncated_musicxml, "parse error"),
    "XML that is not a score": (".xml", lambda: b"<?xml version='1.0'?><svg><g/></svg>", "parse error"),
    "MusicXML without notes": (".musicxml", lambda: musicxml_notes(0), "no notes"),
    "MusicXML with too few notes": (".xml", lambda: musicxml_notes(3), "too short"),
    "blank MusicXML": (".xml", lambda: b"   \n", "empty"),
    "billion laughs": (".musicxml", lambda: BILLION_LAUGHS, "unsupported format"),
    "external entity": (".xml", lambda: EXTERNAL_ENTITY, "unsupported format"),
    "billion laughs in UTF-16": (".xml", lambda: BILLION_LAUGHS.decode().encode("utf-16"), "unsupported format"),
    "entity inside .mxl": (".mxl", lambda: zipped({"score.xml": BILLION_LAUGHS}), "unsupported format"),
    "entity in an .mxl member without extension": (".mxl", lambda: zipped({"s": EXTERNAL_ENTITY}), "unsupported format"),
    ".mxl zip bomb": (".mxl", mxl_zip_bomb, "too large"),
    ".mxl that is not a zip": (".mxl", mxl_not_zip, "not music"),
    "broken ABC": (".abc", lambda: b"X:1\nK:C\n|:::]]]((((\n", "no notes"),
    "ABC of binary garbage": (".abc", lambda: random.Random(3).randbytes(2000), "not music"),
    "ABC without unit length or meter": (".abc", lambda: b"X:1\nK:G\nGABc dedB|dedB dedB|\n", "melody"),
    "ABC with too few notes": (".abc", lambda: b"X:1\nK:C\nCDE|\n", "too short"),
    "blank ABC": (".abc", lambda: b"\n\n  \n", "empty"),
    "good ABC": (".abc", lambda: GOOD_ABC.encode(), "melody"),
    "Latin-1 ABC": (".abc", lambda: ("X:1\nT:Caf\xe9\n" + GOOD_ABC[4:]).encode("latin-1"), "melody"),
    "broken kern": (".krn", lambda: b"**kern\n*M4/4\n4c\n4d\n==\n*-\n4e\n!!!junk", "parse error"),
    "not a music extension": (".txt", lambda: GOOD, "unsupported format"),
}


@pytest.mark.parametrize("name", CASES)
def test_broken_input_reads_or_skips_with_a_named_reason(name, tmp_path):
    ext, build, expected = CASES[name]
    path = tmp_path / f"case{ext}"
    path.write_bytes(build())
    assert parts(path) == [None]
    if expected == "melody":
        melody = read_melody(path)
        assert melody.n_notes >= MIN_NOTES
        assert (melody.durations >= 1).all()
        assert (melody.onsets[1:] >= melody.onsets[:-1] + melody.durations[:-1]).all()
        assert 0 <= melody.pitches.min() and melody.pitches.max() <= 127
        assert melody.onsets[0] == 0
    else:
        with pytest.raises(SkipFile) as err:
            read_melody(path)
        assert err.value.reason == expected, err.value.detail
        assert expected in REASONS


def read(build, ext=".mid", tmp_path=None):
    path = tmp_path / f"x{ext}"
    path.write_bytes(build())
    return read_melody(path)


def test_cut_track_keeps_the_notes_before_the_cut(tmp_path):
    assert read(cut_track, tmp_path=tmp_path).pitches.tolist() == TUNE


def test_data_bytes_above_127_are_clipped_not_fatal(tmp_path):
    assert read(high_data_bytes, tmp_path=tmp_path).pitches.tolist() == TUNE


def test_invalid_meta_events_are_dropped(tmp_path):
    melody = read(invalid_meta, tmp_path=tmp_path)
    assert melody.time_signature == (4, 4)
    assert melody.tempo == 120.0
    assert melody.key is not None  # estimated, not taken from the broken event


def test_smpte_time_uses_the_tempo_for_the_beat(tmp_path):
    melody = read(smpte, tmp_path=tmp_path)
    assert melody.onsets.tolist() == [12 * i for i in range(10)]


def test_format_two_takes_meta_events_from_its_own_track(tmp_path):
    melody = read(format_two, tmp_path=tmp_path)
    assert melody.pitches.tolist() == scale(12, 72)
    assert melody.tempo == pytest.approx(140, abs=0.01)
    assert melody.time_signature == (3, 4)


def test_never_ended_notes_end_at_the_next_onset(tmp_path):
    melody = read(never_ended_notes, tmp_path=tmp_path)
    assert melody.pitches.tolist() == TUNE[:-1]  # the last has nothing to end it
    assert melody.durations.tolist() == [12] * 9


def test_zero_length_and_overlapping_notes(tmp_path):
    assert read(zero_length_notes, tmp_path=tmp_path).pitches.tolist() == TUNE
    melody = read(overlapping_same_pitch, tmp_path=tmp_path)
    assert melody.pitches.tolist() == [p for p in TUNE for _ in (0, 1)]
    assert melody.durations.tolist() == [6, 6] * 10


def test_repeated_pitch_with_on_before_off(tmp_path):
    melody = read(off_before_on_at_the_same_tick, tmp_path=tmp_path)
    assert melody.onsets.tolist() == [12 * i for i in range(10)]
    assert melody.durations.tolist() == [12] * 10


def test_running_status_is_followed(tmp_path):
    assert read(running_status, tmp_path=tmp_path).pitches.tolist() == TUNE


def test_skip_detail_says_why(tmp_path):
    with pytest.raises(SkipFile) as err:
        read(huge_deltas, tmp_path=tmp_path)
    assert "quarter notes" in err.value.detail
    assert str(err.value).startswith("corrupt timing: ")


def test_a_folder_named_like_a_midi_file_is_unreadable(tmp_path):
    (tmp_path / "dir.mid").mkdir()
    with pytest.raises(SkipFile) as err:
        read_melody(tmp_path / "dir.mid")
    assert err.value.reason == "unreadable"


def test_a_flood_of_events_is_too_large(tmp_path, monkeypatch):
    import melody.inputs.smf

    monkeypatch.setattr(melody.inputs.smf, "MAX_EVENTS", 5_000)
    flood = [event(0, 0xB0, 7, 100)] + [b"\x00\x07\x64"] * 5_000  # volume, running status
    with pytest.raises(SkipFile) as err:
        read(lambda: smf([track(*flood, *tune_events())]), tmp_path=tmp_path)
    assert err.value.reason == "too large"
    monkeypatch.setattr(melody.inputs.smf, "MAX_EVENTS", 50_000)
    assert read(lambda: smf([track(*flood, *tune_events())]), tmp_path=tmp_path).n_notes == 10


RICH = smf([
    track(tempo(0, 90), time_signature(0, 3, 4), key_signature(0, 1), track_name(0, "Lead")),
    track(*notes(scale(12, 67), ticks=240)),
    track(*notes([36, 43] * 6, channel=1), lyric(0, b"la")),
    track(*notes([42] * 12, channel=9)),
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(RICH) - 1), st.integers(0, 255)), max_size=6),
       st.integers(14, len(RICH)))
def test_mutated_midi_reads_or_skips_with_a_reason(flips, cut):
    data = bytearray(RICH[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    try:
        melody = melody_from_midi_bytes(bytes(data))
    except SkipFile as err:
        assert err.reason in REASONS
    else:
        assert melody.n_notes >= MIN_NOTES
        assert (melody.durations >= 1).all()
        assert (melody.onsets[1:] >= melody.onsets[:-1] + melody.durations[:-1]).all()


def test_skip_reasons_are_checked():
    with pytest.raises(ValueError, match="reason must be one of"):
        SkipFile("because")
