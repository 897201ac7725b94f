"""The exception hierarchy shared by every layer of vaalloc.

Every error vaalloc raises on bad input or a failed operation is a subclass of
:class:`VAAllocError`, so a caller can catch "anything the library refused" in one
clause.  Where a Python built-in means the same thing (``ValueError`` for a bad
argument, ``MemoryError``-like exhaustion is *not* mirrored because callers must
not confuse a full window with the interpreter running out of memory) the class
also derives from it, so generic code keeps working.

The contract that goes with every exception: **a call that raises has changed
nothing**.  No bitmap bit stays set, no table is half built, no frame is leaked.
Tests check that by comparing snapshots taken before and after the failed call.
"""

from __future__ import annotations

__all__ = [
    "AlignmentError",
    "InvalidFree",
    "InvariantError",
    "LogDirtyError",
    "MappingError",
    "OutOfSpace",
    "RangeError",
    "SnapshotError",
    "VAAllocError",
]


class VAAllocError(Exception):
    """Base class of every error vaalloc raises deliberately."""


class OutOfSpace(VAAllocError):
    """No free run satisfies the request (size and every constraint).

    Raised by allocators when the request is well formed but cannot be met now;
    freeing something may make the same request succeed later.
    """


class InvalidFree(VAAllocError, ValueError):
    """A free of an address that is not the start of a live allocation.

    Covers double frees, frees of an address inside a run, and frees of an
    address that belongs to another instance or lies outside this one.
    """


class AlignmentError(VAAllocError, ValueError):
    """An alignment, phase or address is not of the required form.

    For example a non-power-of-two ``align``, a ``phase`` not below ``align``,
    or an address that is not granule-aligned.
    """


class RangeError(VAAllocError, ValueError):
    """A size or address falls outside what the object covers.

    For example ``nr <= 0``, a range with ``end <= start``, a ``min_addr`` above
    the range, or a physical address at or beyond ``2**pa_bits``.
    """


class InvariantError(VAAllocError):
    """An internal consistency check failed: a bug, in vaalloc or in code that
    poked at its internals.  ``check()`` methods raise it."""


class SnapshotError(VAAllocError, ValueError):
    """A snapshot handed to ``restore()`` is malformed, corrupted or inconsistent."""


class MappingError(VAAllocError, ValueError):
    """A page-table operation conflicts with what is mapped.

    Raised when ``map`` would overlap an existing mapping without
    ``replace=True``, when ``unmap``/``protect`` name a range that is not
    mapped, or when a block is asked for at a level that cannot hold one.
    """


class LogDirtyError(VAAllocError):
    """A log-dirty operation is not valid in the domain's current state
    (enable twice, disable when off, destroy while tracking, ...)."""
