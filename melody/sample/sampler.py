"""The sampler: logits -> temperature, key bias, mask, top-k, top-p -> one token per melody.

Every step the network's logits pass through ``next_token_probs`` (temperature,
constraint mask, top-k, top-p, in that order) and one token per melody is
drawn with its own seeded generator, so the same seed gives the same melodies.
The mask comes from ``Constraints``: the tokenizer grammar, the time position
of each melody (BAR exactly on bar lines, nothing crossing the end of
``bars``), the key and pitch range, and the stopping rules. With a key,
``Constraints.bias`` also adds a key prior to the pitch logits: a model's KEY
token alone leaves about a fifth of melodies sounding in a neighbouring key
(as it does for the folk corpus's own tunes).

>>> from melody.tokenizer import Tokenizer
>>> tok = Tokenizer()
>>> c = Constraints(tok, SampleConfig(n=2, bars=1), batch=2)
>>> bool(c.mask()[0, tok.key_offset])  # after BOS: a KEY token may come
True
"""

from __future__ import annotations

import copy

import numpy as np

from melody.config import SampleConfig
from melody.context import Tracker
from melody.sample.constraints import Constraints
from melody.sample.form import Form, collection_plan, section_plan
from melody.sample.network import NumpyGRU
from melody.tokenizer import BOS, EOS, Tokenizer


