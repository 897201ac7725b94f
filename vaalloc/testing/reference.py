"""Plain reference implementations that the built-in fuzz campaigns check vaalloc against.

Each one is written for obviousness, not speed: a brute-force scan over every candidate start.
They are the second opinion in ``vaalloc fuzz`` (vaalloc's indexed allocator must agree with
them step by step) and double as examples of the adapter interface of
:class:`vaalloc.testing.alloc.DifferentialAllocatorMachine`: ``alloc(nr, align) -> address |
None`` and ``free(address) -> granules``.

* :class:`PlainXenVmap`: Xen's ``vm_alloc``/``vm_free`` (xen/common/vmap.c) statement by
  statement over a Python set of used bits, with vaalloc's one documented difference (a failed
  ``vm_alloc`` leaves ``vm_top`` where it was, and ``vm_top`` never passes ``vm_end``).
* :class:`IntervalModel`: the generic policies (first-fit, best-fit, instant-fit) with guard
  granules, as a dict of live runs and a scan of every hole.
* :func:`plain_hyp_walker`: the ARMv7 hyp stage-1 walk, for :mod:`vaalloc.testing.walk`.
"""

from __future__ import annotations

from collections.abc import Callable

from vaalloc.alloc.extents import class_lower_bound, size_class

__all__ = ["IntervalModel", "PlainXenVmap", "plain_hyp_walker"]


def _bytes_for(bits: int) -> int:
    """Bytes of bitmap holding ``bits`` bits (Xen's ``DIV_ROUND_UP(bits, 8)``)."""
    return (bits + 7) // 8


def _pfn_up(nbytes: int, page: int) -> int:
    """Pages holding ``nbytes`` bytes (Xen's ``PFN_UP``)."""
    return (nbytes + page - 1) // page


class PlainXenVmap:
    """Xen's vmap allocator for one region ``[start, end)`` of ``granule``-byte bits.

    ``vm_low`` (every bit below it is used), ``vm_top`` (bits covered by the bitmap pages mapped
    so far) and ``vm_end`` are bit indices, as in Xen.  O(region) per call: it is an oracle.
    """

    def __init__(self, start: int, end: int, granule: int = 4096) -> None:
        self.base = start
        self.granule = granule
        self.used: set[int] = set()
        # vm_init_type(): the bitmap itself occupies the first vm_low pages of the region.
        self.vm_end = (end - start) // granule
        self.vm_low = _pfn_up(_bytes_for(self.vm_end), granule)
        self.vm_top = min(_pfn_up(_bytes_for(self.vm_low), granule) * granule * 8, self.vm_end)
        self.used.update(range(min(self.vm_low, self.vm_end)))

    def _next_used(self, size: int, offset: int) -> int:
        """find_next_bit(): first used bit in [offset, size), else size."""
        for bit in range(offset, size):
            if bit in self.used:
                return bit
        return size

    def _next_free(self, size: int, offset: int) -> int:
        """find_next_zero_bit(): first free bit in [offset, size), else size."""
        for bit in range(offset, size):
            if bit not in self.used:
                return bit
        return size

    def _scan(self, nr: int, align: int) -> int:
        """The inner loop of vm_alloc(): a start below vm_top, or vm_top when nothing fits."""
        start = self.vm_low
        while start < self.vm_top:
            bit = self._next_used(self.vm_top, start + 1)
            start = (start + align) & ~(align - 1)  # skips the hole's first bit: the guard
            if bit < self.vm_top:
                if start + nr < bit:  # a guard bit must stay before the next allocation
                    return start
                start = self._next_free(self.vm_top, bit + 1)
            else:
                if start + nr <= bit:  # the run may end exactly at vm_top
                    return start
                start = bit
        return self.vm_top

    def alloc(self, nr: int, align: int) -> int | None:
        """vm_alloc(nr, align): the address, or None (nothing changed) when nothing fits."""
        if not align:
            align = 1
        elif align & (align - 1):
            align &= -align  # Xen's ISOLATE_LSB
        saved_top = self.vm_top
        while True:
            start = self._scan(nr, align)
            if start < self.vm_top:
                break
            if self.vm_top >= self.vm_end:
                self.vm_top = saved_top
                return None
            self.vm_top = min(self.vm_top + self.granule * 8, self.vm_end)  # one more page
        self.used.update(range(start, start + nr))
        if start <= self.vm_low + 2:
            self.vm_low = start + nr
        return self.base + start * self.granule

    def free(self, address: int) -> int:
        """vm_free(address): granules freed, 0 where Xen would WARN (not a run's start)."""
        offset = address - self.base
        if offset % self.granule:
            return 0
        bit = offset // self.granule
        if bit * self.granule < self.vm_end // 8 or not 1 <= bit < self.vm_top:
            return 0
        if bit - 1 in self.used or bit not in self.used:
            return 0
        if bit < self.vm_low:
            self.vm_low = bit - 1
            while self.vm_low - 1 not in self.used:
                self.vm_low -= 1
        first = bit
        while bit in self.used:
            self.used.discard(bit)
            bit += 1
            if bit == self.vm_top:
                break
        return bit - first


