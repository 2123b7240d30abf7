"""The sampler: a NumPy GRU that reads ``model.keras`` and writes valid token sequences.

Generation never imports TensorFlow: the weights are read straight from the
Keras file (a zip holding ``config.json`` and ``model.weights.h5``) and the
network runs one token at a time for the whole batch, carrying its state, so
a prefix is never run twice.

Every step the model's logits pass through ``next_token_probs`` (temperature,
constraint mask, top-k, top-p, in that order) and one token per melody is
drawn. The mask comes from ``Constraints``: the tokenizer grammar, the time
position of each melody (BAR exactly on bar lines, nothing crossing the end
of ``--bars``), the key and pitch range, and the stopping rules. With a key,
``Constraints.bias`` also adds a key prior to the pitch logits: a model's
KEY token alone leaves about a fifth of melodies sounding in a neighbouring
key (as it does for the folk corpus's own tunes).

>>> from melody.tokenizer import Tokenizer
>>> tok = Tokenizer()
>>> c = Constraints(tok, SampleConfig(n=2, bars=1), batch=2)
>>> bool(c.mask()[0, tok.key_offset])  # after BOS: a KEY token may come
True
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melody.notes import Key
from melody.tokenizer import BAR, BOS, EOS, Tokenizer

# -- the network ----------------------------------------------------------------


@dataclass(frozen=True)
class GRULayer:
    """One Keras GRU cell's weights; gate order is update, reset, candidate."""

    kernel: np.ndarray  # [inputs, 3 units]
    recurrent: np.ndarray  # [units, 3 units]
    bias: np.ndarray  # [3 units], the input bias
    recurrent_bias: np.ndarray | None  # [3 units]; only with reset_after
    reset_after: bool

    @property
    def units(self) -> int:
        return self.recurrent.shape[0]

    def step(self, x_proj: np.ndarray, h: np.ndarray) -> np.ndarray:
        """New state from the projected input ``x @ kernel + bias`` and state ``h``."""
        u = self.units
        if self.reset_after:
            hr = h @ self.recurrent + self.recurrent_bias
            z = _sigmoid(x_proj[:, :u] + hr[:, :u])
            r = _sigmoid(x_proj[:, u:2 * u] + hr[:, u:2 * u])
            candidate = np.tanh(x_proj[:, 2 * u:] + r * hr[:, 2 * u:])
        else:
            hr = h @ self.recurrent[:, :2 * u]
            z = _sigmoid(x_proj[:, :u] + hr[:, :u])
            r = _sigmoid(x_proj[:, u:2 * u] + hr[:, u:])
            candidate = np.tanh(x_proj[:, 2 * u:] + (r * h) @ self.recurrent[:, 2 * u:])
        return z * h + (1.0 - z) * candidate


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


class NumpyGRU:
    """embedding -> GRU layers -> logits, one step at a time, in NumPy.

    Args:
        embedding: [vocab, embedding] table.
        layers: the GRU layers, first to last.
        logits_kernel, logits_bias: the output Dense layer.
    """

    def __init__(self, embedding, layers, logits_kernel, logits_bias):
        self.layers = list(layers)
        self.logits_kernel = logits_kernel
        self.logits_bias = logits_bias
        first = self.layers[0]
        # The first layer's input projection depends only on the token: a lookup.
        self.input_table = embedding @ first.kernel + first.bias

    @property
    def vocab_size(self) -> int:
        return self.logits_bias.shape[0]

    @classmethod
    def load(cls, folder) -> "NumpyGRU":
        """Read ``folder/model.keras``; raises ModelFolderError when it is not our model."""
        return cls(*read_keras_weights(Path(folder) / "model.keras"))

    def initial_state(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, layer.units), np.float32) for layer in self.layers]

    def step(self, tokens, state):
        """Logits [batch, vocab] for the next token after ``tokens`` [batch], and the new state."""
        x_proj = self.input_table[np.asarray(tokens, dtype=np.int64)]
        new_state = []
        for i, (layer, h) in enumerate(zip(self.layers, state)):
            if i:
                x_proj = x @ layer.kernel + layer.bias
            x = layer.step(x_proj, h)
            new_state.append(x)
        return x @ self.logits_kernel + self.logits_bias, new_state

    def run(self, tokens, state=None):
        """Feed [batch, time] tokens step by step: logits [batch, time, vocab] and the state."""
        tokens = np.asarray(tokens)
        state = state if state is not None else self.initial_state(tokens.shape[0])
        out = []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t], state)
            out.append(logits)
        return np.stack(out, axis=1), state


