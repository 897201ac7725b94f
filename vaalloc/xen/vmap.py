"""vmap: Xen's 256MB-1GB virtual range for mapping arbitrary frames (``xen/common/vmap.c``).

Placement is :meth:`vaalloc.alloc.RangeAllocator.xen_vmap`, bit-for-bit Xen's ``vm_alloc``
(bitmap in the region's first pages, a guard page after every allocation), so the same sequence
of calls gives the same addresses as Xen. Mappings are real: 4KB pages in level-3 tables hung
from ``xen_second[128..511]`` (Xen's ``create_xen_table``), readable through any CPU's MMU.
The pages holding the allocator's own bitmap are accounted as used but not backed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvalidFree, RangeError
from vaalloc.xen.layout import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_SIZE,
    VMAP_VIRT_END,
    VMAP_VIRT_START,
    XEN_TABLE_ATTRS,
)

if TYPE_CHECKING:
    from vaalloc.xen.hypervisor import Hypervisor

__all__ = ["Vmap"]


class Vmap:
    """The vmap area of a :class:`~vaalloc.xen.system.Xen` (``xen.vmap_area``)."""

    def __init__(self, core: Hypervisor) -> None:
        self.core = core
        self.allocator = RangeAllocator.xen_vmap(VMAP_VIRT_START, VMAP_VIRT_END)
        self._vmalloc: dict[int, list[int]] = {}  # va -> frames owned by vmalloc

    def vmap(self, mfns: Sequence[int]) -> int:
        """Map frames ``mfns`` (machine frame numbers) at consecutive VAs; return the first VA.

        Raises RangeError for an empty list or an MFN beyond physical memory, OutOfSpace when
        the area is full (nothing changed). Cost: ``len(mfns)`` PTE writes plus one xen_second
        write per level-3 table created.
        """
        if not mfns:
            raise RangeError("vmap([]): nothing to map")
        limit = self.core.mem.limit >> PAGE_SHIFT
        for mfn in mfns:
            if not 0 <= mfn < limit:
                raise RangeError(f"vmap: MFN {mfn:#x} beyond physical memory ({limit:#x} frames)")
        va = self.allocator.alloc(len(mfns))
        pt = self.core.pagetables
        for i, mfn in enumerate(mfns):
            page_va = va + i * PAGE_SIZE
            table = pt.third_table(page_va, create=True)
            assert table is not None
            pt.write_pte(
                table + pt.third_index(page_va) * PTE_SIZE, (mfn << PAGE_SHIFT) | XEN_TABLE_ATTRS
            )
        return va

    def vunmap(self, va: int) -> int:
        """Unmap the vmap allocation at ``va``, flush its pages on every CPU; return #pages.

        Raises InvalidFree if ``va`` is not the start of a live vmap allocation, or belongs to
        vmalloc (use :meth:`vfree`).
        """
        if va in self._vmalloc:
            raise InvalidFree(f"vunmap({va:#x}): allocated by vmalloc, use vfree")
        return self._unmap(va)

    def _unmap(self, va: int) -> int:
        nr = self.allocator.size(va)
        pt = self.core.pagetables
        for i in range(nr):
            page_va = va + i * PAGE_SIZE
            table = pt.third_table(page_va, create=False)
            assert table is not None
            pt.write_pte(table + pt.third_index(page_va) * PTE_SIZE, 0)
            self.core.flush_xen_va(page_va)
        self.allocator.free(va)
        return nr

    def vmalloc(self, size: int) -> int:
        """Allocate ``ceil(size / 4KB)`` fresh frames and vmap them; return the VA.

        Raises RangeError for ``size <= 0``, OutOfSpace (frames or VA; nothing leaked).
        """
        if size <= 0:
            raise RangeError(f"vmalloc({size}): size must be positive")
        nr = -(-size // PAGE_SIZE)
        mem = self.core.mem
        frames: list[int] = []
        try:
            for _ in range(nr):
                frames.append(mem.alloc_frames(1))
            va = self.vmap([pa >> PAGE_SHIFT for pa in frames])
        except BaseException:
            for pa in frames:
                mem.free_frames(pa)
            raise
        self._vmalloc[va] = frames
        return va

    def vfree(self, va: int) -> None:
        """Undo :meth:`vmalloc`: unmap, flush, free the frames. InvalidFree for a bad ``va``."""
        frames = self._vmalloc.get(va)
        if frames is None:
            raise InvalidFree(f"vfree({va:#x}): not a live vmalloc allocation")
        self._unmap(va)
        del self._vmalloc[va]
        for pa in frames:
            self.core.mem.free_frames(pa)
