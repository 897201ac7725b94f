"""A sparse, chunked bitmap: the allocator's ground truth.

One bit per granule, set = in use.  The bitmap is cut into chunks of :data:`CHUNK_BITS` bits;
each chunk is one Python ``int`` held in a dict, and a chunk whose bits are all clear is simply
absent.  That gives the three properties the allocator needs:

* construction is O(1) whatever the range (2**36 granules costs nothing until used);
* memory is proportional to the chunks that hold a set bit, never to the range size.  Every
  fully set chunk refers to the *same* ``int`` object (:data:`FULL`), so a long run costs one
  dict slot per chunk;
* a run of bits is set or cleared with whole-word (``int``) operations: one mask per partial
  chunk at the ends, one dict store per whole chunk in between, never a loop per bit.

The C equivalent is Xen's ``unsigned long`` bitmap with ``bitmap_set``/``bitmap_clear``; the
chunk dict plays the part of the lazily mapped bitmap pages of ``xen/common/vmap.c``.

Searches (:meth:`ChunkedBitmap.next_set`, :meth:`ChunkedBitmap.prev_set`) skip absent chunks
through a sorted list of present chunk numbers, so they cost O(log c) in the number of present
chunks plus the chunks they walk through.  The allocator does not search the bitmap on its hot
paths (its free-extent index answers those); these searches serve ``reserve``, ``check`` and
snapshot validation.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedList

__all__ = ["CHUNK_BITS", "FULL", "ChunkedBitmap"]

CHUNK_SHIFT = 12
#: Bits per chunk (4096 = one 512-byte word array, cheap to mask and copy).
CHUNK_BITS = 1 << CHUNK_SHIFT
_CHUNK_MASK = CHUNK_BITS - 1
#: The shared value of every fully set chunk.
FULL = (1 << CHUNK_BITS) - 1


def _lowest_bit(v: int) -> int:
    """Index of the lowest set bit of ``v`` (``v`` > 0)."""
    return (v & -v).bit_length() - 1


class ChunkedBitmap:
    """A sparse bitmap over the non-negative integers.

    Invariant: ``_chunks`` holds only non-zero chunks, and ``_keys`` is exactly the sorted set
    of their chunk numbers.
    """

    __slots__ = ("_chunks", "_keys")

    def __init__(self) -> None:
        self._chunks: dict[int, int] = {}
        self._keys: SortedList = SortedList()

    # -- single bits ------------------------------------------------------------------------

    def test(self, bit: int) -> bool:
        """Whether ``bit`` is set.  O(1)."""
        return bool((self._chunks.get(bit >> CHUNK_SHIFT, 0) >> (bit & _CHUNK_MASK)) & 1)

    # -- runs -------------------------------------------------------------------------------

    def set_run(self, start: int, n: int) -> None:
        """Set bits ``[start, start + n)``.  O(1 + n / CHUNK_BITS) int operations."""
        off = start & _CHUNK_MASK
        if off + n < CHUNK_BITS:  # fast path: inside one chunk, not filling it
            c = start >> CHUNK_SHIFT
            old = self._chunks.get(c, 0)
            if not old:
                self._keys.add(c)
            new = old | (((1 << n) - 1) << off)
            self._chunks[c] = FULL if new == FULL else new
            return
        self._update_run(start, n, True)

    def clear_run(self, start: int, n: int) -> None:
        """Clear bits ``[start, start + n)``.  O(1 + n / CHUNK_BITS) int operations."""
        off = start & _CHUNK_MASK
        if off + n < CHUNK_BITS:
            c = start >> CHUNK_SHIFT
            new = self._chunks.get(c, 0) & ~(((1 << n) - 1) << off)
            if new:
                self._chunks[c] = new
                return
        self._update_run(start, n, False)

    def _update_run(self, start: int, n: int, value: bool) -> None:
        chunks = self._chunks
        end = start + n
        while start < end:
            c = start >> CHUNK_SHIFT
            off = start & _CHUNK_MASK
            take = min(CHUNK_BITS - off, end - start)
            old = chunks.get(c, 0)
            if take == CHUNK_BITS:
                new = FULL if value else 0
            else:
                mask = ((1 << take) - 1) << off
                new = (old | mask) if value else (old & ~mask)
            if new:
                if not old:
                    self._keys.add(c)
                # Share the one FULL object so that long runs cost a dict slot per chunk.
                chunks[c] = FULL if new == FULL else new
            elif old:
                del chunks[c]
                self._keys.remove(c)
            start += take

    def all_set(self, start: int, n: int) -> bool:
        """Whether every bit of ``[start, start + n)`` is set."""
        return self.count(start, n) == n

    def any_set(self, start: int, n: int) -> bool:
        """Whether any bit of ``[start, start + n)`` is set."""
        return self.next_set(start, start + n) < start + n

    def count(self, start: int, n: int) -> int:
        """Number of set bits in ``[start, start + n)``.  Walks the present chunks it covers."""
        chunks = self._chunks
        end = start + n
        total = 0
        keys = self._keys
        i = keys.bisect_left(start >> CHUNK_SHIFT)
        while i < len(keys):
            c = keys[i]
            base = c << CHUNK_SHIFT
            if base >= end:
                break
            v = chunks[c]
            lo = max(start - base, 0)
            hi = min(end - base, CHUNK_BITS)
            v = (v >> lo) & ((1 << (hi - lo)) - 1)
            total += v.bit_count()
            i += 1
        return total

    # -- searches ---------------------------------------------------------------------------

    def next_set(self, bit: int, limit: int) -> int:
        """Lowest set bit in ``[bit, limit)``, or ``limit`` if there is none (Xen's
        ``find_next_bit`` contract)."""
        if bit >= limit:
            return limit
        c = bit >> CHUNK_SHIFT
        v = self._chunks.get(c, 0) >> (bit & _CHUNK_MASK)
        if v:
            found = bit + _lowest_bit(v)
            return found if found < limit else limit
        keys = self._keys
        i = keys.bisect_right(c)
        if i == len(keys):
            return limit
        c = keys[i]
        found = (c << CHUNK_SHIFT) + _lowest_bit(self._chunks[c])
        return found if found < limit else limit

    def prev_set(self, bit: int, floor: int) -> int:
        """Highest set bit in ``[floor, bit]``, or ``floor - 1`` if there is none."""
        if bit < floor:
            return floor - 1
        c = bit >> CHUNK_SHIFT
        v = self._chunks.get(c, 0) & ((2 << (bit & _CHUNK_MASK)) - 1)
        if not v:
            keys = self._keys
            i = keys.bisect_left(c)
            if i == 0:
                return floor - 1
            c = keys[i - 1]
            v = self._chunks[c]
        found = (c << CHUNK_SHIFT) + v.bit_length() - 1
        return found if found >= floor else floor - 1

    def next_clear(self, bit: int, limit: int) -> int:
        """Lowest clear bit in ``[bit, limit)``, or ``limit`` (Xen's ``find_next_zero_bit``).

        Walks consecutive full chunks one by one: O(run length / CHUNK_BITS).
        """
        chunks = self._chunks
        while bit < limit:
            c = bit >> CHUNK_SHIFT
            off = bit & _CHUNK_MASK
            inv = ~(chunks.get(c, 0) >> off) & ((1 << (CHUNK_BITS - off)) - 1)
            if inv:
                found = bit + _lowest_bit(inv)
                return found if found < limit else limit
            bit = (c + 1) << CHUNK_SHIFT
        return limit

    def runs(self) -> Iterator[tuple[int, int]]:
        """Maximal runs of set bits as ``(start, end)`` pairs, ascending.  O(set chunks)."""
        run_start = -1
        run_end = -1
        for c in list(self._keys):
            v = self._chunks[c]
            base = c << CHUNK_SHIFT
            while v:
                low = _lowest_bit(v)
                t = v >> low
                length = (t ^ (t + 1)).bit_length() - 1
                s = base + low
                if s == run_end:
                    run_end = s + length
                else:
                    if run_start >= 0:
                        yield run_start, run_end
                    run_start, run_end = s, s + length
                v &= ~(((1 << length) - 1) << low)
        if run_start >= 0:
            yield run_start, run_end

    # -- bookkeeping ------------------------------------------------------------------------

    def popcount(self) -> int:
        """Total number of set bits."""
        return sum(v.bit_count() for v in self._chunks.values())

    @property
    def chunk_count(self) -> int:
        """Number of chunks holding at least one set bit (memory use is proportional to it)."""
        return len(self._chunks)

    def check(self) -> str | None:
        """Return a description of the first broken internal invariant, or None."""
        if list(self._keys) != sorted(self._chunks):
            return "chunk key list disagrees with the chunk dict"
        for c, v in self._chunks.items():
            if not 0 < v <= FULL:
                return f"chunk {c} holds out-of-range value"
        return None

    def copy(self) -> ChunkedBitmap:
        """An independent copy (chunks are immutable ints, so a shallow copy suffices)."""
        other = ChunkedBitmap()
        other._chunks = dict(self._chunks)
        other._keys = SortedList(self._keys)
        return other
