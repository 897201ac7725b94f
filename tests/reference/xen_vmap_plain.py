"""A plain, line-by-line Python port of Xen's vmap allocator, the oracle for ``xen_vmap``.

Follows xen/common/vmap.c of Xen 4.23-dev (xen-project/xen commit
c447b7308b1330ec6dcfef37220736c28f41daa0, 2026-08-20; the file last changed in 19772b670426,
"xen/mm: Switch some APIs over to pte_attr_t").  ``vm_init_type``, ``vm_alloc``, ``vm_index``,
``vm_size`` and ``vm_free`` keep Xen's control flow statement by statement; the bitmap helpers
are those of xen/include/xen/bitmap.h and the generic find_next_bit, word by word (64-bit
words).  Addresses are replaced by bit indices (``va = base + bit * PAGE_SIZE``), page
mapping by a no-op, and NULL by ``None``.  Nothing here is optimised: it is the oracle.

One deliberate difference, shared with ``vaalloc``'s fast implementation: ``vm_top`` is capped
at ``vm_end`` in ``vm_init_type`` (Xen does not cap it there, which would let a region smaller
than one bitmap page's reach hand out bits past ``vm_end``; Xen never builds such a region).
"""

from __future__ import annotations

BITS_PER_LONG = 64
WORD_MASK = (1 << BITS_PER_LONG) - 1


class PlainXenVmap:
    """One vmap region (Xen's ``VMAP_DEFAULT``) of ``nr_pages`` pages of ``page_size`` bytes."""

    def __init__(self, nr_pages: int, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.bitmap: list[int] = []  # words; only the mapped bitmap pages exist
        self.vm_end = 0
        self.vm_low = 0
        self.vm_top = 0
        self.vm_init_type(nr_pages)

    # -- xen/include/xen/bitops.h, bitmap.h, generic find_next_bit ------------------------

    def _ensure(self, nbits: int) -> None:
        words = (nbits + BITS_PER_LONG - 1) // BITS_PER_LONG
        while len(self.bitmap) < words:
            self.bitmap.append(0)

    def test_bit(self, nr: int) -> bool:
        return bool((self.bitmap[nr // BITS_PER_LONG] >> (nr % BITS_PER_LONG)) & 1)

    def set_bit(self, nr: int) -> None:
        self.bitmap[nr // BITS_PER_LONG] |= 1 << (nr % BITS_PER_LONG)

    def test_and_clear_bit(self, nr: int) -> bool:
        old = self.test_bit(nr)
        self.bitmap[nr // BITS_PER_LONG] &= ~(1 << (nr % BITS_PER_LONG)) & WORD_MASK
        return old

    def bitmap_fill(self, nbits: int) -> None:
        for bit in range(nbits):
            self.set_bit(bit)

    def find_next_bit(self, size: int, offset: int) -> int:
        """First set bit in [offset, size), else size (word at a time, as Xen's)."""
        if offset >= size:
            return size
        idx = offset // BITS_PER_LONG
        word = self.bitmap[idx] & (WORD_MASK << (offset % BITS_PER_LONG)) & WORD_MASK
        while True:
            if word:
                bit = idx * BITS_PER_LONG + ((word & -word).bit_length() - 1)
                return min(bit, size)
            idx += 1
            if idx * BITS_PER_LONG >= size:
                return size
            word = self.bitmap[idx]

    def find_next_zero_bit(self, size: int, offset: int) -> int:
        """First clear bit in [offset, size), else size."""
        if offset >= size:
            return size
        idx = offset // BITS_PER_LONG
        word = ~self.bitmap[idx] & (WORD_MASK << (offset % BITS_PER_LONG)) & WORD_MASK
        while True:
            if word:
                bit = idx * BITS_PER_LONG + ((word & -word).bit_length() - 1)
                return min(bit, size)
            idx += 1
            if idx * BITS_PER_LONG >= size:
                return size
            word = ~self.bitmap[idx] & WORD_MASK

    # -- xen/common/vmap.c ------------------------------------------------------------------

    def pfn_up(self, x: int) -> int:
        return (x + self.page_size - 1) // self.page_size

    def vm_init_type(self, nr_pages: int) -> None:
        self.vm_end = nr_pages
        self.vm_low = self.pfn_up((self.vm_end + 7) // 8)
        nr = self.pfn_up((self.vm_low + 7) // 8)
        self.vm_top = nr * self.page_size * 8
        self.vm_top = min(self.vm_top, self.vm_end)  # the one deliberate difference (above)
        self._ensure(nr * self.page_size * 8)  # map the bitmap pages, clear_page()
        self.bitmap_fill(min(self.vm_low, self.vm_end))

    def vm_alloc(self, nr: int, align: int) -> int | None:
        if not align:
            align = 1
        elif align & (align - 1):
            align = align & -align  # ISOLATE_LSB

        while True:
            start = self.vm_low
            while start < self.vm_top:
                bit = self.find_next_bit(self.vm_top, start + 1)
                if bit > self.vm_top:
                    bit = self.vm_top
                # Note that this skips the first bit, making the
                # corresponding page a guard one.
                start = (start + align) & ~(align - 1)
                if bit < self.vm_top:
                    if start + nr < bit:
                        break
                    start = self.find_next_zero_bit(self.vm_top, bit + 1)
                else:
                    if start + nr <= bit:
                        break
                    start = bit

            if start < self.vm_top:
                break

            if self.vm_top >= self.vm_end:
                return None

            # alloc_domheap_page() succeeds; map_pages_to_xen() succeeds.
            if start >= self.vm_top:
                self._ensure(self.vm_top + self.page_size * 8)  # clear_page()
                self.vm_top += self.page_size * 8
                if self.vm_top > self.vm_end:
                    self.vm_top = self.vm_end
                continue

        bit = start
        while bit < start + nr:
            self.set_bit(bit)
            bit += 1
        if bit < self.vm_top:
            assert not self.test_bit(bit)
        else:
            assert bit == self.vm_top
        if start <= self.vm_low + 2:
            self.vm_low = bit

        return start

    def vm_index(self, idx: int) -> int:
        """``vm_index`` on a bit index (``va = base + idx * PAGE_SIZE``)."""
        if idx * self.page_size < self.vm_end // 8 or idx >= self.vm_top:
            return 0
        if idx < 1:  # only reachable for regions under 8 pages; keeps test_bit(-1) away
            return 0
        return idx if (not self.test_bit(idx - 1) and self.test_bit(idx)) else 0

    def vm_size(self, idx: int) -> int:
        start = self.vm_index(idx)
        if not start:
            return 0
        end = self.find_next_zero_bit(self.vm_top, start + 1)
        return min(end, self.vm_top) - start

    def vm_free(self, idx: int) -> bool:
        """Returns False where Xen would WARN_ON and return."""
        bit = self.vm_index(idx)
        if not bit:
            return False

        if bit < self.vm_low:
            self.vm_low = bit - 1
            while not self.test_bit(self.vm_low - 1):
                self.vm_low -= 1
        while self.test_and_clear_bit(bit):
            bit += 1
            if bit == self.vm_top:
                break
        return True
