"""MusicXML, ABC and kern through music21: the top part is the melody.

Scores are checked before music21 sees them: .mxl archives that unpack to too
much, and XML that declares entities, are refused.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from fractions import Fraction
from pathlib import Path

from melody.errors import SkipFile
from melody.inputs.extract import (
    MIN_NOTES,
    check_span,
    skyline,
    stated_or_estimated_key,
)
from melody.inputs.files import read_bytes, read_text
from melody.inputs.smf import MAX_NOTES
from melody.notes import STEPS_PER_QUARTER, Key, Melody

MAX_UNZIPPED_BYTES = 64 * 2**20  # all members of an .mxl together


def abc_tunes(text: str) -> tuple[str, list[tuple[str, str]]]:
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


def read_score(path: Path, ext: str, part: str | None) -> Melody:
    if ext == ".mxl":
        _check_zip(path)
    elif ext in (".xml", ".musicxml"):
        _check_xml(read_bytes(path), str(path.name))
    if ext == ".abc":
        text = read_text(path)
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
    header, tunes = abc_tunes(text)
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
    check_span(melody)
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
