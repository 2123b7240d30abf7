"""``python -m melody COMMAND ...`` is the same as ``melody COMMAND ...``."""

import sys

from melody.cli import main

if __name__ == "__main__":
    sys.exit(main())
