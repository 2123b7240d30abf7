"""Training speed of ``--strategy multi-worker``: one process against two, one core each.

    python bench/multiworker.py [--data datasets/folk] [--steps 30] [--batch-size 64]

Runs ``melody train --strategy multi-worker`` (the default model: 2x320 GRU
with form context, 128-token windows) as one process and then as two on
localhost, each pinned to a core of its own (``taskset``, one XLA host device,
one thread for BLAS), and prints:

- tokens per second of the run, for one process and for two (the second
  epoch's rate, after the compile), and their ratio;
- the gradient that crosses the network per step: the model's parameters as
  float32, all-reduced once per step (a ring all-reduce sends and receives
  about 2 (N-1)/N times it per process), and what that costs per step at
  1 Gbit/s and 10 Gbit/s against the step's compute time measured here.

Figures, not assertions: other work on the machine moves them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from melody import corpus  # noqa: E402
from melody.config import ModelConfig, TrainConfig  # noqa: E402
from melody.data import load_dataset  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run(processes: int, args, out: Path) -> list[dict]:
    """One multi-worker run of ``processes`` processes, process i on core i; their JSON."""
    port = free_port()
    cores = sorted(os.sched_getaffinity(0))
    procs = []
    for rank in range(processes):
        env = dict(os.environ, KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}",
                   KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes),
                   KERAS_DISTRIBUTION_PROCESS_ID=str(rank), OMP_NUM_THREADS="1",
                   XLA_FLAGS="--xla_force_host_platform_device_count=1")
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        command = ["taskset", "-c", str(cores[rank % len(cores)]), sys.executable,
                   str(ROOT / "app.py"), "train", "--data", str(args.data), "--out", str(out),
                   "--strategy", "multi-worker", "--epochs", "2", "--steps-per-epoch",
                   str(args.steps), "--batch-size", str(args.batch_size), "--json"]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=1800)
        if proc.returncode:
            sys.exit(f"a process of the {processes}-process run failed (exit {proc.returncode})")
        results.append(json.loads(stdout))
    return results


def second_epoch_rate(out: Path, steps: int, batch: int, seq_len: int) -> float:
    """Tokens per second of epoch 2 alone (epoch 1 includes XLA's compile)."""
    history = json.loads((out / "config.json").read_text())["history"]
    tokens = [h["epoch"] * steps * batch * seq_len for h in history]
    seconds = [t / h["tokens_per_second"] for t, h in zip(tokens, history)]
    return (tokens[1] - tokens[0]) / (seconds[1] - seconds[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=corpus.DATASET)
    parser.add_argument("--steps", type=int, default=30, help="batches per epoch (2 epochs)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    args = parser.parse_args()
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs taskset and two usable cores")
    seq_len = TrainConfig.seq_len
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            out = Path(tmp) / f"m{processes}"
            started = time.perf_counter()
            run(processes, args, out)
            rates[processes] = second_epoch_rate(out, args.steps, args.batch_size, seq_len)
            print(f"{processes} process{'es' if processes > 1 else ''}: "
                  f"{rates[processes]:,.0f} tokens/s (epoch 2; run {time.perf_counter() - started:.0f} s)")
    print(f"ratio two / one: {rates[2] / rates[1]:.2f}x")

    vocab = load_dataset(args.data).tokenizer.vocab_size
    params = ModelConfig(vocab_size=vocab).params
    grad = 4 * params
    step = args.batch_size * seq_len / rates[2]
    print(f"gradient per step: {params:,} parameters x 4 bytes = {grad / 2**20:.2f} MiB, "
          "one all-reduce per step")
    for n in (2, 8):
        sent = 2 * (n - 1) / n * grad
        for gbit in (1, 10):
            wire = sent * 8 / (gbit * 1e9)
            print(f"  {n} machines at {gbit:>2} Gbit/s: {sent / 2**20:.1f} MiB each way per "
                  f"process, {wire * 1e3:.0f} ms per step against {step * 1e3:.0f} ms of compute "
                  f"per step here (batch {args.batch_size} x {seq_len})")


if __name__ == "__main__":
    main()
