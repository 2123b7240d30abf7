"""The errors melody raises for the failures it expects, each one line for a user.

A leaf: every module may import it, and it imports nothing of melody's. The
command line turns ``UsageError`` into exit code 2 and ``RunError`` into 1;
API users catch ``MelodyError`` for both.
"""

from __future__ import annotations


class MelodyError(Exception):
    """An expected failure; its message is one line that names the problem."""


class UsageError(MelodyError):
    """A problem with what the user asked for (a flag, a file, a folder): exit code 2."""


class RunError(MelodyError):
    """The run cannot go on, for a reason outside the user's input: exit code 1."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised where the program is, so that every cleanup
    on the way out runs (no half files, no temporaries, no lock left behind).
    Like KeyboardInterrupt, it is not an ``Exception``; the command line exits 143."""


class ModelFolderError(UsageError):
    """A model folder that cannot be used; the message names the folder and the damage."""


# Why a file (or one tune of a many-tune file) yields no melody.
REASONS = (
    "not music",
    "empty",
    "unreadable",
    "truncated",
    "no notes",
    "drums only",
    "too short",
    "corrupt timing",
    "parse error",
    "unsupported format",
    "too large",
)


class SkipFile(Exception):
    """A file (or ABC tune) that yields no melody, with a reason from REASONS.

    >>> SkipFile("too short", "3 notes").reason
    'too short'
    """

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
