"""Comparing two sets of melodies feature by feature, as Yang and Lerch (2018) do.

"On the evaluation of generative models in music", Neural Computing and
Applications 32: per feature, the intra-set distances of the human set and the
inter-set distances (generated x human) are smoothed by a Gaussian KDE, and
the overlap area and the KL divergence of the two densities are reported.
"""

from __future__ import annotations

import numpy as np

from melody.musicality.features import FEATURES, features

KDE_GRID = 1024


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between every row of a and every row of b (absolute difference
    for scalars, Euclidean for histograms)."""
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    if a.shape[1] == 1:
        return np.abs(a - b.T)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def intra_distances(x: np.ndarray) -> np.ndarray:
    """Distances between every pair of different melodies of one set."""
    i, j = np.triu_indices(len(x), k=1)
    return _pairwise(x, x)[i, j]


def inter_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pairwise(x, y).reshape(-1)


def scott_bandwidth(samples: np.ndarray) -> float:
    """Scott's rule for one dimension: std * n^(-1/5), as scipy's gaussian_kde."""
    n = len(samples)
    sd = samples.std(ddof=1) if n > 1 else 0.0
    return float(sd * n ** -0.2)


def kde(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE on an even grid, normalised to integrate to 1 on it.

    Samples are linearly binned onto the grid and convolved with the kernel,
    so the cost does not grow with the number of samples times grid points.
    """
    dx = grid[1] - grid[0]
    pos = np.clip((samples - grid[0]) / dx, 0, len(grid) - 1.000001)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    weights = np.bincount(lo, 1 - frac, minlength=len(grid))
    weights += np.bincount(lo + 1, frac, minlength=len(grid) + 1)[:len(grid)]
    half = int(min(np.ceil(4 * bandwidth / dx), len(grid)))
    offsets = np.arange(-half, half + 1) * dx
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    density = np.convolve(weights, kernel)[half:half + len(grid)]
    return density / (density.sum() * dx)


def overlap_and_kl(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Overlap area of the two KDE densities and KL(reference || other) in nats.

    Choices where the paper leaves room (its code, mgeval, differs in places):
    both densities use the larger of the two Scott bandwidths, so that a set
    whose distances are all equal (common for counts such as pitch classes
    used) is not compared as a spike against a smooth bump; the bandwidth is
    never below 1e-3 of the largest distance; both are evaluated on one grid
    covering every sample plus 4 bandwidths, so identical samples give overlap
    1 and KL 0; densities are floored at 1e-12 so that disjoint sets give a
    large but finite KL.
    """
    reference = np.asarray(reference, float)
    other = np.asarray(other, float)
    scale = max(np.abs(reference).max(), np.abs(other).max(), 1e-9)
    bw = max(scott_bandwidth(reference), scott_bandwidth(other), 1e-3 * scale)
    pad = 4 * bw
    low = min(reference.min(), other.min()) - pad
    high = max(reference.max(), other.max()) + pad
    grid = np.linspace(low, high, KDE_GRID)
    dx = grid[1] - grid[0]
    p = kde(reference, grid, bw)
    q = kde(other, grid, bw)
    overlap = float(np.minimum(p, q).sum() * dx)
    p_safe, q_safe = np.maximum(p, 1e-12), np.maximum(q, 1e-12)
    kl = float((p * np.log(p_safe / q_safe)).sum() * dx)
    return min(overlap, 1.0), max(kl, 0.0)


def compare(generated, human) -> dict:
    """Per feature, how well generated melodies blend into the human set.

    Following Yang and Lerch (2018): ``overlap`` is the overlap area
    and ``kl`` the KL divergence KL(human intra || inter) between the density of
    the human set's intra-set distances and that of the inter-set distances
    (each generated melody against each human one). A generated set drawn from
    the same distribution as the human one gives overlap near 1 and KL near 0.
    ``generated_mean``/``human_mean`` are the feature's means (a list for a
    histogram); ``*_distance`` are the mean distances behind the densities.

    Distances compare spreads, not levels: a generated set whose values all sit
    far below the human ones can still score a high overlap. So every feature
    also gets ``value_overlap``, a direct comparison of its values: for a scalar,
    the overlap area of the two sets' value densities; for a histogram, the
    intersection of the two mean histograms (1 = alike, 0 = disjoint).
    Melodies for which a feature is undefined (NaN: bars without a meter) are
    left out of that feature.
    """
    generated, human = list(generated), list(human)
    for name, items in (("generated", generated), ("human", human)):
        if len(items) < 2:
            raise ValueError(f"{name} melodies must number at least 2, got {len(items)}")
    g, h = features(generated), features(human)
    out = {}
    for name in FEATURES:
        gv, hv = _defined(g[name]), _defined(h[name])
        if len(gv) < 2 or len(hv) < 2:
            continue  # too few melodies with a meter to compare their bars
        intra_h = intra_distances(hv)
        intra_g = intra_distances(gv)
        inter = inter_distances(gv, hv)
        overlap, kl = overlap_and_kl(intra_h, inter)
        out[name] = {
            "overlap": overlap,
            "kl": kl,
            "value_overlap": value_overlap(gv, hv),
            "generated_mean": _plain(gv.mean(0)),
            "human_mean": _plain(hv.mean(0)),
            "generated_intra_distance": float(intra_g.mean()),
            "human_intra_distance": float(intra_h.mean()),
            "inter_distance": float(inter.mean()),
        }
    return out


def _defined(values: np.ndarray) -> np.ndarray:
    """The rows of a feature's values without NaN."""
    return values[~np.isnan(values.reshape(len(values), -1)).any(axis=1)]


def value_overlap(generated: np.ndarray, human: np.ndarray) -> float:
    """How alike two sets' values are, 1 = alike: the overlap area of their
    densities for a scalar feature, the intersection of their mean histograms
    for a histogram.

    >>> round(value_overlap(np.array([0.03, 0.05, 0.02]), np.array([0.31, 0.28, 0.35])), 3)
    0.0
    >>> value_overlap(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.75, 0.25], [0.75, 0.25]]))
    1.0
    """
    if generated.ndim == 2:
        return float(np.minimum(generated.mean(0), human.mean(0)).sum())
    return overlap_and_kl(human, generated)[0]


def _plain(value):
    """A float or a list of floats, ready for JSON."""
    value = np.asarray(value, float)
    return float(value) if value.ndim == 0 else [float(v) for v in value]
