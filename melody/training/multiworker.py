"""Training one model across processes or machines: ``--strategy multi-worker``.

Every process holds the whole model and reads its own share of each batch
(``--batch-size`` is the batch of the whole run, split evenly, with a seed of
its own). One jitted step computes the process's gradients locally and then
averages them with ONE all-reduce of the whole gradient, flattened into a
single vector, before every process applies the same Adam update; so the
weights stay identical everywhere. (Keras's ``DataParallel`` on the same
mesh leaves the partitioning to XLA, which all-reduced inside the GRU's
backward scan at every time step and trained about 8 times slower.)

Validation is shared: each process scores every N-th piece and the sums are
added. Process 0 alone writes checkpoints, ``config.json`` and the model
folder, which is the same as any other run's; ``--resume`` continues from it
on every process.
"""

from __future__ import annotations

import contextlib
import sys
import time

import numpy as np

from melody.data import TokenData
from melody.errors import UsageError
from melody.scoring import Totals
from melody.training.cluster import Cluster, lost
from melody.training.strategy import AXIS
from melody.training.trainer import Trainer
from melody.training.windows import WindowSampler

class LostProcess(Exception):
    """A collective failed: another process of the run has gone."""


def raise_if_lost(cluster: Cluster, error: Exception) -> None:
    """LostProcess when ``error`` says a collective lost its partner (a Gloo
    connection reset, the coordination service gone); other errors are left alone."""
    text = str(error).lower()
    if any(sign in text for sign in ("gloo", "connection", "unavailable", "socket closed")):
        raise LostProcess(lost(cluster, error)) from error


