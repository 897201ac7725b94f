"""Where a trace is replayed: a named ``[start, end)``, and the presets of the Xen ARM32 layout.

The presets are the two windows the issue's questions are about ("would this load fit Xen's
768MB VMAP, or a 128MB window?"); their values are those of :mod:`vaalloc.xen.layout`
(``VMAP_VIRT_START``/``END``, ``VLPT_VIRT_START``/``END``), repeated here so that the replay
package does not depend on the Xen model (a test keeps the two in step).
"""

from __future__ import annotations

from typing import Final

import attrs

from vaalloc.errors import AlignmentError, RangeError

__all__ = ["REGIONS", "VMAP_ARM32", "WINDOW_128M", "Region", "region_from"]


@attrs.frozen
class Region:
    """``[start, end)`` in bytes, with the name the command shows (a preset's, or
    ``"START:END"``) and a one-line description."""

    name: str
    start: int
    end: int
    description: str = ""

    @property
    def size(self) -> int:
        """Bytes in the region."""
        return self.end - self.start

    def check(self, page_size: int) -> None:
        """Refuse an empty region or one whose bounds are not page-aligned.

        Raises:
            RangeError: ``end <= start`` or a negative bound.
            AlignmentError: a bound is not a multiple of ``page_size``.
        """
        if self.start < 0 or self.end <= self.start:
            raise RangeError(f"region [{self.start:#x}, {self.end:#x}) is empty or negative")
        if self.start % page_size or self.end % page_size:
            raise AlignmentError(
                f"region [{self.start:#x}, {self.end:#x}) is not aligned to the "
                f"{page_size:#x}-byte page"
            )

    def __str__(self) -> str:
        return f"{self.name} [{self.start:#x}, {self.end:#x})"


#: Xen ARM32's VMAP, 256M-1G: what ``vm_alloc`` hands out (768MB).
VMAP_ARM32: Final = Region(
    "vmap-arm32", 0x1000_0000, 0x4000_0000, "Xen ARM32's VMAP, 256M-1G (768MB)"
)
#: The 128MB window Xen ARM32 leaves unused at 128M-256M (the VLPT window of vaalloc.xen).
WINDOW_128M: Final = Region(
    "window-128M", 0x0800_0000, 0x1000_0000, "the 128MB window at 128M-256M (Xen ARM32's VLPT)"
)
#: The presets ``--region`` accepts by name.
REGIONS: Final = {r.name: r for r in (VMAP_ARM32, WINDOW_128M)}


def region_from(start: int, end: int, name: str | None = None) -> Region:
    """A region ``[start, end)`` named ``START:END`` in hex unless ``name`` is given.

    Raises:
        RangeError: ``end <= start`` or a negative bound.
    """
    if start < 0 or end <= start:
        raise RangeError(f"region [{start:#x}, {end:#x}) is empty or negative")
    return Region(name or f"{start:#x}:{end:#x}", start, end)
