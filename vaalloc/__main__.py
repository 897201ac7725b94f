"""``python -m vaalloc``: the same as the ``vaalloc`` console script."""

from __future__ import annotations

import sys

from vaalloc.cli import main

if __name__ == "__main__":
    sys.exit(main())