def _snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``: how the weights file names each layer."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read_keras_weights(path):
    """(embedding, [GRULayer], logits kernel, logits bias) from a Keras 3 ``.keras`` file.

    Keras stores a functional model's weights under ``layers/<class in snake
    case>[_<n>]`` in the order of the architecture's layer list, so the
    architecture names which group belongs to which of our layers.
    """
    import h5py

    from melody.model import ModelFolderError

    try:
        with zipfile.ZipFile(path) as z:
            arch = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFolderError(f"{path}: not a Keras 3 model file ({e})")
    layers, groups, used = {}, {}, {}
    for layer in arch.get("config", {}).get("layers", []):
        _check_layer(path, layer)
        base = _snake_case(layer["class_name"])
        used[base] = used.get(base, -1) + 1
        groups[layer["name"]] = base if used[base] == 0 else f"{base}_{used[base]}"
        layers[layer["name"]] = layer
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            def variables(name, sub="vars"):
                if name not in groups:
                    raise ModelFolderError(f"{path}: no layer named {name!r}; not a melody model")
                group = h5["layers"][groups[name]][sub]
                return [np.asarray(group[str(i)], dtype=np.float32) for i in range(len(group))]

            (embedding,) = variables("embedding")
            grus = []
            for i in range(len([n for n in layers if re.fullmatch(r"gru_\d+", n)])):
                cfg = layers[f"gru_{i}"]["config"]
                _check_gru(path, cfg)
                kernel, recurrent, bias = variables(f"gru_{i}", "cell/vars")
                rec_bias = bias[1] if cfg["reset_after"] else None
                bias = bias[0] if cfg["reset_after"] else bias
                grus.append(GRULayer(kernel, recurrent, bias, rec_bias, cfg["reset_after"]))
            logits_kernel, logits_bias = variables("logits")
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, ModelFolderError):
            raise
        raise ModelFolderError(f"{path}: weights unreadable ({type(e).__name__}: {e})")
    if not grus:
        raise ModelFolderError(f"{path}: no GRU layers named gru_0...; not a melody model")
    return embedding, grus, logits_kernel, logits_bias


KNOWN_LAYERS = ("InputLayer", "Embedding", "GRU", "Dropout", "Dense")


def _check_layer(path, layer: dict) -> None:
    """Refuse layers the NumPy sampler would silently skip (a Lambda most of all)."""
    from melody.model import ModelFolderError

    kind = layer.get("class_name")
    if kind == "Lambda":
        raise ModelFolderError(f"{path}: Lambda layers are refused (they can run arbitrary code)")
    if kind not in KNOWN_LAYERS:
        raise ModelFolderError(f"{path}: layer {layer.get('name')!r} is a {kind}; a melody "
                               f"model has only {', '.join(KNOWN_LAYERS)} layers")


def _check_gru(path, cfg: dict) -> None:
    from melody.model import ModelFolderError

    expected = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True,
                "go_backwards": False}
    for name, value in expected.items():
        if cfg.get(name, value) != value:
            raise ModelFolderError(
                f"{path}: GRU {cfg.get('name')} has {name}={cfg.get(name)!r}; "
                f"the sampler supports only {name}={value!r}"
            )


# -- choosing the next token ------------------------------------------------------


def next_token_probs(logits, allowed, temperature=1.0, top_k=None, top_p=None,
                     bias=None) -> np.ndarray:
    """Probabilities [batch, vocab] from logits: temperature, bias, mask, top-k, top-p.

    ``bias`` (log-probabilities, [vocab]) is added after the temperature: a
    prior multiplied into the model's distribution. Masked tokens get
    probability exactly 0. Every row of ``allowed`` must allow a token.
    """
    logits = np.asarray(logits, np.float64) / temperature
    if bias is not None:
        logits = logits + bias
    logits = np.where(allowed, logits, -np.inf)
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


