"""Training scalars for TensorBoard (or JSON lines under Keras backends without TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path


class TensorBoardLog:
    """Scalars in TensorBoard's event format, written with core TensorFlow only.

    (``tf.summary.scalar`` needs the tensorboard package; ``tf.summary.write``
    with the scalars plugin's metadata does not.) Other Keras backends get
    :class:`JsonLinesLog` instead (see :func:`scalar_log`).
    """

    def __init__(self, folder: Path):
        from tensorflow.core.framework import summary_pb2

        from melody.backend import tensorflow

        self.tf = tensorflow()
        self.writer = self.tf.summary.create_file_writer(str(folder))
        plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        self.metadata = summary_pb2.SummaryMetadata(plugin_data=plugin)

    def write(self, step: int, scalars: dict) -> None:
        with self.writer.as_default(step=step):
            for tag, value in scalars.items():
                self.tf.summary.write(tag, self.tf.constant(float(value), self.tf.float32),
                                      metadata=self.metadata)
        self.writer.flush()


class JsonLinesLog:
    """The same scalars as :class:`TensorBoardLog`, one JSON object per line in
    ``scalars.jsonl``: for Keras backends without TensorFlow (tf.summary)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "scalars.jsonl"

    def write(self, step: int, scalars: dict) -> None:
        from melody.fileio import atomic_write_text

        line = {"step": step, **{tag: float(value) for tag, value in scalars.items()}}
        before = self.path.read_text() if self.path.exists() else ""
        atomic_write_text(self.path, before + json.dumps(line) + "\n")  # a few KB a run


def scalar_log(folder: Path):
    """TensorBoard event files under TensorFlow, ``scalars.jsonl`` under other backends."""
    from melody.backend import backend_name

    return TensorBoardLog(folder) if backend_name() == "tensorflow" else JsonLinesLog(folder)