def next_token_probs(logits, allowed, temperature=1.0, top_k=None, top_p=None,
                     bias=None) -> np.ndarray:
    """Probabilities [batch, vocab] from logits: temperature, bias, mask, top-k, top-p.

    ``bias`` (log-probabilities, [vocab]) is added after the temperature: a
    prior multiplied into the model's distribution. Masked tokens get
    probability exactly 0. Every row of ``allowed`` must allow a token.

    Any finite temperature > 0 gives probabilities, never NaN: the logits are
    shifted so the likeliest allowed one is 0 before they are divided (so no
    quotient overflows to infinity and nothing subtracts infinity from
    itself), in float64; as the temperature nears 0 this becomes greedy. A
    token that the bias or the logits rule out (minus infinity) is taken only
    when nothing else is allowed.

    >>> next_token_probs([[1.0, 2.0, 3.0]], [[True, True, False]], temperature=1e-300)
    array([[0., 1., 0.]])
    """
    logits = np.asarray(logits, np.float64)
    allowed = np.asarray(allowed, bool)
    if bias is not None:
        bias = np.asarray(bias, np.float64)
        finite = np.isfinite(bias)
        if not finite.all():
            allowed = _prefer(allowed, finite)
            bias = np.where(finite, bias, 0.0)
    if not np.isfinite(logits).all():
        ruled_out = ~(logits > -np.inf)  # minus infinity, or NaN from a network gone wrong
        allowed = _prefer(allowed, ~ruled_out)
        logits = np.where(ruled_out, 0.0, np.minimum(logits, np.finfo(np.float64).max))
    logits = np.where(allowed, logits, -np.inf)
    with np.errstate(over="ignore"):  # a huge negative quotient is -inf: probability 0
        logits = (logits - logits.max(axis=1, keepdims=True)) / temperature
    if bias is not None:
        logits = logits + bias
    if top_k is not None and top_k < logits.shape[1]:
        kth = -np.partition(-logits, top_k - 1, axis=1)[:, top_k - 1:top_k]
        logits = np.where(logits >= kth, logits, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p is not None:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, axis=1)
        # Keep the smallest prefix whose total reaches top_p (the first token always).
        keep_sorted = np.cumsum(sorted_p, axis=1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def _prefer(allowed: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``allowed & ok`` in the rows where that leaves a token, else ``allowed``."""
    both = allowed & ok
    rows = both.any(axis=1, keepdims=True)
    return both if rows.all() else np.where(rows, both, allowed)


def draw(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """One token per row by inverting the cumulative distribution at ``uniforms`` in [0, 1)."""
    cdf = np.cumsum(probs, axis=1)
    return (cdf <= (uniforms * cdf[:, -1])[:, None]).sum(axis=1).clip(max=probs.shape[1] - 1)


def key_prior(model_config: dict, tokenizer: Tokenizer) -> np.ndarray | None:
    """Log-probabilities [vocab] of the KEY tokens in the model's training collection.

    Training transposes every tune, so the model itself spreads keys evenly;
    sampling the first KEY from the collection's own keys keeps its melodies
    in the keys the collection uses. None when the model folder has no prior.
    """
    prior = model_config.get("key_prior")
    if not prior:
        return None
    logp = np.full(tokenizer.vocab_size, -np.inf)
    for name, p in prior.items():
        if name in tokenizer.ids and p > 0:
            logp[tokenizer.ids[name]] = np.log(p)
    return logp if np.isfinite(logp).any() else None


def sample(model: NumpyGRU, tokenizer: Tokenizer, config: SampleConfig, primer=None,
           key_logp: np.ndarray | None = None, on_finished=None, form_prior=None):
    """``config.n`` token sequences, sampled together; see ``_sample``."""
    from threadpoolctl import threadpool_limits

    # A step is a few small matrix products: extra BLAS threads only wait for each
    # other (many times slower on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        return _sample(model, tokenizer, config, primer, key_logp, on_finished, form_prior)


def _sample(model: NumpyGRU, tokenizer: Tokenizer, config: SampleConfig, primer=None,
            key_logp: np.ndarray | None = None, on_finished=None, form_prior=None):
    """``config.n`` token sequences, each from BOS to EOS, sampled together.

    ``primer``: tokens from BOS on (no EOS) that every melody continues; with
    ``config.key`` its KEY token is replaced. ``key_logp`` (from ``key_prior``)
    replaces the model's choice of KEY after BOS. ``on_finished(k)`` is told
    each time k more melodies are done (a progress bar). ``form_prior`` (the
    model folder's, ``melody.sample.form``): without ``config.form``, a primer or
    ``config.free_form``, each melody follows the form of one of its pieces.
    Returns a list of int arrays, the primer included.
    """
    c = config
    if model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"model has {model.vocab_size} outputs but the tokenizer has {tokenizer.vocab_size} tokens"
        )
    constraints = Constraints(tokenizer, c, c.n)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(c.seed).spawn(c.n)]
    plans = None
    if c.form:
        plans = [section_plan(c.sections, c.bars)] * c.n
    elif form_prior and primer is None and not c.free_form:
        plans = [collection_plan(form_prior, rng, c.notes, c.bars, c.max_notes) for rng in rngs]
        # each ends where its piece did (or at --bars), on a cadence
        constraints.follow(np.array([c.bars or (p.bars if p else 0) for p in plans]))
    form = Form(tokenizer, plans) if plans else None
    prefix = np.array([BOS] if primer is None else primer, dtype=np.int64)
    prefix = _check_prefix(prefix, tokenizer, constraints)
    for t in prefix[1:]:
        constraints.update(np.full(c.n, t))
    if form is not None:
        if len(prefix) > 1:
            raise ValueError("a form starts the melody: --form cannot continue a --primer")
        form.update(np.full(c.n, BOS))
    constraints.start_continuation()
    # The shared prefix runs once, for one melody; its state is copied to all.
    context = _Context(tokenizer, model.lookback_bars, prefix) if model.lookback else None
    logits, state = model.run(prefix[None, :], context=context and context.of_prefix)
    logits = np.repeat(logits[:, -1], c.n, axis=0)
    if key_logp is not None and len(prefix) == 1:
        logits = np.repeat(key_logp[None, :], c.n, axis=0)
    state = [np.repeat(h, c.n, axis=0) for h in state]
    out = [list(prefix) for _ in range(c.n)]
    rows = np.arange(c.n)  # melodies still going; finished ones leave the batch
    for _ in range(1_000_000):
        allowed = constraints.mask()[rows]
        bias = constraints.bias()
        bias = None if bias is None else bias[rows]
        if form is not None:
            allowed, bias = form.steer(rows, allowed, bias)
        probs = next_token_probs(logits, allowed, c.temperature, c.top_k, c.top_p, bias)
        tokens = draw(probs, np.array([rngs[i].random() for i in rows]))
        chosen = np.full(c.n, EOS)
        chosen[rows] = tokens
        constraints.update(chosen)
        if form is not None:
            form.update(chosen)
        for i, t in zip(rows, tokens):
            out[i].append(int(t))
        going = ~constraints.done[rows]
        if on_finished is not None and not going.all():
            on_finished(int((~going).sum()))
        if not going.any():
            return [np.asarray(row, dtype=np.int32) for row in out]
        rows, tokens = rows[going], tokens[going]
        logits, state = model.step(tokens, [h[going] for h in state],
                                   context and context.push(rows, tokens))
    raise RuntimeError("sampling did not finish")


class _Context:
    """The form context of each melody as it grows (``melody.context.Tracker``), from a
    prefix they all share."""

    def __init__(self, tokenizer: Tokenizer, lookback: tuple[int, ...], prefix):
        tracker = Tracker(tokenizer, lookback)
        rows = [tracker.push(t) for t in prefix.tolist()]
        self.of_prefix = tuple(np.array([r[i] for r in rows])[None] for i in range(3))
        self.tracker, self.trackers = tracker, {}

    def push(self, rows, tokens) -> tuple:
        """Each melody of ``rows`` took its token: the context of its next one."""
        out = []
        for i, t in zip(rows.tolist(), tokens.tolist()):
            if i not in self.trackers:
                self.trackers[i] = copy.deepcopy(self.tracker)
            out.append(self.trackers[i].push(t))
        return (np.array([o[0] for o in out]), np.array([o[1] for o in out]),
                np.array([o[2] for o in out]))


def _check_prefix(prefix, tokenizer, constraints) -> np.ndarray:
    if prefix[0] != BOS or not tokenizer.is_valid(prefix) or EOS in prefix:
        raise ValueError("primer tokens must start with BOS, obey the grammar and have no EOS")
    if len(prefix) > 1 and constraints.key is not None:
        prefix = prefix.copy()
        prefix[1] = tokenizer.key_id(constraints.key)
    if len(prefix) > 2 and not constraints.header_ok[prefix[2]]:
        raise ValueError("--bars needs a time signature, and the primer has none")
    return prefix
