"""Training speed of the default model on this machine's CPU.

    python bench/train.py [--data datasets/folk] [--steps 20]

Prints:

- tokens per second of the default model (2x320 GRU, batch 64 x 128 tokens),
  through the real input pipeline;
- the same under TensorFlow's default threading (a child process), against
  the threading ``melody train`` sets on CPUs (``tune_cpu_threads``);
- the achieved FLOP rate (``flops_per_token`` x 3 for forward + backward, times
  tokens/s) as a share of this machine's dense float32 matmul rate, measured
  with 1024x1024 ``tf.matmul`` on all cores under both threadings (the higher);
- that the input pipeline never makes the model wait: the pipeline alone
  against the training step, and training fed by the pipeline against
  training on one batch already in memory.

Figures, not assertions: other work on the machine moves them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melody import corpus  # noqa: E402
from melody.backend import keras, tensorflow, tune_cpu_threads, usable_cores  # noqa: E402
from melody.config import ModelConfig, TrainConfig  # noqa: E402
from melody.model import flops_per_token  # noqa: E402
from melody.tokenizer import Tokenizer  # noqa: E402
from melody.training.trainer import compiled_model  # noqa: E402
from melody.training.windows import WindowSampler, transpose_tables  # noqa: E402


def matmul_flops(seconds: float = 3.0, n: int = 1024) -> float:
    """Dense float32 matmul rate of this machine, FLOP/s: two independent chains
    of 1024x1024 matmuls, so that every core works whether TensorFlow spreads
    one op over all cores (its default) or runs ops side by side (melody's)."""
    tf = tensorflow()
    a, b, c = (tf.random.normal((n, n)) for _ in range(3))

    @tf.function
    def twenty(a, b, c):
        x, y = a, c
        for _ in range(10):
            x = tf.matmul(x, b) * 1e-3
            y = tf.matmul(y, b) * 1e-3
        return x, y

    [t.numpy() for t in twenty(a, b, c)]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        [t.numpy() for t in twenty(a, b, c)]
        count += 20
    return count * 2 * n**3 / (time.perf_counter() - start)


def training_tokens(data: Path | None, tokenizer: Tokenizer) -> np.ndarray:
    from melody.data import is_dataset, load_dataset

    if data and is_dataset(data):
        return load_dataset(data).split("train").tokens
    print(f"{data} is not a prepared dataset; using random tokens", file=sys.stderr)
    return np.random.default_rng(0).integers(4, tokenizer.vocab_size, 1_000_000).astype(np.uint16)


def time_fit(model, dataset, steps: int) -> float:
    """Seconds per training step."""
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def best_step_times(model, feeds: dict, steps: int, rounds: int = 3) -> dict:
    """The fastest of alternating rounds for each feed, so that load from other
    work on the machine hits them alike."""
    for feed in feeds.values():
        time_fit(model, feed, 3)  # trace and warm up
    times = {name: [] for name in feeds}
    for _ in range(rounds):
        for name, feed in feeds.items():
            times[name].append(time_fit(model, feed, steps))
    return {name: min(t) for name, t in times.items()}


def time_pipeline(dataset, batches: int) -> float:
    """Seconds per batch for the input pipeline alone."""
    it = iter(dataset)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def default_threads_figures(args) -> dict:
    """Training speed and matmul rate under TensorFlow's default threading (an op
    on every core), measured in a child process: threading is fixed per process."""
    out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--steps",
                          str(args.steps), "--child"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup(data: Path):
    keras().utils.set_random_seed(0)
    tok = Tokenizer()
    model_cfg, train_cfg = ModelConfig(vocab_size=tok.vocab_size), TrainConfig()
    sampler = WindowSampler(training_tokens(data, tok), train_cfg.seq_len,
                            train_cfg.batch_size, transpose_tables(tok, train_cfg))
    return model_cfg, train_cfg, sampler.dataset(seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=corpus.DATASET)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # TensorFlow's default threading
        model_cfg, train_cfg, pipeline = setup(args.data)
        model = compiled_model(model_cfg, train_cfg)
        step = best_step_times(model, {"pipeline": pipeline}, args.steps)["pipeline"]
        threading = tensorflow().config.threading
        print(json.dumps({"step": step, "matmul": matmul_flops(),
                          "threads": [threading.get_intra_op_parallelism_threads(),
                                      threading.get_inter_op_parallelism_threads()]}))
        return
    default = default_threads_figures(args)
    tuned = tune_cpu_threads()  # what `melody train` does
    tf = tensorflow()
    model_cfg, train_cfg, pipeline = setup(args.data)
    tokens_per_step = train_cfg.batch_size * train_cfg.seq_len
    in_memory = pipeline.take(1).cache().repeat()

    model = compiled_model(model_cfg, train_cfg)
    best = best_step_times(model, {"pipeline": pipeline, "memory": in_memory}, args.steps)
    step_pipeline, step_memory = best["pipeline"], best["memory"]
    batch_alone = time_pipeline(pipeline, 200)
    # this machine's dense rate: the higher of the two threadings' figures
    peak_tuned = matmul_flops()
    peak = max(default["matmul"], peak_tuned)

    tps = tokens_per_step / step_pipeline
    achieved = 3 * flops_per_token(model_cfg) * tps
    threads = (tf.config.threading.get_intra_op_parallelism_threads(),
               tf.config.threading.get_inter_op_parallelism_threads())
    print(f"machine: {usable_cores()} cores, devices "
          f"{[d.name for d in tf.config.list_logical_devices()]}; melody's threading "
          f"{'applied' if tuned else 'NOT applied'}: {threads[0]} per op, {threads[1]} ops at a time")
    print(f"default model: {model.count_params():,} parameters, "
          f"{flops_per_token(model_cfg) / 1e6:.2f} MFLOP/token forward")
    print(f"training: {tps:,.0f} tokens/s ({step_pipeline * 1e3:.0f} ms per step of "
          f"{tokens_per_step} tokens)")
    print(f"TensorFlow's default threading ({default['threads'][0] or 'all'} per op, "
          f"{default['threads'][1] or 'all'} at a time): "
          f"{tokens_per_step / default['step']:,.0f} tokens/s; "
          f"melody's / default = {default['step'] / step_pipeline:.2f}x")
    print(f"achieved: {achieved / 1e9:.1f} GFLOP/s (forward+backward = 3x forward); "
          f"dense 1024x1024 matmuls on all cores here: {peak / 1e9:.1f} GFLOP/s "
          f"(default threading {default['matmul'] / 1e9:.1f}, melody's {peak_tuned / 1e9:.1f}); "
          f"ratio {achieved / peak:.2f}")
    print(f"input pipeline alone: {batch_alone * 1e3:.2f} ms per batch = "
          f"{batch_alone / step_pipeline:.4f} of a training step "
          f"({step_pipeline / batch_alone:,.0f}x faster than the model eats)")
    print(f"training on one in-memory batch: {tokens_per_step / step_memory:,.0f} tokens/s; "
          f"pipeline-fed / in-memory = {step_memory / step_pipeline:.2f} "
          f"(1.00 means the model never waits for data)")


if __name__ == "__main__":
    main()
