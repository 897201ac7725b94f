"""The error a trace reader raises (a :class:`vaalloc.errors.VAAllocError`)."""

from __future__ import annotations

from vaalloc.errors import VAAllocError

__all__ = ["TraceError"]


class TraceError(VAAllocError, ValueError):
    """A trace file cannot be read: the message names the file and the line (or record) and says
    what is wrong with it, in one line.  Nothing is replayed from a file that raises it."""