class MultiWorkerTrainer(Trainer):
    """A ``Trainer`` whose processes share each step, the validation and one model folder."""

    def __init__(self, dataset, out, model_cfg, train_cfg, parent, cluster: Cluster):
        import jax

        super().__init__(dataset, out, model_cfg, train_cfg, parent)
        self.cluster = cluster
        if train_cfg.schedule != "plateau":  # its own loop runs no Keras callbacks
            raise UsageError(f"schedule {train_cfg.schedule} is not available with "
                             "--strategy multi-worker; use the plateau schedule")
        devices = jax.device_count()
        if train_cfg.batch_size % devices:
            raise UsageError(f"--batch-size {train_cfg.batch_size} must split evenly over the "
                             f"run's {devices} devices ({cluster.processes} processes); "
                             f"use a multiple of {devices}")
        s = self.sampler  # this process's share of every batch
        self.sampler = WindowSampler(s.tokens, s.seq_len, train_cfg.batch_size // cluster.processes,
                                     s.tables, s.context, s.transpose_prob, s.identity)
        self._step = None

    # -- setup ----------------------------------------------------------------
    def start(self, strategy):
        self.mesh = strategy.mesh
        super().start(strategy)
        self._same_as_chief()

    def resume(self, strategy, allow_data_change: bool = False):
        self.mesh = strategy.mesh
        super().resume(strategy, allow_data_change)
        self._same_as_chief()

    def _same_as_chief(self) -> None:
        """Every process starts from process 0's weights and optimizer state."""
        from jax.experimental import multihost_utils

        model = self.model
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = list(model.variables) + list(model.optimizer.variables)
        try:
            values = multihost_utils.broadcast_one_to_all([v.value for v in variables])
        except Exception as e:
            raise_if_lost(self.cluster, e)
            raise
        for v, value in zip(variables, values):
            v.assign(np.asarray(value))

    # -- one step ---------------------------------------------------------------
    def _make_step(self):
        """The jitted step: local gradients, one all-reduce, the same update everywhere."""
        import jax
        from jax.flatten_util import ravel_pytree
        from jax.sharding import PartitionSpec as P

        model, loss_fn = self.model, self.model.loss

        def local(trainable, non_trainable, optimizer_vars, x, y, stop):
            def compute(tv):
                logits, nt = model.stateless_call(tv, non_trainable, x, training=True)
                return loss_fn(y, logits), nt

            (loss, nt), grads = jax.value_and_grad(compute, has_aux=True)(trainable)
            flat, unflatten = ravel_pytree(grads)
            # The gradient, the loss and the stop flags travel in one vector, one all-reduce.
            total = jax.lax.pmean(jax.numpy.concatenate([flat, loss[None], stop[:1]]), AXIS)
            grads = unflatten(total[:flat.size])
            trainable, optimizer_vars = model.optimizer.stateless_apply(
                optimizer_vars, grads, trainable)
            return trainable, nt, optimizer_vars, total[flat.size], total[flat.size + 1]

        rep, shard = P(), P(AXIS)
        step = jax.shard_map(local, mesh=self.mesh, in_specs=(rep, rep, rep, shard, shard, shard),
                             out_specs=(rep, rep, rep, rep, rep),
                             check_vma=False)  # Keras's GRU scan starts from an unmarked zero state
        return jax.jit(step, donate_argnums=(0, 1, 2))

    def _global(self, tree, spec):
        from jax.experimental import multihost_utils

        return multihost_utils.host_local_array_to_global_array(tree, self.mesh, spec)

    def fit_epoch(self, epoch: int, callbacks) -> float:
        """One epoch of the custom loop; every process stops at the same step when any
        of them was asked to (Ctrl-C), so none waits for a partner that left."""
        from jax.sharding import PartitionSpec as P

        from melody.backend import keras

        if self._step is None:
            self._step = self._make_step()
        model = self.model
        groups = (model.trainable_variables, model.non_trainable_variables,
                  model.optimizer.variables)
        state = [self._global([np.asarray(v.value) for v in g], P()) for g in groups]
        batches = self.sampler.batches(seed=(self.cfg.seed, epoch, self.cluster.rank))
        bar = keras().utils.Progbar(self.steps, verbose=1 if sys.stderr.isatty() else 0)
        started, losses = time.perf_counter(), []
        with contextlib.redirect_stdout(sys.stderr):
            for i in range(self.steps):
                x, y = next(batches)
                stop = np.full((len(y), 1), float(self.stop.requested), np.float32)[:, 0]
                x, y, stop = self._global((x, y, stop), P(AXIS))
                try:
                    *state, loss, stopping = self._step(*state, x, y, stop)
                    loss, stopping = float(loss.addressable_data(0)), float(stopping.addressable_data(0))
                except Exception as e:
                    raise_if_lost(self.cluster, e)
                    raise
                losses.append(loss)
                bar.update(i + 1, [("loss", loss)])
                if stopping > 0:
                    self.stop.requested = True
                    break
        for group, values in zip(groups, state):
            for v, value in zip(group, values):
                v.assign(np.asarray(value.addressable_data(0)))
        self.progress.train_seconds += time.perf_counter() - started
        return float(np.mean(losses)) if losses else float("nan")

    # -- validation ---------------------------------------------------------------
    def validate(self, scorer) -> dict:
        """Each process scores every N-th piece (by length, so the shares match in work);
        the sums are added across the run."""
        from jax.experimental import multihost_utils

        order = np.argsort(np.diff(self.val_data.offsets), kind="stable")
        mine = order[self.cluster.rank::self.cluster.processes]
        totals = Totals()
        if len(mine):
            totals = scorer.score(TokenData.from_pieces([self.val_data.piece(i) for i in mine]))
        sums = np.array([totals.nll_bits, totals.pitch_nll_bits, totals.tokens, totals.notes,
                         totals.pieces], np.float64)
        high = sums.astype(np.float32)  # JAX gathers 32-bit floats: the rest travels beside
        low = (sums - high).astype(np.float32)
        try:
            gathered = np.asarray(multihost_utils.process_allgather(np.stack([high, low])),
                                  np.float64)
        except Exception as e:
            raise_if_lost(self.cluster, e)
            raise
        nll, pitch_nll, tokens, notes, pieces = gathered.sum(axis=(0, 1))
        return Totals(nll, pitch_nll, int(round(tokens)), int(round(notes)),
                      int(round(pieces))).report()

    # -- saving and the loop --------------------------------------------------------
    def save(self, stopped: bool = False) -> None:
        if self.cluster.is_chief:
            super().save(stopped)

    def save_originality(self) -> None:
        if self.cluster.is_chief:
            super().save_originality()

    def run(self, stop) -> str:
        self.stop = stop
        return super().run(stop)