def draw(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """One token per row by inverting the cumulative distribution at ``uniforms`` in [0, 1)."""
    cdf = np.cumsum(probs, axis=1)
    return (cdf <= (uniforms * cdf[:, -1])[:, None]).sum(axis=1).clip(max=probs.shape[1] - 1)


# -- what may come next -------------------------------------------------------------


@dataclass(frozen=True)
class SampleConfig:
    """What to sample: how many, how long, how adventurous, under which constraints.

    ``notes`` and ``bars`` are exclusive; with neither, melodies stop after 64 notes.
    ``key`` forces the KEY token and the key's scale; ``key_strength`` scales
    the key profile's log-weights added to pitch logits and ``key_balance``
    the pull toward pitch classes the melody has under-used so far.
    ``lowest``/``highest`` bound the pitches.
    """

    n: int = 4
    notes: int | None = None
    bars: int | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    key: str | None = None
    key_strength: float = 1.0
    key_balance: float = 10.0
    lowest: int | None = None
    highest: int | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.notes is not None and self.bars is not None:
            raise ValueError("give notes or bars, not both")
        for name in ("notes", "bars", "top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be greater than 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in range (0, 1], got {self.top_p}")

    @property
    def max_notes(self) -> int | None:
        if self.bars is not None:
            return None
        return self.notes if self.notes is not None else 64


_NO_LIMIT = np.iinfo(np.int64).max // 4
# Aarden's scale-degree weights from the Essen folk songs (Humdrum keycor; the
# profile music21 uses for ``analyze("key")``), tonic first.
_AARDEN_MAJOR = np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587,
                          0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122])
_AARDEN_MINOR = np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362,
                          0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623])