class IntervalModel:
    """The generic policies over ``[start, end)``: live runs in a dict, holes by a scan.

    ``policy`` is ``"first-fit"`` (lowest start), ``"best-fit"`` (smallest usable hole, then
    lowest start) or ``"instant-fit"`` (vmem's: the lowest hole of the first size class whose
    every member is guaranteed to hold the request, else the smallest class that holds it).
    With ``guard`` one free granule separates allocations, none is needed at the range's ends.
    Alignment is absolute (``(address // granule) % align == 0``).  O(region) per call.
    """

    def __init__(
        self,
        start: int,
        end: int,
        granule: int = 4096,
        policy: str = "first-fit",
        guard: bool = True,
    ) -> None:
        self.lo, self.hi = start // granule, end // granule
        self.granule, self.policy, self.guard = granule, policy, guard
        self.live: dict[int, int] = {}

    def _holes(self) -> list[tuple[int, int]]:
        """Maximal free intervals, ascending."""
        holes, cursor = [], self.lo
        for u, nr in sorted(self.live.items()):
            if u > cursor:
                holes.append((cursor, u))
            cursor = u + nr
        if cursor < self.hi:
            holes.append((cursor, self.hi))
        return holes

    def _usable(self, s: int, e: int) -> tuple[int, int]:
        """The hole without the guard granules it must keep (none at the range's ends)."""
        if not self.guard:
            return s, e
        return s + (s != self.lo), e - (e != self.hi)

    def _fit(self, s: int, e: int, nr: int, align: int) -> int | None:
        us, ue = self._usable(s, e)
        c = -(-us // align) * align
        return c if c + nr <= ue else None

    def alloc(self, nr: int, align: int) -> int | None:
        """The policy's choice for ``nr`` granules at ``align``, or None when nothing fits."""
        fits = {}
        for s, e in self._holes():
            c = self._fit(s, e, nr, align)
            if c is not None:
                fits[(s, e)] = c
        if not fits:
            return None
        length = {h: self._usable(*h)[1] - self._usable(*h)[0] for h in fits}
        if self.policy == "first-fit":
            u = min(fits.values())
        elif self.policy == "best-fit":
            u = min((length[h], c) for h, c in fits.items())[1]
        else:
            u = self._instant(fits, nr, align)
        self.live[u] = nr
        return u * self.granule

    def _instant(self, fits: dict[tuple[int, int], int], nr: int, align: int) -> int:
        # A hole whose usable length is at least nr + align - 1 holds the request wherever it
        # starts; instant-fit takes the smallest size class made only of such holes.
        need = nr + align - 1
        k0 = size_class(need)
        if class_lower_bound(k0) < need:
            k0 += 1
        guaranteed = []
        for s, e in self._holes():
            us, ue = self._usable(s, e)
            if ue > us and size_class(ue - us) >= k0:
                guaranteed.append((size_class(ue - us), s, e))
        if guaranteed:
            _, s, e = min(guaranteed)
            return fits[(s, e)]
        return min(
            (size_class(self._usable(*h)[1] - self._usable(*h)[0]), c) for h, c in fits.items()
        )[1]

    def free(self, address: int) -> int:
        """Granules of the live run starting at ``address`` (then free), 0 if there is none."""
        return self.live.pop(address // self.granule, 0)


HYP_SHIFTS = {1: 30, 2: 21, 3: 12}
OA_EXCESS_40 = 0xFF << 40  # output bits 47:40: beyond a 40-bit output size
OA_MASK_40 = 0xFF_FFFF_F000  # output address bits 39:12


def plain_hyp_walker(
    read64: Callable[[int], int], root: int, va: int, access: str
) -> int | tuple[str, int]:
    """ARMv7 LPAE hyp stage 1 (HTTBR: 32-bit VA, 40-bit PA, levels 1-3), written from the ARM
    ARM as a port into Xen would write it, independently of :mod:`vaalloc.lpae.walk`.

    Returns the PA, or ``(fault kind, level)``.  Hyp rules: AP[2] alone makes a leaf
    read-only (AP[1] and PXN mean nothing at PL2), APTable[1] makes everything below
    read-only, XN and XNTable forbid execution.  The walker interface of
    :func:`vaalloc.testing.walk.check_walker`; O(3) reads.
    """
    table = root
    read_only = execute_never = False
    for level in (1, 2, 3):
        index = (va >> HYP_SHIFTS[level]) & (3 if level == 1 else 511)
        desc = read64(table + index * 8)
        if not desc & 1 or (level == 3 and not desc & 2):
            return ("translation", level)
        if desc & OA_EXCESS_40:
            return ("address-size", level)
        if level < 3 and desc & 2:  # a table: fold in APTable[1] and XNTable, go down
            read_only |= bool(desc >> 62 & 1)
            execute_never |= bool(desc >> 60 & 1)
            table = desc & OA_MASK_40
            continue
        if not desc >> 10 & 1:
            return ("access-flag", level)
        read_only |= bool(desc >> 7 & 1)
        execute_never |= bool(desc >> 54 & 1)
        if (access == "write" and read_only) or (access == "exec" and execute_never):
            return ("permission", level)
        size = 1 << HYP_SHIFTS[level]
        return (desc & OA_MASK_40 & ~(size - 1)) | (va & (size - 1))
    raise AssertionError("a level-3 descriptor always ends the walk")
