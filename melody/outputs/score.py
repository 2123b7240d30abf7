"""A MusicXML score (for MuseScore and friends) of any ``pretty_midi.PrettyMIDI``.

Imports nothing of melody's at run time but ``fileio``, so ``Melody.to_music21`` can call it.
"""

from __future__ import annotations

import io

from melody.fileio import atomic_write_bytes


def write_musicxml(pm, path, title=None) -> None:
    """A score with key, meter and tempo; times quantised to sixteenths and triplets."""
    atomic_write_bytes(path, musicxml_bytes(pm, title))


def musicxml_bytes(pm, title=None) -> bytes:
    """The MusicXML ``write_musicxml`` writes."""
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    return GeneralObjectExporter(to_music21(pm, title)).parse()


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
