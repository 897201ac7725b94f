"""Xen ``vmap`` geometry: where the bitmap lives and how far it reaches.

This is the arithmetic of ``vm_init_type()`` in xen/common/vmap.c (Xen 4.23-dev, commit
c447b7308b1330ec6dcfef37220736c28f41daa0, file last changed by 19772b670426), in granules:

* ``vm_end``: granules in the region, one bitmap bit each;
* ``vm_low``: pages the *whole* bitmap needs, ``PFN_UP((vm_end + 7) / 8)``; those first pages of
  the region hold the bitmap itself and are marked used (``bitmap_fill``);
* ``vm_top``: bits covered by the bitmap pages mapped at boot, ``PFN_UP((vm_low + 7) / 8)`` pages
  of ``PAGE_SIZE * 8`` bits each.  ``vm_alloc`` maps one more page (``PAGE_SIZE * 8`` more bits)
  each time nothing fits below ``vm_top``, capping ``vm_top`` at ``vm_end``.

One deliberate difference: Xen does not cap the *initial* ``vm_top`` at ``vm_end``, so a region
smaller than one bitmap page's reach (32768 granules with 4 KiB pages) would let ``vm_alloc``
hand out addresses past the region's end.  Xen never builds such a region; vaalloc caps
``vm_top`` at ``vm_end`` so that it cannot happen (the plain reference port does the same).
"""

from __future__ import annotations

import attrs

__all__ = ["XenGeometry", "xen_align", "xen_geometry"]


@attrs.frozen
class XenGeometry:
    """Boot-time values of one Xen vmap region, in bitmap bits (= granules)."""

    vm_end: int
    vm_low: int
    vm_top: int
    step: int


def _pfn_up(nbytes: int, page: int) -> int:
    return (nbytes + page - 1) // page


def xen_geometry(granules: int, page_size: int) -> XenGeometry:
    """What ``vm_init_type`` computes for a region of ``granules`` pages of ``page_size``."""
    vm_end = granules
    vm_low = _pfn_up((vm_end + 7) // 8, page_size)
    nr = _pfn_up((vm_low + 7) // 8, page_size)
    step = page_size * 8
    vm_top = min(nr * step, vm_end)
    return XenGeometry(vm_end=vm_end, vm_low=min(vm_low, vm_end), vm_top=vm_top, step=step)


def xen_align(align: int) -> int:
    """Xen's alignment rule: 0 means 1; a non-power-of-two uses its lowest set bit
    (``ISOLATE_LSB``).  ``align`` must be >= 0."""
    if align == 0:
        return 1
    return align & -align