class Constraints:
    """Per-melody position in the piece, and the mask of tokens that may come next.

    Hard rules (never relaxed): the grammar; BAR exactly when a bar line is
    reached (the first BAR may come earlier: a pickup); rests never cross a bar
    line; EOS only right after a BAR on a bar line when the meter is known;
    with ``bars`` nothing crosses the end line and EOS comes exactly there; the
    forced KEY, the key's scale and the pitch range; rests merged as the
    tokenizer writes them. Soft rules, dropped for a melody only when they
    would leave it no token: stop after ``notes`` notes (closing with a rest
    to the bar line), open on a tonic-triad note and end on the tonic when a
    key is given, at least one note before EOS.
    """

    def __init__(self, tokenizer: Tokenizer, config: SampleConfig, batch: int):
        self.tok, self.config, self.batch = tokenizer, config, batch
        tok = tokenizer
        V = tok.vocab_size
        ids = np.arange(V)
        self.steps = tok.steps_of(ids)
        self.is_pitch, self.is_dur, self.is_rest = tok.is_pitch(ids), tok.is_dur(ids), tok.is_rest(ids)
        self.pitch_of = np.where(self.is_pitch, ids - tok.pitch_offset + tok.config.lowest_pitch, -1)
        self.dur_max = tok.dur_offset + tok.config.max_duration - 1
        self.rest_max = tok.rest_offset + tok.config.max_duration - 1
        self.is_key = (ids >= tok.key_offset) & (ids < tok.ts_offset)
        self.is_ts = (ids >= tok.ts_offset) & (ids < tok.pitch_offset)
        self.bar_of_ts = np.zeros(V, np.int64)
        for t in ids[self.is_ts]:
            ts = tok.ts_of(t)
            self.bar_of_ts[t] = ts[0] * tok.config.steps_per_quarter * 4 // ts[1] if ts else 0
        self.key = Key.parse(config.key) if config.key else None
        self.header_ok = np.ones(V, bool)
        if self.key is not None:
            self.header_ok[self.is_key] = False
            self.header_ok[tok.key_id(self.key)] = True
        if config.bars is not None:
            self.header_ok[tok.ts_id(None)] = False  # bars need a meter
        self.pitch_ok = self._pitch_mask()
        self.prior = self._key_prior() if self.key is not None else None
        self.tonic_ok = self._degrees_ok([0])
        self.triad_ok = self._degrees_ok([0, 4 if self.key and self.key.mode == "major" else 3, 7])
        self.budget = 8 * config.max_notes + 64 if config.max_notes else _NO_LIMIT

        B = batch
        self.last = np.full(B, BOS, np.int64)
        self.pos = np.zeros(B, np.int64)
        self.bar = np.zeros(B, np.int64)  # 0: no meter (yet)
        self.next_bar = np.full(B, -1, np.int64)  # -1: before the first BAR
        self.end = np.full(B, _NO_LIMIT, np.int64)
        self.notes = np.zeros(B, np.int64)
        self.last_pitch = np.full(B, -1, np.int64)
        self.pc_steps = np.zeros((B, 12))  # how long each pitch class has sounded
        self.tokens = np.zeros(B, np.int64)
        self.done = np.zeros(B, bool)

    def _pitch_mask(self) -> np.ndarray:
        c, tok = self.config, self.tok
        low = tok.config.lowest_pitch if c.lowest is None else c.lowest
        high = tok.config.highest_pitch if c.highest is None else c.highest
        ok = self.is_pitch & (self.pitch_of >= low) & (self.pitch_of <= high)
        if self.key is not None:
            ok &= np.isin(self.pitch_of % 12, sorted(self.key.scale_pitch_classes()))
        if not ok.any():
            key = f" in {self.key.name}" if self.key else ""
            raise ValueError(
                f"no pitch{key} between lowest {low} and highest {high}; "
                f"the model knows {tok.config.lowest_pitch}..{tok.config.highest_pitch}"
            )
        return ok

    def _degrees_ok(self, degrees) -> np.ndarray:
        """Allowed pitch tokens on these scale degrees (all pitches without a key)."""
        if self.key is None:
            return self.is_pitch.copy()
        return self.pitch_ok & np.isin((self.pitch_of - self.key.tonic) % 12, degrees)

    def _key_prior(self) -> np.ndarray:
        """Log-weights of the key's pitch classes on the pitch tokens, 0 elsewhere.

        A model's KEY token is a hint it may ignore (folk tunes drift to the
        dominant or a mode); the prior tilts its pitch choices toward how often
        each scale degree sounds in folk melodies in that key.
        """
        profile = _AARDEN_MAJOR if self.key.mode == "major" else _AARDEN_MINOR
        self.profile = profile
        degree = (self.pitch_of - self.key.tonic) % 12
        weights = np.log(profile / profile.max())[degree]
        return np.where(self.is_pitch, self.config.key_strength * weights, 0.0)

    def bias(self):
        """Log-prior [batch, vocab] added to the logits, or None without a key.

        The key profile, plus a pull toward it for pitch classes the melody
        has so far under-used (and away from over-used ones), so the whole
        melody's balance ends near the key's.
        """
        if self.prior is None:
            return None
        target = self.profile / self.profile.sum()
        total = self.pc_steps.sum(axis=1, keepdims=True)
        share = np.divide(self.pc_steps, total, out=np.zeros_like(self.pc_steps), where=total > 0)
        degree_gap = np.roll(target, self.key.tonic)[None, :] - share  # [batch, 12]
        pull = self.config.key_balance * degree_gap[:, self.pitch_of % 12]
        return self.prior[None, :] + np.where(self.is_pitch[None, :], pull, 0.0)

    # -- state ----------------------------------------------------------------
    def update(self, tokens) -> None:
        """Advance every melody by its chosen token."""
        t = np.asarray(tokens, np.int64)
        ts = self.is_ts[t]
        self.bar = np.where(ts, self.bar_of_ts[t], self.bar)
        is_bar = t == BAR
        first = is_bar & (self.next_bar < 0)
        if self.config.bars is not None:
            self.end = np.where(first, self.pos + self.config.bars * self.bar, self.end)
        self.next_bar = np.where(first, self.pos + self.bar, self.next_bar)
        self.next_bar = np.where(is_bar & ~first, self.next_bar + self.bar, self.next_bar)
        self.pos += self.steps[t]
        pitch = self.is_pitch[t]
        self.notes += pitch
        self.last_pitch = np.where(pitch, self.pitch_of[t], self.last_pitch)
        dur = np.flatnonzero(self.is_dur[t] & (self.last_pitch >= 0))
        self.pc_steps[dur, self.last_pitch[dur] % 12] += self.steps[t[dur]]
        self.done |= t == EOS
        self.tokens += 1
        self.last = t

    def start_continuation(self) -> None:
        """Count notes, tokens and bars from here on (after a primer)."""
        self.notes[:] = 0
        self.tokens[:] = 0
        if self.config.bars is not None:
            known = self.next_bar >= 0
            self.end = np.where(known, self.next_bar + (self.config.bars - 1) * self.bar, self.end)

    # -- the mask ---------------------------------------------------------------
    def mask(self) -> np.ndarray:
        """allowed[batch, vocab]: the hard rules, plus the soft ones where they leave a choice."""
        hard = self._hard()
        allowed = hard & self._soft(hard)
        stuck = ~allowed.any(axis=1)
        allowed[stuck] = hard[stuck]
        if not allowed.any(axis=1).all():
            raise RuntimeError("sampler constraints left a melody no valid token")
        return allowed

    def _hard(self) -> np.ndarray:
        tok = self.tok
        allowed = tok.grammar[self.last].copy()
        allowed &= self.header_ok | ~(self.is_key | self.is_ts)
        allowed[:, self.is_pitch] &= self.pitch_ok[self.is_pitch]
        # Rests merge into one token as the tokenizer writes them (REST_max may continue).
        allowed[(self.is_rest[self.last] & (self.last != self.rest_max))[:, None] & self.is_rest] = False
        metered = self.bar > 0
        known = self.next_bar >= 0
        # Before the first BAR comes a pickup, shorter than a bar (the tokenizer
        # writes BAR first when the melody starts on a downbeat).
        pickup = metered & ~known
        note_room = np.where(pickup, self.bar - 1, self.end) - self.pos
        line = np.where(known, np.minimum(self.next_bar, self.end), _NO_LIMIT)
        rest_room = np.where(pickup, self.bar - 1, line) - self.pos
        allowed &= ~(self.is_dur & (self.steps > note_room[:, None]))
        allowed &= ~(self.is_rest & (self.steps > rest_room[:, None]))
        allowed[:, self.is_pitch] &= (note_room >= 1)[:, None]
        at_line = known & (self.pos >= self.next_bar)
        allowed[:, BAR] &= at_line | pickup
        # A bar line reached: BAR now (a long note may still add DUR tokens first).
        forced = at_line[:, None] & ~(self.is_dur[None, :] & (self.last == self.dur_max)[:, None])
        forced[:, BAR] = False
        allowed &= ~forced
        on_line = known & (self.pos == self.next_bar - self.bar) & (self.last == BAR)
        eos_ok = np.where(metered, on_line, True)
        if self.config.bars is not None:
            eos_ok &= self.pos == self.end
        allowed[:, EOS] &= eos_ok
        # The end of --bars reached, or EOS already out: only EOS.
        only_eos = self.done | (on_line & (self.pos == self.end))
        allowed[only_eos] = False
        allowed[only_eos, EOS] = True
        return allowed

    def _soft(self, hard: np.ndarray) -> np.ndarray:
        c = self.config
        soft = np.ones_like(hard)
        soft[:, EOS] = self.notes >= 1
        if c.max_notes is not None:
            closing = (self.notes >= c.max_notes) | (self.tokens >= self.budget)
            soft[closing[:, None] & self.is_pitch[None, :]] = False
            finish = closing & hard[:, EOS]
            soft[finish] = False
            soft[finish, EOS] = True
            # Otherwise fill the bar with one rest so the melody ends on its line.
            fill = np.minimum(self.next_bar - self.pos, self.tok.config.max_duration)
            rest_fill = self.is_rest[None, :] & (self.steps[None, :] != fill[:, None])
            soft &= ~((closing & ~finish & (self.next_bar >= 0))[:, None] & rest_fill)
            # Without a meter a melody ends after a note, never after a rest.
            soft &= ~((closing & (self.bar == 0))[:, None] & self.is_rest[None, :])
        if self.key is not None:
            on_tonic = (self.last_pitch >= 0) & (self.last_pitch % 12 == self.key.tonic)
            soft[:, EOS] &= on_tonic
            # Open on a tonic-triad note: with the final tonic it frames the key.
            soft[(self.notes == 0)[:, None] & self.is_pitch[None, :] & ~self.triad_ok[None, :]] = False
            if c.max_notes is not None:
                last_note = self.notes == c.max_notes - 1
                soft[last_note[:, None] & self.is_pitch[None, :] & ~self.tonic_ok[None, :]] = False
            if c.bars is not None:
                # A note other than the tonic must leave time for one after it.
                room = self.end - self.pos
                soft[(room < 2)[:, None] & self.is_pitch[None, :] & ~self.tonic_ok[None, :]] = False
                ends = (self.is_dur | self.is_rest)[None, :] & (
                    self.pos[:, None] + self.steps[None, :] == self.end[:, None]
                )
                soft &= ~(ends & ~on_tonic[:, None])
        return soft


