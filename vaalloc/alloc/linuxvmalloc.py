"""The ``linux-vmalloc`` policy: Linux's ``alloc_vmap_area`` placement with lazy freeing.

Linux v5.2 to v6.8 keep one tree of free blocks for the whole kernel virtual address space and
place every area with ``find_vmap_lowest_match``: the lowest address in the window
``[vstart, vend)`` where ``size`` bytes fit at the requested alignment.  Areas freed through
``free_vmap_area_noflush`` (vfree, vunmap, iounmap, a task's stack) are not returned at once: their
page tables are torn down but the TLB is not flushed, so the address range stays *busy* on a purge
list until ``__purge_vmap_area_lazy`` flushes the TLB for all of them and merges them back into the
free tree (when the lazy pages exceed ``lazy_max_pages()``, on ``vm_unmap_aliases()``, or when an
allocation fails: the overflow path purges and retries once).

Built by composition on the public :class:`~vaalloc.alloc.RangeAllocator` API: a first-fit,
``guard=False`` instance (Linux's guard page is part of the size the caller asks for, so the
allocator itself keeps none), plus the table of lazily freed areas.  First fit with
``guard=False`` returns the lowest address satisfying every constraint, which is what the kernel's
search returns whenever ``align <= PAGE_SIZE`` (one granule here), bit for bit.

Alignments above a page: the kernel (9333fe98d0a6, every release up to v6.8) prunes its tree walk
with ``size + align - 1`` instead of ``size``, so a lower block that fits only thanks to where it
starts can be skipped, depending on the tree's shape.  This policy does not model the tree; it
returns the lowest fit, which is never higher than the kernel's address, succeeds whenever the
kernel does, and equals it when the kernel's walk happens to meet that block.  The differential
test against the line-by-line port (tests/reference/linux_vmalloc_plain.py) checks exactly these
properties; docs/replay.md gives a case where the two differ.

Linux v6.9 and later add per-node pools of purged areas that are handed out again before the free
tree is searched; this policy models the single free tree of v5.2-v6.8.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Final

from vaalloc.alloc import AllocStats, RangeAllocator
from vaalloc.errors import InvalidFree, InvariantError, RangeError

__all__ = ["LINUX_VMALLOC", "LinuxVmalloc"]

#: The policy name of :class:`LinuxVmalloc` instances.
LINUX_VMALLOC: Final = "linux-vmalloc"


class LinuxVmalloc:
    """Linux's vmap-area allocator over ``[start, end)``: lowest fit, lazy frees, purge.

    Units are granules (pages), as for :class:`~vaalloc.alloc.RangeAllocator`: ``alloc(nr,
    align)`` takes ``nr`` pages aligned to ``align`` pages (absolute, a power of two; a byte
    alignment of at most one page is ``align=1``).  The size includes the guard page when the
    caller wants one, as ``__get_vm_area_node`` adds it before calling ``alloc_vmap_area``.

    Every call is O(log n) in the number of free blocks (first fit on the free-extent index)
    except :meth:`purge`, O(k log n) in the k areas it releases.  Thread-safe: one lock per
    instance.  A failed call changes nothing.

    Raises:
        RangeError, AlignmentError: as the RangeAllocator constructor for a bad range or
            granule.
    """

    __slots__ = ("_lazy", "_lazy_pages", "_lock", "_space")

    def __init__(self, start: int, end: int, granule: int = 4096, name: str = "vmalloc") -> None:
        self._space = RangeAllocator(
            start, end, granule=granule, policy="first-fit", guard=False, name=name
        )
        self._lazy: dict[int, int] = {}  # va -> pages: lazily freed, still busy
        self._lazy_pages = 0
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------------

    @property
    def start(self) -> int:
        """First byte address of the range."""
        return self._space.start

    @property
    def end(self) -> int:
        """First byte address past the range."""
        return self._space.end

    @property
    def granule(self) -> int:
        """Bytes per granule (the page size)."""
        return self._space.granule

    @property
    def name(self) -> str:
        """The instance's name, used in every error message."""
        return self._space.name

    @property
    def policy(self) -> str:
        """Always ``"linux-vmalloc"``."""
        return LINUX_VMALLOC

    @property
    def guard(self) -> bool:
        """False: the guard page is inside the size the caller asks for."""
        return False

    @property
    def lazy_pages(self) -> int:
        """Pages lazily freed and not yet purged (the kernel's ``vmap_lazy_nr``)."""
        return self._lazy_pages

    @property
    def lazy_areas(self) -> int:
        """Areas lazily freed and not yet purged."""
        return len(self._lazy)

    def __repr__(self) -> str:
        return (
            f"LinuxVmalloc({self.start:#x}, {self.end:#x}, granule={self.granule:#x}, "
            f"name={self.name!r})"
        )

    # -- allocation -------------------------------------------------------------------------

    def alloc(
        self, nr: int, align: int = 1, *, vstart: int | None = None, vend: int | None = None
    ) -> int:
        """``alloc_vmap_area``: ``nr`` pages at the lowest address of ``[vstart, vend)`` (bytes,
        default the whole range; clipped to it) aligned to ``align`` pages; return the address.

        Lazily freed areas are busy.  When nothing fits the kernel purges them and retries once;
        here the call raises OutOfSpace and changes nothing, so that the caller decides: call
        :meth:`purge` and retry to model the overflow path (the replay engine does).

        Raises:
            RangeError: ``nr`` < 1, or the window does not meet the range.
            AlignmentError: ``align`` not a power of two.
            OutOfSpace: no free run satisfies the request now.
        """
        lo, hi = self._window(vstart, vend)
        with self._lock:
            if lo is None:
                return self._space.alloc(nr, align)
            return self._space.alloc(nr, align, min_addr=lo, max_addr=hi)

    def _window(self, vstart: int | None, vend: int | None) -> tuple[int | None, int | None]:
        """The window as granule-aligned ``min_addr``/``max_addr`` inside the range, or
        ``(None, None)`` when it covers the whole range."""
        if vstart is None and vend is None:
            return None, None
        sp = self._space
        g = sp.granule
        lo = sp.start if vstart is None else self._address(vstart, "vstart")
        hi = sp.end if vend is None else self._address(vend, "vend")
        lo = max(-(-lo // g) * g, sp.start)
        hi = min(hi // g * g, sp.end)
        if lo >= hi:
            raise RangeError(
                f"{self.name}: window [vstart={vstart!r}, vend={vend!r}) does not meet "
                f"[{sp.start:#x}, {sp.end:#x})"
            )
        if lo == sp.start and hi == sp.end:
            return None, None
        return lo, hi

    def _address(self, value: object, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RangeError(f"{self.name}: {what} must be an int address, got {value!r}")
        return value

    def reserve(self, va: int, nr: int) -> int:
        """Mark exactly ``[va, va + nr pages)`` busy (an area whose address is known, e.g. from a
        trace); return ``va``.

        Raises: as :meth:`RangeAllocator.reserve` (OutOfSpace when part of it is busy)."""
        with self._lock:
            return self._space.reserve(va, nr)

    # -- freeing ----------------------------------------------------------------------------

    def free(self, va: int) -> int:
        """``free_vmap_area``: return the area at ``va`` to the free tree at once (merging with
        its neighbours); return its size in pages.

        Raises:
            InvalidFree: ``va`` is not the start of a busy area, or the area was already freed
                lazily (only :meth:`purge` releases it then).
        """
        with self._lock:
            if va in self._lazy:
                raise InvalidFree(
                    f"{self.name}: {va:#x} was already freed lazily; it waits for a purge"
                )
            return self._space.free(va)

    def free_lazy(self, va: int) -> int:
        """``free_vmap_area_noflush``: the area at ``va`` stays busy until the next
        :meth:`purge`; return its size in pages.

        Raises:
            InvalidFree: ``va`` is not the start of a busy area, or it was already freed
                lazily.
        """
        with self._lock:
            if va in self._lazy:
                raise InvalidFree(f"{self.name}: {va:#x} was already freed lazily")
            nr = self._space.size(va)
            self._lazy[va] = nr
            self._lazy_pages += nr
            return nr

    def purge(self) -> int:
        """``__purge_vmap_area_lazy``: release every lazily freed area into the free tree;
        return how many areas were released (the kernel's ``num_purged`` counts the merged
        runs of its purge list instead, which can be fewer)."""
        with self._lock:
            free = self._space.free
            for va in self._lazy:
                free(va)
            released = len(self._lazy)
            self._lazy.clear()
            self._lazy_pages = 0
            return released

    # -- inspection -------------------------------------------------------------------------

    def size(self, va: int) -> int:
        """Pages of the busy area at ``va`` (lazily freed areas included).

        Raises InvalidFree if ``va`` is not the start of a busy area."""
        return self._space.size(va)

    def is_lazy(self, va: int) -> bool:
        """Whether the area at ``va`` was freed lazily and waits for a purge."""
        return va in self._lazy

    def allocations(self) -> Iterator[tuple[int, int]]:
        """Busy areas as ``(va, pages)``, ascending, lazily freed ones included."""
        return self._space.allocations()

    def lazy(self) -> list[tuple[int, int]]:
        """Lazily freed areas as ``(va, pages)``, ascending."""
        with self._lock:
            return sorted(self._lazy.items())

    def stats(self) -> AllocStats:
        """Totals in pages (lazily freed areas count as used).  See :class:`AllocStats`."""
        return self._space.stats()

    def check(self) -> None:
        """The allocator's invariants, and every lazily freed area is busy with its size.

        Raises:
            InvariantError: naming the first inconsistency.
        """
        self._space.check()
        with self._lock:
            total = 0
            for va, nr in self._lazy.items():
                try:
                    size = self._space.size(va)
                except InvalidFree:
                    raise InvariantError(f"{self.name}: lazy area {va:#x} is not busy") from None
                if size != nr:
                    raise InvariantError(
                        f"{self.name}: lazy area {va:#x} has {size} pages, recorded {nr}"
                    )
                total += nr
            if total != self._lazy_pages:
                raise InvariantError(
                    f"{self.name}: lazy pages {self._lazy_pages} differ from the areas' {total}"
                )
