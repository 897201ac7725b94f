"""Placement policies and the argument checks shared by every allocator entry point."""

from __future__ import annotations

from typing import Final

from vaalloc.errors import AlignmentError, RangeError

__all__ = [
    "BEST_FIT",
    "FIRST_FIT",
    "INSTANT_FIT",
    "POLICIES",
    "XEN_VMAP",
    "check_int",
    "check_power_of_two",
]

#: Lowest address that satisfies every constraint (Xen's vmap, Linux's vmalloc).
FIRST_FIT: Final = "first-fit"
#: Smallest hole that can hold the request, then the lowest address in it (least waste).
BEST_FIT: Final = "best-fit"
#: vmem's instant fit: any hole of the smallest size class whose every hole fits (O(1)-ish).
INSTANT_FIT: Final = "instant-fit"
#: The policy name reported by :meth:`RangeAllocator.xen_vmap` instances.
XEN_VMAP: Final = "xen-vmap"
#: The policies a caller may pass to the constructor.
POLICIES: Final = (FIRST_FIT, BEST_FIT, INSTANT_FIT)


def check_int(value: object, what: str, owner: str, *, error: type[Exception] = RangeError) -> int:
    """Return ``value`` if it is an ``int`` (``bool`` refused), else raise ``error``.

    ``bool`` is refused because ``alloc(True)`` is always a caller bug, never one granule.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{owner}: {what} must be an int, got {value!r}")
    return value


def check_power_of_two(value: object, what: str, owner: str) -> int:
    """Return ``value`` if it is a positive power-of-two ``int``, else raise AlignmentError."""
    v = check_int(value, what, owner, error=AlignmentError)
    if v <= 0 or v & (v - 1):
        raise AlignmentError(f"{owner}: {what}={v!r} is not a positive power of two")
    return v
