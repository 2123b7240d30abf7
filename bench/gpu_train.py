"""Training throughput on a GPU: cuDNN GRU, float32 against mixed precision.

Run on a machine with a GPU (any Keras backend with a cuDNN GRU; TensorFlow
or, as measured for bench/README.md, PyTorch):

    KERAS_BACKEND=torch python bench/gpu_train.py [--data datasets/folk]

Prints tokens per second for each setting and its ratio to the float32 cuDNN
run measured in the same process, with the card's name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def card_name(backend: str) -> str:
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA)"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU (no GPU)"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def windows(tokens: np.ndarray, n: int, seq_len: int, rng) -> tuple[np.ndarray, np.ndarray]:
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=n)
    w = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)
    return w[:, :-1], w[:, 1:]


def measure(k, tokens, vocab, units, batch, seq_len, policy, reset_after, steps) -> float:
    from melody.model import ModelConfig, build_model

    k.mixed_precision.set_global_policy(policy)
    model = build_model(ModelConfig(vocab_size=vocab, units=units, reset_after=reset_after))
    model.compile(
        optimizer=k.optimizers.Adam(1e-3, clipnorm=1.0),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x, y = windows(tokens, batch * (steps + 3), seq_len, rng)
    model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # warm-up
    t = time.perf_counter()
    model.fit(x[batch * 3:], y[batch * 3:], batch_size=batch, epochs=1, verbose=0)
    seconds = time.perf_counter() - t
    k.mixed_precision.set_global_policy("float32")
    return batch * steps * seq_len / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="datasets/folk", help="dataset folder (else random tokens)")
    ap.add_argument("--units", type=int, default=320)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batches", default="64,512")
    args = ap.parse_args()

    from melody.backend import keras

    k = keras()
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    path = Path(args.data) / "train.tokens.npy"
    if path.exists():
        tokens = np.load(path)
        vocab = int(tokens.max()) + 1
        source = str(path)
    else:
        tokens = np.random.default_rng(1).integers(4, 364, 2_000_000).astype(np.uint16)
        vocab, source = 364, "random tokens"
    print(f"card: {card_name(backend)}; backend: {backend}; data: {source}; "
          f"model: 2x{args.units} GRU, seq {args.seq_len}")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        base = None
        for policy, reset_after, steps in (
            ("float32", True, args.steps),
            ("mixed_float16", True, args.steps),
            ("mixed_bfloat16", True, args.steps),
            ("float32", False, max(3, args.steps // 10)),  # no cuDNN kernel for this variant
        ):
            try:
                tps = measure(k, tokens, vocab, args.units, batch, args.seq_len, policy, reset_after, steps)
            except Exception as e:  # report and go on: one setting may be unsupported
                print(f"batch {batch:4d} {policy:15s} reset_after={reset_after}: failed ({e})")
                continue
            base = base or tps
            rows.append((batch, policy, reset_after, tps))
            print(f"batch {batch:4d} {policy:15s} reset_after={str(reset_after):5s} "
                  f"{tps:12,.0f} tokens/s  x{tps / base:5.2f} vs float32 cuDNN", flush=True)


if __name__ == "__main__":
    main()