# -- the sampling loop -----------------------------------------------------------------


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
           key_logp: np.ndarray | None = None):
    """``config.n`` token sequences, each from BOS to EOS, sampled together.

    ``primer``: tokens from BOS on (no EOS) that every melody continues; with
    ``config.key`` its KEY token is replaced. ``key_logp`` (from ``key_prior``)
    replaces the model's choice of KEY after BOS. Returns a list of int arrays,
    the primer included.
    """
    c = config
    if model.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"model has {model.vocab_size} outputs but the tokenizer has {tokenizer.vocab_size} tokens"
        )
    constraints = Constraints(tokenizer, c, c.n)
    prefix = np.array([BOS] if primer is None else primer, dtype=np.int64)
    prefix = _check_prefix(prefix, tokenizer, constraints)
    for t in prefix[1:]:
        constraints.update(np.full(c.n, t))
    constraints.start_continuation()
    # The shared prefix runs once, for one melody; its state is copied to all.
    logits, state = model.run(prefix[None, :])
    logits = np.repeat(logits[:, -1], c.n, axis=0)
    if key_logp is not None and len(prefix) == 1:
        logits = np.repeat(key_logp[None, :], c.n, axis=0)
    state = [np.repeat(h, c.n, axis=0) for h in state]
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(c.seed).spawn(c.n)]
    out = [list(prefix) for _ in range(c.n)]
    rows = np.arange(c.n)  # melodies still going; finished ones leave the batch
    for _ in range(1_000_000):
        allowed = constraints.mask()[rows]
        bias = constraints.bias()
        probs = next_token_probs(logits, allowed, c.temperature, c.top_k, c.top_p,
                                 None if bias is None else bias[rows])
        tokens = draw(probs, np.array([rngs[i].random() for i in rows]))
        chosen = np.full(c.n, EOS)
        chosen[rows] = tokens
        constraints.update(chosen)
        for i, t in zip(rows, tokens):
            out[i].append(int(t))
        going = ~constraints.done[rows]
        if not going.any():
            return [np.asarray(row, dtype=np.int32) for row in out]
        rows, tokens = rows[going], tokens[going]
        logits, state = model.step(tokens, [h[going] for h in state])
    raise RuntimeError("sampling did not finish")


def _check_prefix(prefix, tokenizer, constraints) -> np.ndarray:
    if prefix[0] != BOS or not tokenizer.is_valid(prefix) or EOS in prefix:
        raise ValueError("primer tokens must start with BOS, obey the grammar and have no EOS")
    if len(prefix) > 1 and constraints.key is not None:
        prefix = prefix.copy()
        prefix[1] = tokenizer.key_id(constraints.key)
    if len(prefix) > 2 and not constraints.header_ok[prefix[2]]:
        raise ValueError("--bars needs a time signature, and the primer has none")
    return prefix
