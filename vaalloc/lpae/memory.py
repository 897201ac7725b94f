"""Sparse physical memory: the place every page table and guest frame of the model lives.

Storage is a dict from frame number (``pa >> 12``) to an ``array('Q')`` of 512 little-endian
64-bit words, created on the first write to that frame.  A 64-bit read is one dict lookup and
one array index, which is what the walker does per level; a populated frame costs 4096 bytes
plus a few dozen bytes of header, so tables cost about 8 bytes per descriptor.

Storage and allocation are independent, as on hardware: a write to any ``pa < 2**pa_bits``
is stored whether or not a frame there was allocated (a guest's RAM, a device window, a
table someone placed by hand); *allocation* is bookkeeping done by a
:class:`vaalloc.alloc.RangeAllocator` over ``[ram_base, ram_base + ram_size)`` so that leaks
show in :attr:`PhysicalMemory.frames_in_use`.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping

from vaalloc.alloc import RangeAllocator
from vaalloc.errors import AlignmentError, InvalidFree, RangeError
from vaalloc.lpae._checks import check_int
from vaalloc.lpae._checks import shown as _shown

__all__ = ["FRAME_SIZE", "PhysicalMemory"]

FRAME_SIZE = 4096
FRAME_SHIFT = 12
_WORDS = FRAME_SIZE // 8
_ZERO_FRAME = bytes(FRAME_SIZE)
_ZERO_WORD = array("Q", [0])
_BIG_ENDIAN_HOST = sys.byteorder == "big"
#: The most one read_bytes / read_table call materialises (1GB): memory is sparse, results
#: are not, and a request for a terabyte should be refused, not fill the host.
MAX_READ_BYTES = 1 << 30


class PhysicalMemory:
    """Sparse, frame-granular physical memory with a frame allocator.

    ``pa_bits`` bounds every address (reads and writes at or above ``2**pa_bits`` raise
    RangeError).  Frames are allocated from RAM ``[ram_base, ram_base + ram_size)``
    (default: from 0x8000_0000, where Xen's guests and the Versatile Express put RAM, up to
    ``2**pa_bits``) through a first-fit ``RangeAllocator(..., granule=4096, guard=False,
    name="frames")``, so tables are packed low and runs of frames can be aligned (two
    concatenated stage-2 root pages need an 8KB-aligned pair).

    **Live tables.**  A run allocated with an ``owner`` (``alloc_frames(..., owner=pt)``, or
    claimed later with :meth:`claim_table`) is a live translation table of that owner:
    :meth:`free_frames` refuses it (InvalidFree) unless the owner frees it, so a table still
    linked into a tree cannot be freed from under the walkers.  :class:`PageTable` and Xen's
    own tables register every table frame they allocate; :meth:`table_allocations` lists them.

    **Fault injection.**  :attr:`alloc_hook` is called before every allocation and may raise
    OutOfSpace: the seam tests use to fail the k-th allocation of an operation.

    Raises RangeError for a ``pa_bits`` that is not an int in 32..52 or a RAM range that is
    not ints inside it, AlignmentError for a RAM range that is not 4KB-aligned.

    Not thread-safe by itself: callers that share one memory between threads serialise
    around it (the allocator underneath has its own lock).
    """

    def __init__(
        self,
        pa_bits: int = 40,
        *,
        ram_base: int = 0x8000_0000,
        ram_size: int | None = None,
    ) -> None:
        check_int(pa_bits, "PhysicalMemory", "pa_bits")
        if not 32 <= pa_bits <= 52:
            raise RangeError(f"PhysicalMemory(pa_bits={pa_bits}): expected 32..52")
        limit = 1 << pa_bits
        check_int(ram_base, "PhysicalMemory", "ram_base")
        if ram_size is None:
            ram_size = limit - ram_base
        check_int(ram_size, "PhysicalMemory", "ram_size")
        if ram_base % FRAME_SIZE or ram_size % FRAME_SIZE:
            raise AlignmentError(
                f"PhysicalMemory RAM [{ram_base:#x}, +{ram_size:#x}) is not 4KB-aligned"
            )
        if ram_base < 0 or ram_size <= 0 or ram_base + ram_size > limit:
            raise RangeError(
                f"PhysicalMemory RAM [{ram_base:#x}, +{ram_size:#x}) does not fit "
                f"in {pa_bits} address bits"
            )
        self.pa_bits = pa_bits
        self.limit = limit
        self.ram_base = ram_base
        self.ram_end = ram_base + ram_size
        # frame number -> 512 words; the walker reads this dict directly for speed.
        self._frames: dict[int, array[int]] = {}
        self._allocator = RangeAllocator(
            ram_base,
            self.ram_end,
            granule=FRAME_SIZE,
            policy="first-fit",
            guard=False,
            name="frames",
        )
        self._frames_in_use = 0
        # Live table allocations: first PA of the run -> the object that owns the table.
        self._tables: dict[int, object] = {}
        self.trace: list[tuple[int, int]] | None = None
        """When a list, every 64-bit store appends ``(pa, value)``: tests use it to check the
        order of descriptor writes (break-before-make).  ``None`` (default) costs nothing."""
        self.alloc_hook: Callable[[int, int], None] | None = None
        """When set, called as ``alloc_hook(n, align)`` before every frame allocation (after
        the arguments were checked, before anything changes).  An exception it raises is the
        allocation's failure: raise :class:`~vaalloc.errors.OutOfSpace` to make this memory
        run out exactly there.  The seam fault-injection tests use to fail the k-th
        allocation of an operation and check that the operation then changed nothing.
        ``None`` (default) costs one attribute test per allocation."""

    def __repr__(self) -> str:
        return (
            f"PhysicalMemory(pa_bits={self.pa_bits}, ram=[{self.ram_base:#x}, "
            f"{self.ram_end:#x}), frames_in_use={self._frames_in_use})"
        )

    # -- frame allocation -------------------------------------------------------------------

    def alloc_frames(self, n: int = 1, align: int = 1, *, owner: object = None) -> int:
        """Allocate ``n`` contiguous zeroed frames aligned to ``align`` frames; return the PA.

        ``owner``, when given, marks the run as a live *table* of that object (a
        :class:`~vaalloc.lpae.PageTable`, Xen's own tables): :meth:`free_frames` then refuses
        it unless the same owner frees it, so a table still linked into a tree cannot be
        freed from under its walker.  First fit, O(log holes) in the allocator.

        Raises OutOfSpace when RAM has no such run (or :attr:`alloc_hook` says so),
        RangeError/AlignmentError for a bad ``n``/``align``; nothing changes on failure.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise RangeError(f"{self!r}.alloc_frames(n={n!r}): n must be a positive integer")
        if isinstance(align, bool) or not isinstance(align, int) or align <= 0:
            raise AlignmentError(f"{self!r}.alloc_frames(align={align!r}): not a power of two")
        if align & (align - 1):
            raise AlignmentError(f"{self!r}.alloc_frames(align={align!r}): not a power of two")
        if self.alloc_hook is not None:
            self.alloc_hook(n, align)
        pa: int = self._allocator.alloc(n, align)
        first = pa >> FRAME_SHIFT
        frames = self._frames
        for frame in range(first, first + n):
            frames.pop(frame, None)  # a freed frame may have been written since: zero it
        self._frames_in_use += n
        if owner is not None:
            self._tables[pa] = owner
        return pa

    def free_frames(self, pa: int, *, owner: object = None) -> int:
        """Free the run of frames allocated at ``pa``; return how many frames that was.

        The freed frames read as zero afterwards (their storage is dropped, like a scrubbed
        page), which also keeps the model's own memory use proportional to what is live.
        Raises InvalidFree if ``pa`` is not the start of a live allocation, if it is a live
        table and ``owner`` is not the object that owns it, or if ``owner`` is given and
        ``pa`` is not that owner's table; nothing changes then.
        """
        if isinstance(pa, bool) or not isinstance(pa, int) or pa % FRAME_SIZE:
            raise InvalidFree(f"{self!r}.free_frames({_shown(pa)}): not a frame address")
        holder = self._tables.get(pa)
        if holder is not owner:
            if holder is None:
                raise InvalidFree(
                    f"{self!r}.free_frames({pa:#x}, owner={owner!r}): not a table of that owner"
                )
            raise InvalidFree(f"{self!r}.free_frames({pa:#x}): a live table of {holder!r}")
        n: int = self._allocator.free(pa)
        first = pa >> FRAME_SHIFT
        for frame in range(first, first + n):
            self._frames.pop(frame, None)
        self._frames_in_use -= n
        if holder is not None:
            del self._tables[pa]
        return n

    def claim_table(self, pa: int, owner: object) -> None:
        """Mark the live allocation at ``pa`` as a table of ``owner`` (tables adopted from
        memory): from now on :meth:`free_frames` refuses it except from ``owner``.

        Raises InvalidFree if ``pa`` is not the start of a live allocation or is already a
        table of another owner, RangeError for an ``owner`` of None."""
        if owner is None:
            raise RangeError(f"{self!r}.claim_table({_shown(pa)}): owner must not be None")
        if not self.is_allocation(pa):
            raise InvalidFree(f"{self!r}.claim_table({_shown(pa)}): not a live allocation")
        holder = self._tables.get(pa)
        if holder is not None and holder is not owner:
            raise InvalidFree(f"{self!r}.claim_table({pa:#x}): already a table of {holder!r}")
        self._tables[pa] = owner

    def table_owner(self, pa: int) -> object:
        """The owner of the live table allocated at ``pa``, or None (not a table, or not the
        first frame of one; it never raises).  O(1)."""
        return self._tables.get(pa) if isinstance(pa, int) else None

    def table_allocations(self) -> Iterator[tuple[int, object]]:
        """Live table allocations as ``(pa, owner)``, ascending."""
        tables = self._tables
        return iter([(pa, tables[pa]) for pa in sorted(tables)])

    @property
    def frames_in_use(self) -> int:
        """Frames currently allocated (not freed): compare before/after to spot leaks."""
        return self._frames_in_use

    @property
    def frames_free(self) -> int:
        """Frames of RAM not allocated (in any number of runs).  O(1)."""
        free: int = self._allocator.stats().free
        return free

    @property
    def populated_frames(self) -> int:
        """Frames that hold storage (written at least once since allocation or ever)."""
        return len(self._frames)

    def is_allocation(self, pa: int) -> bool:
        """True when ``pa`` is the first frame of a live allocation (False for anything that
        is not such an address, whatever its type: it never raises).  O(1)."""
        try:
            self._allocator.size(pa)
        except InvalidFree:
            return False
        return True

    def allocated(self) -> Iterator[tuple[int, int]]:
        """Live frame allocations as ``(pa, frames)``, ascending."""
        yield from self._allocator.allocations()

    # -- access -----------------------------------------------------------------------------

    def _check(self, pa: int, size: int) -> None:
        if isinstance(pa, bool) or not isinstance(pa, int) or not 0 <= pa < self.limit:
            raise RangeError(f"{self!r}: address {_shown(pa)} is outside [0, 2**{self.pa_bits})")
        if pa & (size - 1):
            raise AlignmentError(f"{self!r}: address {pa:#x} is not {size}-byte aligned")

    def _frame_for_write(self, frame: int) -> array[int]:
        words = self._frames.get(frame)
        if words is None:
            words = _ZERO_WORD * _WORDS  # exact-size allocation (array(bytes) over-allocates)
            self._frames[frame] = words
        return words

    def read64(self, pa: int) -> int:
        """The 64-bit little-endian word at ``pa`` (8-aligned); unpopulated memory reads 0.
        O(1).  Raises RangeError/AlignmentError."""
        self._check(pa, 8)
        words = self._frames.get(pa >> FRAME_SHIFT)
        return 0 if words is None else words[(pa >> 3) & (_WORDS - 1)]

    def write64(self, pa: int, value: int) -> None:
        """Store a 64-bit word at ``pa`` (8-aligned).  O(1).  Raises RangeError for an address
        beyond ``pa_bits`` or a value outside [0, 2**64), AlignmentError if misaligned."""
        self._check(pa, 8)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise RangeError(f"{self!r}.write64({pa:#x}, {value!r}): not a 64-bit value")
        self._frame_for_write(pa >> FRAME_SHIFT)[(pa >> 3) & (_WORDS - 1)] = value
        if self.trace is not None:
            self.trace.append((pa, value))

    def read32(self, pa: int) -> int:
        """The 32-bit little-endian word at ``pa`` (4-aligned).  Raises as read64."""
        self._check(pa, 4)
        words = self._frames.get(pa >> FRAME_SHIFT)
        if words is None:
            return 0
        return (words[(pa >> 3) & (_WORDS - 1)] >> ((pa & 4) * 8)) & 0xFFFF_FFFF

    def write32(self, pa: int, value: int) -> None:
        """Store a 32-bit word at ``pa`` (4-aligned).  Raises as write64."""
        self._check(pa, 4)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise RangeError(f"{self!r}.write32({pa:#x}, {value!r}): not a 32-bit value")
        self._merge(pa, value, 32)

    def read8(self, pa: int) -> int:
        """The byte at ``pa``.  Raises RangeError."""
        self._check(pa, 1)
        words = self._frames.get(pa >> FRAME_SHIFT)
        if words is None:
            return 0
        return (words[(pa >> 3) & (_WORDS - 1)] >> ((pa & 7) * 8)) & 0xFF

    def write8(self, pa: int, value: int) -> None:
        """Store one byte at ``pa``.  Raises RangeError."""
        self._check(pa, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 8:
            raise RangeError(f"{self!r}.write8({pa:#x}, {value!r}): not a byte")
        self._merge(pa, value, 8)

    def _merge(self, pa: int, value: int, bits: int) -> None:
        words = self._frame_for_write(pa >> FRAME_SHIFT)
        index = (pa >> 3) & (_WORDS - 1)
        shift = (pa & 7) * 8
        mask = ((1 << bits) - 1) << shift
        merged = (words[index] & ~mask) | (value << shift)
        words[index] = merged
        if self.trace is not None:
            self.trace.append((pa & ~7, merged))

    def read_bytes(self, pa: int, size: int) -> bytes:
        """``size`` bytes from ``pa`` (any alignment).  Raises RangeError for a bad address or
        size, a run past ``pa_bits`` or more than :data:`MAX_READ_BYTES` at once."""
        self._check(pa, 1)
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 0 <= size <= MAX_READ_BYTES
            or pa + size > self.limit
        ):
            raise RangeError(
                f"{self!r}.read_bytes({pa:#x}, {_shown(size)}): beyond the address space"
            )
        out = bytearray()
        end = pa + size
        while pa < end:
            frame_end = (pa | (FRAME_SIZE - 1)) + 1
            chunk = min(end, frame_end) - pa
            words = self._frames.get(pa >> FRAME_SHIFT)
            raw = _ZERO_FRAME if words is None else _frame_bytes(words)
            offset = pa & (FRAME_SIZE - 1)
            out += raw[offset : offset + chunk]
            pa += chunk
        return bytes(out)

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Every populated frame as ``(pa, 4096 bytes)``, ascending: what to copy into an
        emulator's RAM to reproduce this memory.  O(populated frames log populated frames)."""
        for frame in sorted(self._frames):
            yield frame << FRAME_SHIFT, _frame_bytes(self._frames[frame])

    # -- table access for the walkers and the table code ----------------------------------
    #
    # The calls below are what page-table code needs beyond single checked words: the storage
    # mapping the compiled walkers index directly (one dict lookup per level), whole tables in
    # one call, and unchecked 64-bit loads and stores for hot paths that validated their
    # arguments once at their own public boundary.  Every store still goes through the trace.

    @property
    def storage(self) -> Mapping[int, array[int]]:
        """Frame number (``pa >> 12``) -> that frame's 512 words, for every populated frame.

        Read it, never write through it (use :meth:`write64`, :meth:`store64` or
        :meth:`write_table`, which keep :attr:`trace`).  It is the live mapping, not a copy:
        the compiled walkers of :mod:`vaalloc.lpae.fastwalk` read descriptors from it."""
        return self._frames

    def is_populated(self, pa: int) -> bool:
        """Whether the frame holding ``pa`` has storage (was written since it was last
        dropped).  O(1).  Raises RangeError for an address outside ``[0, 2**pa_bits)``."""
        self._check(pa, 1)
        return pa >> FRAME_SHIFT in self._frames

    def drop(self, pa: int) -> None:
        """Drop the storage of the frame holding ``pa``: it reads as zero again and no longer
        appears in :meth:`frames`.  Allocation is untouched.  Used to undo a store that
        brought a frame into existence (a rolled-back table edit).  Raises RangeError for an
        address outside ``[0, 2**pa_bits)``."""
        self._check(pa, 1)
        self._frames.pop(pa >> FRAME_SHIFT, None)

    def load64(self, pa: int) -> int:
        """:meth:`read64` without argument checks: the caller guarantees an int ``pa``,
        8-aligned, below ``2**pa_bits``.  O(1)."""
        words = self._frames.get(pa >> FRAME_SHIFT)
        return 0 if words is None else words[(pa >> 3) & (_WORDS - 1)]

    def store64(self, pa: int, value: int) -> None:
        """:meth:`write64` without argument checks: the caller guarantees an int ``pa``,
        8-aligned, below ``2**pa_bits``, and ``0 <= value < 2**64``.  Traced.  O(1)."""
        self._frame_for_write(pa >> FRAME_SHIFT)[(pa >> 3) & (_WORDS - 1)] = value
        if self.trace is not None:
            self.trace.append((pa, value))

    def read_table(self, pa: int, n: int = _WORDS) -> list[int]:
        """The ``n`` consecutive 64-bit words from ``pa`` (a table: 512 descriptors, or a
        concatenated root); unpopulated memory reads as zero.  O(n), one slice per frame.

        Raises RangeError/AlignmentError for a bad ``pa`` or ``n``, a run past ``pa_bits`` or
        more than :data:`MAX_READ_BYTES` at once."""
        self._check(pa, 8)
        if (
            isinstance(n, bool)
            or not isinstance(n, int)
            or not 0 <= n <= MAX_READ_BYTES >> 3
            or pa + 8 * n > self.limit
        ):
            raise RangeError(f"{self!r}.read_table({pa:#x}, {n!r}): beyond the address space")
        out: list[int] = []
        while n:
            first = (pa >> 3) & (_WORDS - 1)
            k = min(n, _WORDS - first)
            words = self._frames.get(pa >> FRAME_SHIFT)
            out.extend([0] * k if words is None else words[first : first + k])
            n -= k
            pa += 8 * k
        return out

    def write_table(self, pa: int, values: Iterable[int]) -> None:
        """Store ``values`` as consecutive 64-bit words from ``pa``: a whole table in one call
        (one slice store per frame).  Traced word by word.  O(len(values)).

        Raises RangeError/AlignmentError for a bad ``pa``, a run past ``pa_bits`` or a value
        outside [0, 2**64); nothing is stored then."""
        self._check(pa, 8)
        if isinstance(values, (str, bytes, bytearray, memoryview)):
            raise RangeError(f"{self!r}.write_table({pa:#x}): {values!r:.40} are not 64-bit values")
        try:
            words = array("Q", values)
        except (OverflowError, TypeError, ValueError) as error:
            raise RangeError(
                f"{self!r}.write_table({pa:#x}): not 64-bit values ({error})"
            ) from None
        total = len(words)
        if pa + 8 * total > self.limit:
            raise RangeError(
                f"{self!r}.write_table({pa:#x}, {total} words): beyond the address space"
            )
        if self.trace is not None:
            self.trace.extend((pa + 8 * i, v) for i, v in enumerate(words))
        done = 0
        while done < total:
            first = (pa >> 3) & (_WORDS - 1)
            k = min(total - done, _WORDS - first)
            self._frame_for_write(pa >> FRAME_SHIFT)[first : first + k] = words[done : done + k]
            done += k
            pa += 8 * k


def _frame_bytes(words: array[int]) -> bytes:
    if _BIG_ENDIAN_HOST:  # pragma: no cover - the model stores little-endian memory
        swapped = array("Q", words)
        swapped.byteswap()
        return swapped.tobytes()
    return words.tobytes()
