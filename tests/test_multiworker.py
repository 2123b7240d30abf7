"""train --strategy multi-worker: two processes on localhost train one model on JAX.

Each test starts real processes (the command a user runs on each machine), on
CPUs, with a tiny model; every wait is bounded, so a hang fails the test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, make_dataset, run_cli, write_songs

pytest.importorskip("jax")

from melody.modelfolder import MODEL_FOLDER_FILES  # noqa: E402
from melody.training.checkpoints import list_checkpoints  # noqa: E402

RUN_TIMEOUT = 120  # seconds any run of two processes may take on a busy 2-core machine


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "folk", pieces=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, out: Path, *flags, processes: int = 2) -> list[tuple]:
    """Every process of one run, each with its rank's variables: [(Popen, stderr path)]."""
    port = free_port()
    started = []
    for rank in range(processes):
        env = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
        env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   XLA_FLAGS="--xla_force_host_platform_device_count=1",
                   KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
                   KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes),
                   KERAS_DISTRIBUTION_PROCESS_ID=str(rank))
        err = tmp_path / f"{out.name}-{rank}-{len(list(tmp_path.glob('*.err')))}.err"
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "train", "--out", str(out), *TINY,
             "--strategy", "multi-worker", *map(str, flags)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=err.open("w"), text=True)
        started.append((proc, err))
    return started


def finish(started: list[tuple]) -> list[tuple]:
    """(exit code, stdout, stderr) of each process; none may outlive RUN_TIMEOUT."""
    deadline = time.monotonic() + RUN_TIMEOUT
    ended = []
    try:
        for proc, err in started:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            ended.append((proc.returncode, out, err.read_text()))
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return ended


def test_two_processes_train_one_model(dataset, tmp_path):
    out = tmp_path / "m"
    ended = finish(start(tmp_path, out, "--data", dataset, "--epochs", 2,
                         "--steps-per-epoch", 10, "--json"))
    for code, _, err in ended:
        assert code == 0, err
    results = [json.loads(stdout) for _, stdout, _ in ended]  # stdout is the JSON alone
    assert results[0]["replicas"] == results[1]["replicas"] == 2
    # one model: the same weights and the same (shared) validation score everywhere
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert results[0]["val_bits_per_note"] == results[1]["val_bits_per_note"]
    # it learned: an untrained model spreads its bets over the vocabulary
    vocab = json.loads((out / "config.json").read_text())["model"]["vocab_size"]
    assert results[0]["val_bits_per_token"] < math.log2(vocab) - 2
    # written once, complete, by process 0
    for name in MODEL_FOLDER_FILES:
        assert (out / name).exists(), name
    assert [p.name for p in list_checkpoints(out)] == ["epoch-001.keras", "epoch-002.keras"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["strategy"] == "multi-worker" and config["train"]["backend"] == "jax"
    assert [h["epoch"] for h in config["history"]] == [1, 2]

    # the folder is like any other: TensorFlow (this process) loads it, its validation
    # score is the sum of the two shares, and generate needs no JAX
    from melody.data import load_dataset
    from melody.modelfolder import ModelFolder
    from melody.scoring import ModelScorer

    folder = ModelFolder(out)
    scorer = ModelScorer(folder.keras_model(), folder.tokenizer, folder.model_config.lookback)
    assert scorer.score(load_dataset(dataset).split("val")).report()["bits_per_note"] == \
        pytest.approx(results[0]["val_bits_per_note"], rel=1e-4)
    code, generated, err = run_cli("generate", "--model", out, "-n", 1, "--notes", 8,
                                   "--out", tmp_path / "gen", "--json")
    assert code == 0, err
    # at most 8 notes: a melody may end by itself before --notes (README)
    assert 1 <= generated["files"][0]["notes"] <= 8
    assert Path(generated["files"][0]["midi"]).stat().st_size > 0


def wait_for(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s:\n{path.read_text()}")


def test_a_killed_process_stops_the_run_with_one_line_and_resume_completes(dataset, tmp_path):
    out = tmp_path / "m"
    started = start(tmp_path, out, "--data", dataset, "--epochs", 3, "--steps-per-epoch", 600)
    (_, err0), (victim, err1) = started
    wait_for(err1, "epoch 1:", RUN_TIMEOUT)  # killed in the middle of epoch 2
    time.sleep(1)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    (code0, _, text0), (code1, _, text1) = finish(started)
    assert time.monotonic() - killed_at < 30  # the survivor did not hang
    assert code0 != 0 and code1 == -signal.SIGKILL
    # each process's watcher outlives it by a moment to print the line: wait for it
    for _, err in started:
        wait_for(err, "--resume", 30)
    text0, text1 = (err.read_text() for _, err in started)
    for text in (text0, text1):  # one line each, no native log, saying what to do next
        errors = [line for line in text.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and "--resume" in errors[0], text
        assert "Traceback" not in text and "Gloo" not in text.replace(errors[0], "")
    assert "another process of the run is gone" in text0
    assert [p.name for p in list_checkpoints(out)] == ["epoch-001.keras"]

    ended = finish(start(tmp_path, out, "--data", dataset, "--epochs", 2,
                         "--steps-per-epoch", 10, "--resume", "--json"))
    for code, _, err in ended:
        assert code == 0, err
    results = [json.loads(stdout) for _, stdout, _ in ended]
    assert results[0]["epochs"] == 2 and results[0]["weights_sha256"] == results[1]["weights_sha256"]
    history = json.loads((out / "config.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_a_folder_of_music_is_refused_before_any_process_prepares_it(tmp_path):
    """Every process would prepare it into the same dataset folder at once."""
    music = write_songs(tmp_path / "songs", 3)
    [(code, stdout, err)] = finish(start(tmp_path, tmp_path / "m", "--data", music, processes=1))
    assert code == 2 and stdout == "", err
    assert len(err.strip().splitlines()) == 1 and "reads a prepared dataset" in err
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "m").exists()
