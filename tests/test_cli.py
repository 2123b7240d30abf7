"""The command contract of DESIGN.md, as a user meets it: help, bad flags, --json, quiet start."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run, write_songs

from melody.cli import build_parser, main

COMMANDS = ("prepare", "train", "generate", "evaluate", "render")
TF_NOISE = ("cuda", "absl", "onednn", "cpu_feature_guard", "tensorflow/", "stream_executor")


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    return write_songs(tmp_path_factory.mktemp("songs"), 8)


# -- --help --------------------------------------------------------------------------


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _help_blocks(text: str) -> dict:
    """Option string -> its help text (one string, whitespace collapsed)."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"  (-\S+.*?)(?:  +(.*))?$", line)
        if m:
            current = m[1]
            blocks[current] = m[2] or ""
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_flag_with_its_default(command, capsys):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    blocks = _help_blocks(out)
    flags = [a for a in _subparser(command)._actions if a.option_strings and a.dest != "help"]
    for action in flags:
        for flag in action.option_strings:
            assert flag in out, f"{command} --help does not mention {flag}"
        (block,) = [text for head, text in blocks.items() if action.option_strings[-1] in head]
        assert len(block) > 10, f"{command} {action.option_strings[-1]} is not explained"
    # a switch is off unless given; every flag that takes a value says its default
    valued = [a for a in flags if a.nargs != 0]
    assert valued, f"{command} has no flag that takes a value"
    for action in valued:
        (block,) = [text for head, text in blocks.items() if action.option_strings[-1] in head]
        assert "default" in block, f"{command} {action.option_strings[-1]}: no default in {block!r}"


def test_a_zero_default_is_shown(capsys):
    """0 == False in Python; the default must still be printed."""
    _, out, _ = run(capsys, "prepare", "--help")
    assert "(default: 0)" in _help_blocks(out)["--seed SEED"]


# -- bad arguments: one line, exit code 2 ---------------------------------------------

BAD_FLAGS = [
    ("generate", ["--temperature", "0"], "--temperature"),
    ("generate", ["--temperature", "-1"], "--temperature"),
    ("generate", ["--temperature", "nan"], "--temperature"),
    ("generate", ["--temperature", "inf"], "--temperature"),
    ("generate", ["--temperature", "warm"], "--temperature"),
    ("generate", ["--top-p", "0"], "--top-p"),
    ("generate", ["--top-p", "1.5"], "--top-p"),
    ("generate", ["--top-p", "-0.2"], "--top-p"),
    ("generate", ["--top-k", "0"], "--top-k"),
    ("generate", ["--top-k", "2.5"], "--top-k"),
    ("generate", ["-n", "0"], "-n/--count"),
    ("generate", ["--count", "-3"], "-n/--count"),
    ("generate", ["--notes", "0"], "--notes"),
    ("generate", ["--notes", "ten"], "--notes"),
    ("generate", ["--bars", "0"], "--bars"),
    ("generate", ["--bars", "-2"], "--bars"),
    ("generate", ["--notes", "8", "--bars", "2"], "--bars"),
    ("generate", ["--seed", "-1"], "--seed"),
    ("generate", ["--tempo", "0"], "--tempo"),
    ("generate", ["--program", "128"], "--program"),
    ("generate", ["--lowest", "200"], "--lowest"),
    ("generate", ["--highest", "X9"], "--highest"),
    ("generate", ["--key", "H minor"], "--key"),
    ("train", ["--epochs", "0"], "--epochs"),
    ("train", ["--epochs", "many"], "--epochs"),
    ("train", ["--units", "0"], "--units"),
    ("train", ["--dropout", "1"], "--dropout"),
    ("train", ["--learning-rate", "0"], "--learning-rate"),
    ("train", ["--batch-size", "-8"], "--batch-size"),
    ("train", ["--strategy", "tpu"], "--strategy"),
    ("evaluate", ["--samples", "-1"], "--samples"),
    ("evaluate", ["--seed", "x"], "--seed"),
    ("prepare", ["--jobs", "0"], "--jobs"),
    ("prepare", ["--val-fraction", "1"], "--val-fraction"),
    ("prepare", ["--timeout", "0"], "--timeout"),
    ("render", [], "FILES"),
    ("render", ["a.mid", "--out"], "--out"),
]


def assert_one_line(code, out, err, expected_code=2):
    assert code == expected_code, err
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("command, argv, flag", BAD_FLAGS,
                         ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD_FLAGS])
def test_bad_flag_value_is_one_line_naming_the_flag(command, argv, flag, capsys):
    code, out, err = run(capsys, command, *argv)
    assert_one_line(code, out, err)
    assert err.startswith(f"melody {command}: error:") and flag in err


def test_lowest_above_highest_is_refused_naming_both(capsys, tmp_path, model_folder):
    code, out, err = run(capsys, "generate", "--model", model_folder, "--out", tmp_path,
                         "--lowest", "G5", "--highest", "60")
    assert_one_line(code, out, err)
    assert "--lowest 79" in err and "--highest 60" in err
    assert list(tmp_path.iterdir()) == []


