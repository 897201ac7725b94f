"""``python -m vaalloc.cli``: the same as the ``vaalloc`` console script."""

from __future__ import annotations

import sys

from vaalloc.cli import main

sys.exit(main())
