"""Finding the music files of a collection: folders searched recursively, each file once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from melody.data.scratch import Lines
from melody.inputs.files import MUSIC_EXTENSIONS


@dataclass
class Found:
    files: Lines  # [path, unique display name, resolved path] each
    ignored: int = 0
    errors: list = field(default_factory=list)  # folders that could not be listed


def discover(sources, exclude=None, folder=None) -> Found:
    """Music files under ``sources`` (files or folders, recursively, any letter case).

    Each real folder and file is visited once, so symlink loops end; folders
    that cannot be listed are reported, not fatal; ``exclude`` (the dataset
    folder) is never searched. A file's display name is its path from its
    source's name; a source named like an earlier one is named by its full
    resolved path, so names stay unique. The list is kept in a temporary file
    in ``folder`` (``Found.files``; the caller closes it).
    """
    walk = _Walk(MUSIC_EXTENSIONS, folder)
    if exclude is not None:
        walk.folders.add(os.path.realpath(exclude))
    names = set()
    for source in sources:
        source = os.fspath(source)
        name, real = os.path.basename(os.path.abspath(source)), os.path.realpath(source)
        if name in names:
            name = real  # two sources of the same name
        names.add(name)
        if os.path.isdir(source):
            walk.folder(source, name, real)
        else:
            walk.file(source, name, real, linked=True)
    return walk.found


class _Walk:
    """Visits each real folder once, and each real file once, the first time it
    is reached, holding nothing per file: a folder's own entries are new unless
    a link or a source reached them first (``linked``: the few files reached
    that way), and a linked file was reached before when its folder was listed."""

    def __init__(self, extensions, folder=None):
        self.extensions, self.found = extensions, Found(Lines(folder))
        self.folders, self.linked = set(), set()  # real paths

    def file(self, path: str, name: str, real: str, linked: bool = False) -> None:
        if real in self.linked:
            return
        if linked:
            if os.path.dirname(real) in self.folders and os.path.exists(real):
                return
            self.linked.add(real)
        if os.path.splitext(path)[1].lower() not in self.extensions:
            self.found.ignored += 1
            return
        self.found.files.append([path, name, real])

    def folder(self, top: str, top_name: str, top_real: str) -> None:
        stack = [(top, top_name, top_real)]
        while stack:
            folder, name, real = stack.pop()
            if real in self.folders:
                continue
            self.folders.add(real)
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                self.found.errors.append({"path": folder, "detail": e.strerror or str(e)})
                continue
            subfolders = []
            for entry in entries:
                path, inner = os.path.join(folder, entry.name), f"{name}/{entry.name}"
                # Only a link can lead elsewhere; other entries live in this real folder.
                link = entry.is_symlink()
                entry_real = os.path.realpath(path) if link else os.path.join(real, entry.name)
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append((path, inner, entry_real))
                else:
                    self.file(path, inner, entry_real, linked=link)
            stack.extend(reversed(subfolders))  # popped in name order
