"""Errors specific to :mod:`vaalloc.alloc` (all subclasses of :class:`vaalloc.VAAllocError`)."""

from __future__ import annotations

from vaalloc.errors import VAAllocError

__all__ = ["InUse", "NameConflict", "UnknownName", "Unsupported"]


class InUse(VAAllocError):
    """The instance still has live allocations, so it cannot be released (or replaced)."""


class Unsupported(VAAllocError, ValueError):
    """The call or argument is not available in this mode (e.g. ``phase`` or ``reserve`` on a
    :meth:`RangeAllocator.xen_vmap` instance, whose placement must stay exactly Xen's)."""


class NameConflict(VAAllocError, ValueError):
    """An :class:`AddressSpace` already holds an instance of that name."""


class UnknownName(VAAllocError, KeyError):
    """An :class:`AddressSpace` holds no instance of that name."""
