"""A 1600x600 piano-roll PNG of any ``pretty_midi.PrettyMIDI``: pitch names, bar lines, a colour per track."""

from __future__ import annotations

import io

import numpy as np

from melody.fileio import atomic_write_bytes
from melody.notes import PITCH_NAMES
from melody.outputs.audio import music_end

# The piano roll is always this size so that it can be laid out and tested.
PNG_SIZE_INCHES = (16.0, 6.0)
PNG_DPI = 100  # -> 1600 x 600 pixels


def pitch_name(pitch: int) -> str:
    """C4 = 60."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def write_png(pm, path, title=None) -> None:
    """A 1600x600 piano roll: pitch names, bar lines and bar numbers, one colour per track."""
    atomic_write_bytes(path, png_bytes(pm, title))


def png_bytes(pm, title=None) -> bytes:
    """The PNG ``write_png`` writes, rendered in memory."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=PNG_SIZE_INCHES, dpi=PNG_DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    tracks = _roll_tracks(pm)
    pitches = [n.pitch for _, inst in tracks for n in inst.notes] or [60]
    low, high = min(pitches) - 2, max(pitches) + 2
    end = max(music_end(pm), 1e-3)
    _draw_keys(ax, low, high)
    _draw_bars(ax, pm, end)
    _draw_notes(ax, tracks)
    ax.set_xlim(0, end)
    ax.set_ylim(low - 0.5, high + 0.5)
    ax.set_title(_roll_title(pm, title), loc="left")
    if len(tracks) > 1:
        ax.legend(loc="upper right", fontsize=9, framealpha=0.9)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.09)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return buffer.getvalue()


def _roll_tracks(pm) -> list:
    """(label, instrument) of the tracks to draw: drums only when nothing else sounds."""
    import pretty_midi

    pitched = [i for i in pm.instruments if i.notes and not i.is_drum]
    shown = pitched or [i for i in pm.instruments if i.notes]
    labels = []
    for i in shown:
        label = i.name.strip() or ("Drums" if i.is_drum else
                                   pretty_midi.program_to_instrument_name(i.program))
        labels.append(label)
    return list(zip(labels, shown))


def _draw_keys(ax, low: int, high: int) -> None:
    """Grey rows for black keys; names on the white keys (fewer when the range is wide)."""
    for p in range(low, high + 1):
        if p % 12 in (1, 3, 6, 8, 10):
            ax.axhspan(p - 0.5, p + 0.5, color="#f0f0f0", zorder=0, lw=0)
    span = high - low
    named = (0, 2, 4, 5, 7, 9, 11) if span <= 48 else (0, 7) if span <= 96 else (0,)
    ticks = [p for p in range(low, high + 1) if p % 12 in named]
    ax.set_yticks(ticks, [pitch_name(p) for p in ticks])
    for p in range(low, high + 1):
        if p % 12 == 0:
            ax.axhline(p - 0.5, color="#c8c8c8", lw=0.8, zorder=0)
    ax.set_ylabel("pitch")


def _draw_bars(ax, pm, end: float) -> None:
    """Bar lines at the downbeats, lighter beat lines, bars numbered on the x axis."""
    downbeats = [t for t in pm.get_downbeats() if t <= end + 1e-6]
    for t in pm.get_beats():
        ax.axvline(t, color="#e4e4e4", lw=0.6, zorder=0.5)
    for t in downbeats:
        ax.axvline(t, color="#909090", lw=1.0, zorder=0.6)
    every = max(1, int(np.ceil(len(downbeats) / 40)))
    ticks = downbeats[::every]
    ax.set_xticks(ticks, [str(1 + i * every) for i in range(len(ticks))])
    ax.set_xlabel("bar")


def _draw_notes(ax, tracks) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    colors = ["#1f6fb4", "#e0701b", "#2a9d3a", "#c62d2d", "#8457b5",
              "#8c564b", "#d459b0", "#6b6b6b", "#a8a81c", "#17a7b8"]
    for k, (label, inst) in enumerate(tracks):
        color = colors[k % len(colors)]
        boxes = [Rectangle((n.start, n.pitch - 0.4), max(n.end - n.start, 1e-3), 0.8)
                 for n in inst.notes]
        edge = tuple(0.6 * c for c in to_rgba(color)[:3])
        ax.add_collection(PatchCollection(boxes, facecolor=color, edgecolor=edge,
                                          linewidth=0.6, zorder=2, label=label))


def _roll_title(pm, title) -> str:
    import pretty_midi

    facts = []
    _, tempi = pm.get_tempo_changes()
    if len(tempi):
        facts.append(f"{tempi[0]:.0f} BPM")
    if pm.time_signature_changes:
        ts = pm.time_signature_changes[0]
        facts.append(f"{ts.numerator}/{ts.denominator}")
    if pm.key_signature_changes:
        facts.append(pretty_midi.key_number_to_key_name(pm.key_signature_changes[0].key_number))
    head = title or "piano roll"
    return f"{head}    ({', '.join(facts)})" if facts else head
