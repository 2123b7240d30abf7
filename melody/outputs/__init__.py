"""What flows out: MIDI files, audio, piano rolls and scores (``render`` makes all three of any MIDI file)."""
