"""The progress bar the long sub-commands draw on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """A one-line progress bar on stderr, redrawn in place with ``\\r``.

    Off (every call a no-op) when ``enabled`` is False or, by default, when the stream is not
    a terminal, so logs and pipes never see it.  Redraws at most ten times a second per label.
    """

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._label = ""
        self._width = 0

    def update(self, label: str, done: int, total: int, *, force: bool = False) -> None:
        """Show ``done`` of ``total`` for ``label`` (a new label always draws)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and label == self._label and done < total and now - self._last < 0.1:
            return
        self._last, self._label = now, label
        frac = done / total if total else 1.0
        filled = int(frac * 30)
        line = f"{label:<24} [{'#' * filled}{'.' * (30 - filled)}] {frac:4.0%}"
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar (the summary follows on stdout)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
