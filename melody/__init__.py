"""melody: learn melodies from MIDI collections with a GRU and write new ones."""

__version__ = "0.1.0"
