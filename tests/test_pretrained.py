"""The model shipped inside the package: it loads, fits today's tokenizer, and makes music."""

import json

import numpy as np

from melody.cli import main
from melody.model import ModelConfig
from melody.modelfolder import ModelFolder, shipped_folder
from melody.sample import SampleConfig, sample
from melody.tokenizer import Tokenizer

FOLDER = shipped_folder()


def test_shipped_model_is_complete_and_small():
    for name in ("model.keras", "tokenizer.json", "config.json", "originality.npz"):
        assert (FOLDER / name).is_file(), name
    total = sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file())
    assert total <= 15 * 2**20


def test_shipped_model_matches_the_current_tokenizer():
    config = ModelFolder(FOLDER).config
    tok = ModelFolder(FOLDER).tokenizer
    assert tok == Tokenizer()
    assert tok.names == Tokenizer().names
    assert ModelConfig.from_dict(config["model"]).vocab_size == Tokenizer().vocab_size


def test_shipped_model_beats_the_ngram_it_was_measured_against():
    # Written by `melody evaluate --json` on the folk validation split when shipped.
    evaluation = ModelFolder(FOLDER).config["evaluation"]
    assert evaluation["model"]["bits_per_note"] < 0.8 * evaluation["baseline"]["bits_per_note"]


def test_shipped_model_generates_valid_melodies():
    tok = ModelFolder(FOLDER).tokenizer
    seqs = sample(ModelFolder(FOLDER).network, tok, SampleConfig(n=8, seed=3, bars=8))
    for seq in seqs:
        assert tok.is_valid(seq)
        melody = tok.decode(seq)
        assert melody.n_notes >= 8
        assert 36 <= melody.pitches.min() and melody.pitches.max() <= 96


def test_generate_uses_the_shipped_model_by_default(tmp_path, capsys):
    assert main(["generate", "-n", "2", "--seed", "5", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == str(FOLDER)
    assert len(result["files"]) == 2
    sidecar = json.loads(open(result["files"][0]["json"]).read())
    assert sidecar["seed"] == 5 and sidecar["notes"] == result["files"][0]["notes"]


def test_music21_hears_the_requested_key():
    """At least 9 melodies in 10 are in the key asked for, by music21's own analysis."""
    import music21

    from melody.notes import Key

    tok = ModelFolder(FOLDER).tokenizer
    model = ModelFolder(FOLDER).network
    agree = total = 0
    for key_name in ["D", "Gm", "Bb", "F#m", "Em"]:
        key = Key.parse(key_name)
        for seq in sample(model, tok, SampleConfig(n=10, seed=11, key=key_name)):
            m = tok.decode(seq)
            stream = music21.stream.Stream()
            for p, on, d in zip(m.pitches, m.onsets, m.durations):
                note = music21.note.Note(int(p))
                note.quarterLength = int(d) / 12
                stream.insert(int(on) / 12, note)
            found = stream.analyze("key")
            agree += Key(found.tonic.pitchClass, found.mode) == key
            total += 1
    assert agree >= 0.9 * total


def test_melodies_vary_with_the_seed():
    tok = ModelFolder(FOLDER).tokenizer
    a = sample(ModelFolder(FOLDER).network, tok, SampleConfig(n=2, seed=1, notes=32))
    b = sample(ModelFolder(FOLDER).network, tok, SampleConfig(n=2, seed=2, notes=32))
    assert not np.array_equal(a[0], b[0])