def _bad_paths(tmp: Path, songs: Path, model: Path):
    """(argv, what the one line must name) for paths that are missing or the wrong kind."""
    missing, a_file, a_folder = tmp / "missing", songs / "song0.mid", songs
    return [
        (["generate", "--model", missing], str(missing)),
        (["generate", "--model", a_file], str(a_file)),
        (["generate", "--model", model, "--primer", missing], str(missing)),
        (["generate", "--model", model, "--primer", a_folder], str(a_folder)),
        (["generate", "--model", model, "--out", a_file], "--out"),
        (["generate", "--model", model, "--out", a_file / "deeper"], "--out"),
        (["evaluate", "--model", missing], str(missing)),
        (["evaluate", "--model", model, "--data", missing], str(missing)),
        (["evaluate", "--model", model, "--samples", "2", "--png", a_folder], "--png"),
        (["train", "--data", missing], str(missing)),
        (["train", "--data", songs, "--out", a_file], "--out"),
        (["prepare", missing], str(missing)),
        (["prepare", songs, "--out", a_file], "--out"),
        (["render", missing], str(missing)),
        (["render", a_folder], str(a_folder)),
        (["render", a_file, "--soundfont", missing, "--wav"], "--soundfont"),
        (["render", a_file, "--soundfont", a_folder, "--wav"], "--soundfont"),
        (["render", a_file, "--out", a_file], "--out"),
    ]


def test_missing_or_wrong_kind_of_path_is_one_line(capsys, tmp_path, songs, model_folder):
    before = sorted(p.name for p in songs.iterdir())
    for argv, named in _bad_paths(tmp_path, songs, model_folder):
        code, out, err = run(capsys, *argv)
        assert (code, out, err.count("\n")) == (2, "", 1), (argv, err)
        assert named in err and "Traceback" not in err, (argv, err)
    assert sorted(p.name for p in songs.iterdir()) == before  # nothing written beside the inputs
    assert not (tmp_path / "missing").exists()


def test_no_command_and_unknown_command_are_one_line(capsys):
    for argv in ([], ["compose"]):
        code, out, err = run(capsys, *argv)
        assert_one_line(code, out, err)


# -- --json: one object on stdout, the summary on stderr -------------------------------


def json_of(out: str) -> dict:
    lines = out.splitlines()
    assert len(lines) == 1, out  # exactly one JSON document, nothing else
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


def test_json_of_prepare_generate_render(capsys, tmp_path, songs, model_folder):
    code, out, err = run(capsys, "prepare", songs, "--out", tmp_path / "ds", "--json")
    assert code == 0
    assert {"dataset", "files", "ok", "skipped", "notes", "tokens", "train_pieces",
            "val_pieces"} <= set(json_of(out))
    assert "prepared" in err

    code, out, err = run(capsys, "generate", "--model", model_folder, "--out", tmp_path / "gen",
                         "-n", 2, "--notes", 6, "--seed", 1, "--json")
    assert code == 0
    result = json_of(out)
    assert {"files", "seed", "model"} <= set(result) and len(result["files"]) == 2
    assert all({"midi", "notes", "seconds"} <= set(f) for f in result["files"])
    assert "wrote 2 melodies" in err

    midi = result["files"][0]["midi"]
    code, out, err = run(capsys, "render", midi, "--png", "--out", tmp_path / "r", "--json")
    assert code == 0
    assert Path(json_of(out)["files"][0]["png"]).is_file() and "rendered 1 file" in err


def test_json_holds_no_nan(capsys, monkeypatch):
    """Strict JSON parsers refuse NaN: a figure that is not a number becomes null."""
    import melody.cli

    monkeypatch.setitem(melody.cli.COMMANDS, "prepare",
                        lambda args: ({"notes": float("nan"), "x": np.float32(2.5)}, "summary"))
    code, out, err = run(capsys, "prepare", "--json")
    assert code == 0 and json_of(out) == {"notes": None, "x": 2.5} and err == "summary\n"


def _quiet_env() -> dict:
    """The environment of a user who set nothing: TensorFlow's own log level unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run, where TensorFlow complains the most
    return env


def _cli(cwd, *argv):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, argv)],
                          capture_output=True, text=True, env=_quiet_env(), cwd=cwd, timeout=300)


def test_train_and_evaluate_json_without_tensorflow_noise(tmp_path, songs):
    ds = tmp_path / "ds"
    assert main(["prepare", str(songs), "--out", str(ds), "--val-fraction", "0.25"]) == 0
    train = _cli(tmp_path, "train", "--data", ds, "--out", tmp_path / "m", "--epochs", 1,
                 "--units", 8, "--embedding", 4, "--layers", 1, "--seq-len", 16,
                 "--batch-size", 4, "--steps-per-epoch", 2, "--json")
    assert train.returncode == 0, train.stderr[-3000:]
    assert {"model", "epochs", "params", "val_bits_per_note",
            "tokens_per_second"} <= set(json_of(train.stdout))
    assert "val bits/note" in train.stderr  # the human summary went to stderr

    evaluate = _cli(tmp_path, "evaluate", "--model", tmp_path / "m", "--data", ds,
                    "--samples", 2, "--json")
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    result = json_of(evaluate.stdout)
    assert {"model", "baseline", "notes", "pieces"} <= set(result)
    assert {"bits_per_token", "bits_per_note", "pitch_bits_per_note"} <= set(result["model"])
    for proc in (train, evaluate):
        noise = [w for w in TF_NOISE if w in proc.stderr.lower()]
        assert noise == [], proc.stderr[-3000:]
