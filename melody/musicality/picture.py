"""The musicality picture: every feature, generated against human, in one 1600x1200 PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from melody.musicality.features import FEATURES, features

FIGSIZE = (16, 12)
DPI = 100  # so a PNG is 1600 x 1200 pixels
GRID = (4, 4)
_COLOURS = {"generated": "#d95f02", "human": "#1b9e77"}


def draw(generated, human, path, title: str | None = None, stats: dict | None = None) -> Path:
    """Draw every feature, generated against human, as a 4 x 4 grid in one PNG.

    Histogram features show the sets' mean histograms as paired bars; scalar
    features show each set's distribution of per-melody values, its mean marked.
    With ``stats`` (from ``compare``) each panel also names its Yang-Lerch
    overlap and KL and the overlap of the values themselves. The PNG is
    1600 x 1200 pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from melody.fileio import atomic_path

    sets = {"generated": features(generated), "human": features(human)}
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(*GRID).ravel()
    for ax in axes[len(FEATURES):]:
        ax.set_axis_off()
    for ax, (name, feature) in zip(axes, FEATURES.items()):
        if feature.labels:
            _draw_histogram(ax, sets, name, feature.labels)
        else:
            _draw_scalar(ax, sets, name)
        label = name.replace("_", " ")
        if stats and name in stats:
            s = stats[name]
            label += (f"\noverlap {s['overlap']:.2f}, KL {s['kl']:.2f}, "
                      f"values {s['value_overlap']:.2f}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(feature.axis, fontsize=8)
        ax.tick_params(labelsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=2, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    with atomic_path(path, replace=False) as tmp:  # a file that is there is never replaced
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _draw_histogram(ax, sets: dict, name: str, labels) -> None:
    x = np.arange(len(labels))
    for i, (who, values) in enumerate(sets.items()):
        mean = values[name].mean(0) if len(values[name]) else np.zeros(len(labels))
        ax.bar(x + (i - 0.5) * 0.4, mean, width=0.4, color=_COLOURS[who],
               label=f"{who} ({len(values[name])})")
    step = 1 if len(labels) <= 13 else 3
    ax.set_xticks(x[::step])
    ax.set_xticklabels(labels[::step])
    ax.set_ylabel("share", fontsize=8)


def _draw_scalar(ax, sets: dict, name: str) -> None:
    values = {who: v[name][~np.isnan(v[name])] for who, v in sets.items()}
    both = np.concatenate(list(values.values()))
    low, high = (both.min(), both.max()) if len(both) else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 21)
    for who, v in values.items():
        ax.hist(v, bins=bins, density=True, histtype="stepfilled", alpha=0.45,
                color=_COLOURS[who], label=who)
        if len(v):
            ax.axvline(v.mean(), color=_COLOURS[who], lw=1.5, ls="--")
    ax.set_ylabel("density", fontsize=8)
