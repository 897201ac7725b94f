"""A domain's p2m: the ARMv7 stage-2 tables (40-bit IPA) mapping its RAM, built as Xen does.

The tables are written straight into :class:`vaalloc.lpae.PhysicalMemory` with the exact
descriptors Xen writes (``mfn_to_p2m_entry``), so :class:`vaalloc.lpae.PageTable` walks them and
Xen's hyp walker can read them through the VLPT.  The root is level 1: two concatenated pages,
1024 entries of 1GB.  Guest RAM frames are taken in 2MB-aligned runs (one per 2MB of IPA), so
a 4GB guest costs 2048 allocations, not a million.

Ownership: this module allocates every table frame and RAM run of the domain and frees them
in :meth:`P2M.free`; ``PageTable`` only adopts the root to walk it.

Invariants (checked by the tests):

* level-1 and level-2 entries are invalid, a table (``P2M_TABLE_ATTRS``, AF=1) or a RAM block;
  no level-1 block survives :meth:`P2M.split_gb` (the VLPT never copies a 1GB block);
* every valid RAM leaf has type ``ram_rw`` (writable) or ``ram_logdirty`` (write-protected).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vaalloc.errors import InvalidFree, MappingError, OutOfSpace, RangeError
from vaalloc.lpae import ARMV7_S2_40, PageTable, PhysicalMemory
from vaalloc.lpae._checks import check_bool, check_int, shown
from vaalloc.lpae.descriptor import ADDR_MASK_40, S2AP_WRITE, TABLE, is_block, is_table
from vaalloc.xen.layout import (
    FIRST_SHIFT,
    FIRST_SIZE,
    LPAE_ENTRIES,
    LPAE_ENTRY_MASK,
    P2M_IPA_BITS,
    P2M_LOGDIRTY_TYPE_BITS,
    P2M_RAM_LOGDIRTY_ATTRS,
    P2M_RAM_RW_ATTRS,
    P2M_ROOT_ENTRIES,
    P2M_ROOT_PAGES,
    P2M_RW_TYPE_BITS,
    P2M_TABLE_ATTRS,
    P2M_TYPE_MASK,
    P2M_TYPE_SHIFT,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_SIZE,
    SECOND_SHIFT,
    SECOND_SIZE,
)
from vaalloc.xen.ledger import Ledger

__all__ = [
    "P2M",
    "P2MChange",
    "leaf_to_logdirty",
    "leaf_to_rw",
    "p2m_type",
]

#: Callback ``(level, ipa, old, new)`` told of every level-1/level-2 entry change.
P2MChange = Callable[[int, int, int, int], None]

# ram_rw + writable <-> ram_logdirty + read-only is one XOR: the write bit and the type bits
# that differ between the two types. Only entries matching exactly (type and write bit) flip.
_MATCH_MASK = P2M_TYPE_MASK | S2AP_WRITE
_RW_WRITABLE = P2M_RW_TYPE_BITS | S2AP_WRITE
_FLIP = S2AP_WRITE | (P2M_RW_TYPE_BITS ^ P2M_LOGDIRTY_TYPE_BITS)


def _word(what: str, desc: object) -> RangeError:
    return RangeError(f"{what}({desc!r}): a descriptor is an int")


def p2m_type(desc: int) -> int:
    """The p2m type Xen keeps in software bits 55-58 of a leaf. Raises RangeError for a
    ``desc`` that is not an int."""
    if desc.__class__ is not int:
        raise _word("p2m_type", desc)
    return (desc & P2M_TYPE_MASK) >> P2M_TYPE_SHIFT


def leaf_to_logdirty(desc: int) -> int:
    """Write-protect a writable ``ram_rw`` leaf as ``ram_logdirty``; others are returned as is.
    Raises RangeError for a ``desc`` that is not an int."""
    if desc.__class__ is not int:
        raise _word("leaf_to_logdirty", desc)
    return desc ^ _FLIP if desc & _MATCH_MASK == _RW_WRITABLE else desc


def leaf_to_rw(desc: int) -> int:
    """Make a ``ram_logdirty`` leaf ``ram_rw`` and writable; others are returned as is.
    Raises RangeError for a ``desc`` that is not an int."""
    if desc.__class__ is not int:
        raise _word("leaf_to_rw", desc)
    return desc ^ _FLIP if desc & _MATCH_MASK == P2M_LOGDIRTY_TYPE_BITS else desc


def _flip_table(values: list[int], match: int) -> tuple[list[int], int]:
    """Flip (``^ _FLIP``) every entry whose type and write bits equal ``match``.

    Returns the new table and how many entries changed; the table itself when none did, so
    the caller can skip the store. Two C-level passes (mask, count) before any Python loop.
    """
    masked = list(map(_MATCH_MASK.__and__, values))
    n = masked.count(match)
    if not n:
        return values, 0
    return [e ^ _FLIP if m == match else e for e, m in zip(values, masked, strict=True)], n


def _protect_table(values: list[int]) -> tuple[list[int], int]:
    """Bulk :func:`leaf_to_logdirty` over one table; returns the new table and #changed."""
    return _flip_table(values, _RW_WRITABLE)


def _unprotect_table(values: list[int]) -> tuple[list[int], int]:
    """Bulk :func:`leaf_to_rw` over one table; returns the new table and #changed."""
    return _flip_table(values, P2M_LOGDIRTY_TYPE_BITS)


class P2M:
    """The stage-2 tables and RAM frames of one domain, and the edits Xen makes to them.

    ``mem`` is the shared :class:`~vaalloc.lpae.PhysicalMemory`; ``ledger`` counts
    ``p2m_pte_writes``; ``on_change`` (settable) is told of every level-1/level-2 entry that
    changes, so the VLPT can update slots and flush the hyp VAs that changed.

    **Splits never allocate in a fault.**  While log-dirty tracks a domain, every 2MB
    ``ram_logdirty`` block has one table frame reserved for it in the p2m's PageTable
    (:meth:`vaalloc.lpae.PageTable.reserve_tables`): the fault handler's :meth:`split_block`
    takes that frame, so a guest write can never fail for want of memory half-way through the
    handler.  The frames are reserved where failing is harmless: log-dirty enable and
    :meth:`populate` (both all-or-nothing), and given back when the block goes
    (:meth:`depopulate`), when tracking stops (:meth:`release_split_reserve`) or with the p2m.
    Xen's ARM p2m pool and KVM's memory cache make the same trade.

    Raises RangeError for a ``mem`` that is not a PhysicalMemory, a ``ledger`` that is not a
    Ledger or a ``name`` that is not a str; OutOfSpace when no root frame is left.
    """

    def __init__(self, mem: PhysicalMemory, ledger: Ledger, name: str = "p2m") -> None:
        if not isinstance(mem, PhysicalMemory):
            raise RangeError(f"P2M(mem={mem!r}): expected a PhysicalMemory")
        if not isinstance(ledger, Ledger):
            raise RangeError(f"P2M(ledger={ledger!r}): expected a Ledger")
        if not isinstance(name, str):
            raise RangeError(f"P2M(name={name!r}): expected a str")
        self.mem = mem
        self.ledger = ledger
        self.name = name
        self.on_change: P2MChange | None = None
        # Root: level 1, two concatenated pages (1024 entries), aligned to its size.
        # The tables live in a PageTable, so that its record of owned tables is always true
        # (d.p2m.check() holds); this class writes the descriptors, exactly as Xen does.
        self.table = PageTable(mem, ARMV7_S2_40)
        self.root: int = self.table.root
        self._runs: dict[int, int] = {}  # 2MB index (ipa >> 21) -> PA of its RAM run

    def __repr__(self) -> str:
        state = f"root={self.root:#x}" if self.root >= 0 else "freed"
        return f"P2M({self.name}, {state})"

    def _need_live(self, what: str) -> None:
        if self.root < 0:
            raise RangeError(f"{self!r}.{what}: this p2m was freed")

    # --- memory helpers ---------------------------------------------------------------------
    def _read(self, pa: int) -> int:
        v: int = self.mem.read64(pa)
        return v

    def write_entry(self, level: int, ipa: int, pa: int, value: int) -> None:
        """Store descriptor ``value`` at ``pa`` (the level-``level`` entry for ``ipa``).

        Table-level changes are reported to ``on_change`` *after* the store, with the old
        value, so the listener sees memory in its new state; when the listener raises (the
        VLPT refuses to show a 1GB block: InvariantError) the old value is put back and the
        error passes on.  Raises RangeError for a level outside 1..3, a bad IPA, PA or value
        (nothing stored), or a freed p2m."""
        self._need_live("write_entry")
        check_int(level, f"{self!r}.write_entry", "level", 1, 4)
        self.check_ipa(ipa)
        old = self._read(pa)
        self.mem.write64(pa, value)
        if level < 3 and old != value and self.on_change is not None:
            try:
                self.on_change(level, ipa, old, value)
            except BaseException:  # the listener refused it (a 1GB block under the VLPT)
                self.mem.write64(pa, old)
                raise
        self.ledger.add("p2m_pte_writes")

    def _new_table(self, level: int, values: list[int], *, reserved: bool = False) -> int:
        pa = self.table.new_table(level, reserved=reserved)
        self._fill(pa, values)
        return pa

    def _fill(self, table: int, values: list[int]) -> None:
        self.mem.write_table(table, values)
        self.ledger.add("p2m_pte_writes", len(values))

    def _free_table(self, pa: int) -> None:
        self.table.free_table(pa)

    # --- lookups ----------------------------------------------------------------------------
    @staticmethod
    def check_ipa(ipa: int) -> None:
        """Raise RangeError unless ``ipa`` is a valid 40-bit IPA (an int, not a bool)."""
        if ipa.__class__ is not int or not 0 <= ipa < 1 << P2M_IPA_BITS:
            raise RangeError(f"IPA {shown(ipa)} outside the 40-bit IPA space")

    def l1_pa(self, ipa: int) -> int:
        """PA of the level-1 (root) entry for ``ipa``.  Raises RangeError for a bad IPA or a
        freed p2m."""
        self._need_live("l1_pa")
        self.check_ipa(ipa)
        return self.root + (ipa >> FIRST_SHIFT) * PTE_SIZE

    def read_l1(self, ipa: int) -> int:
        """The level-1 (root) entry covering ``ipa``.  Raises as :meth:`l1_pa`."""
        return self._read(self.l1_pa(ipa))

    def l2_pa(self, ipa: int) -> int | None:
        """PA of the level-2 entry for ``ipa``, or None when level 1 is not a table.  Raises
        as :meth:`l1_pa`."""
        l1 = self._read(self.l1_pa(ipa))
        if not is_table(l1):
            return None
        return (l1 & ADDR_MASK_40) + ((ipa >> SECOND_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE

    def l3_pa(self, ipa: int) -> int | None:
        """PA of the level-3 entry for ``ipa``, or None when level 2 is not a table.  Raises
        as :meth:`l1_pa`."""
        l2pa = self.l2_pa(ipa)
        if l2pa is None:
            return None
        l2 = self._read(l2pa)
        if not is_table(l2):
            return None
        return (l2 & ADDR_MASK_40) + ((ipa >> PAGE_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE

    def leaf(self, ipa: int) -> tuple[int, int, int] | None:
        """``(level, entry_pa, descriptor)`` of the valid leaf mapping ``ipa``, else None.
        Raises as :meth:`l1_pa`."""
        l1pa = self.l1_pa(ipa)
        d = self._read(l1pa)
        if is_block(d):
            return 1, l1pa, d
        if not is_table(d):
            return None
        l2pa = (d & ADDR_MASK_40) + ((ipa >> SECOND_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE
        d = self._read(l2pa)
        if is_block(d):
            return 2, l2pa, d
        if not is_table(d):
            return None
        l3pa = (d & ADDR_MASK_40) + ((ipa >> PAGE_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE
        d = self._read(l3pa)
        return (3, l3pa, d) if is_table(d) else None

    # --- building ---------------------------------------------------------------------------
    @staticmethod
    def populate_frames(ipa: int, size: int, superpage: bool, *, new_l2: int) -> int:
        """Frames :meth:`populate` takes for ``[ipa, ipa + size)``: RAM, one level-3 table per
        2MB piece not mapped as a block, and ``new_l2`` level-2 tables.  O(1).  Raises
        RangeError for arguments that are not ints (``superpage``: a bool)."""
        what = "P2M.populate_frames"
        check_int(ipa, what, "ipa", 0)
        check_int(size, what, "size", 0)
        check_bool(superpage, what, "superpage")
        check_int(new_l2, what, "new_l2", 0)
        pages = size >> PAGE_SHIFT
        chunks = -(-size // SECOND_SIZE)
        blocks = (size // SECOND_SIZE) if superpage else 0
        return pages + (chunks - blocks) + new_l2

    def populate(self, ipa: int, size: int, superpage: bool, *, logdirty: bool = False) -> None:
        """Map fresh RAM at ``[ipa, ipa + size)`` (2MB aligned pieces, or a partial last one).

        Each 2MB of IPA gets one RAM run (2MB aligned frames) mapped either as one 2MB block
        (``superpage`` and a whole 2MB) or as a new level-3 table of 512 pages, of type
        ``ram_rw`` or, with ``logdirty``, clean ``ram_logdirty`` (write-protected; a block
        then gets its split frame reserved, see the class docstring).

        All or nothing: every check, then every frame (runs, tables, reserve) is allocated,
        and only then is a descriptor written; a call that cannot get its frames is refused
        at once when RAM cannot hold them.  Raises RangeError for a bad range or flag or a
        freed p2m, MappingError if any part is already mapped or inside a 1GB block,
        OutOfSpace when the frames run out; nothing changed then.
        """
        self._need_live("populate")
        what = f"{self!r}.populate"
        check_int(ipa, what, "ipa")
        check_int(size, what, "size", 1)
        check_bool(superpage, what, "superpage")
        check_bool(logdirty, what, "logdirty")
        self.check_ipa(ipa)
        self.check_ipa(ipa + size - 1)
        if ipa % SECOND_SIZE or size % PAGE_SIZE:
            raise RangeError(f"{self.name}: populate({ipa:#x}, {size:#x}) not 2MB/4KB aligned")
        chunks = range(ipa, ipa + size, SECOND_SIZE)
        for chunk in chunks:
            if chunk >> SECOND_SHIFT in self._runs:
                raise MappingError(f"{self.name}: IPA {chunk:#x} already populated")
        # Which gigabytes need a level-2 table (the first chunk of each creates it).
        new_l2: list[int] = []
        for gb in range(ipa >> FIRST_SHIFT, ((ipa + size - 1) >> FIRST_SHIFT) + 1):
            l1 = self._read(self.root + gb * PTE_SIZE)
            if is_block(l1):
                where = max(ipa, gb << FIRST_SHIFT)
                raise MappingError(f"{self.name}: IPA {where:#x} is inside a 1GB block")
            if not is_table(l1):
                new_l2.append(gb)
        pieces = [(chunk, min(SECOND_SIZE, ipa + size - chunk) >> PAGE_SHIFT) for chunk in chunks]
        blocks = sum(1 for _, n in pieces if superpage and n == LPAE_ENTRIES)
        need = self.populate_frames(ipa, size, superpage, new_l2=len(new_l2))
        need += blocks if logdirty else 0
        free = self.mem.frames_free
        if need > free:
            raise OutOfSpace(
                f"{self.name}: populating [{ipa:#x}, {ipa + size:#x}) needs {need} frames "
                f"({need << PAGE_SHIFT:#x} bytes of RAM and tables); {free} are free"
            )
        runs, l2s, l3s = self._allocate(pieces, superpage, set(new_l2))
        try:
            if logdirty and blocks:
                self.table.reserve_tables(blocks)
        except BaseException:
            self._unallocate(runs, l2s, l3s)
            raise
        # Nothing below can fail: write, in the order Xen writes.
        leaf = P2M_RAM_LOGDIRTY_ATTRS if logdirty else P2M_RAM_RW_ATTRS
        for (chunk, n), run in zip(pieces, runs, strict=True):
            self._runs[chunk >> SECOND_SHIFT] = run
            l1pa = self.root + (chunk >> FIRST_SHIFT) * PTE_SIZE
            l2 = l2s.get(chunk >> FIRST_SHIFT)
            if l2 is not None and not is_table(self._read(l1pa)):
                self.write_entry(1, chunk, l1pa, l2 | P2M_TABLE_ATTRS)  # p2m_create_table
            else:
                l2 = self._read(l1pa) & ADDR_MASK_40
            l2pa = l2 + ((chunk >> SECOND_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE
            l3 = l3s.get(chunk)
            if l3 is None:
                self.write_entry(2, chunk, l2pa, run | leaf)
                continue
            page = leaf | TABLE
            values = [run + (i << PAGE_SHIFT) | page for i in range(n)]
            values += [0] * (LPAE_ENTRIES - n)
            self._fill(l3, values)
            self.write_entry(2, chunk, l2pa, l3 | P2M_TABLE_ATTRS)

    def _allocate(
        self, pieces: list[tuple[int, int]], superpage: bool, new_l2: set[int]
    ) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """The frames of a populate, in the order Xen takes them (per 2MB piece: its RAM run,
        the level-2 table of a new gigabyte, the level-3 table): ``(runs, level-2 tables by
        gigabyte, level-3 tables by chunk)``.  All or none."""
        runs: list[int] = []
        l2s: dict[int, int] = {}
        l3s: dict[int, int] = {}
        try:
            for chunk, n in pieces:
                runs.append(self.mem.alloc_frames(n, LPAE_ENTRIES))
                gb = chunk >> FIRST_SHIFT
                if gb in new_l2 and gb not in l2s:
                    l2s[gb] = self.table.new_table(2)
                if not (superpage and n == LPAE_ENTRIES):
                    l3s[chunk] = self.table.new_table(3)
        except BaseException:
            self._unallocate(runs, l2s, l3s)
            raise
        return runs, l2s, l3s

    def _unallocate(self, runs: list[int], l2s: dict[int, int], l3s: dict[int, int]) -> None:
        for table in [*l3s.values(), *l2s.values()]:
            self.table.free_table(table)
        for run in runs:
            self.mem.free_frames(run)

    def depopulate(self, ipa: int, size: int) -> None:
        """Remove the RAM at ``[ipa, ipa + size)`` (whole 2MB pieces) and free its frames.

        Frees the level-3 tables that held it, any level-2 table left empty (Xen's
        balloon-out path) and the split frame reserved for a log-dirty block. Raises
        RangeError for a bad range or a freed p2m, MappingError (nothing changed) if a piece
        is not populated.
        """
        self._need_live("depopulate")
        what = f"{self!r}.depopulate"
        check_int(ipa, what, "ipa")
        check_int(size, what, "size", 1)
        self.check_ipa(ipa)
        self.check_ipa(ipa + size - 1)
        if ipa % SECOND_SIZE or size % SECOND_SIZE:
            raise RangeError(f"{self.name}: depopulate({ipa:#x}, {size:#x}) not 2MB aligned")
        chunks = range(ipa, ipa + size, SECOND_SIZE)
        for chunk in chunks:
            if chunk >> SECOND_SHIFT not in self._runs:
                raise MappingError(f"{self.name}: IPA {chunk:#x} is not populated")
        for chunk in chunks:
            l2pa = self.l2_pa(chunk)
            assert l2pa is not None  # populated => level 1 is a table
            old = self._read(l2pa)
            self.write_entry(2, chunk, l2pa, 0)
            if is_table(old):
                self._free_table(old & ADDR_MASK_40)
            elif _is_tracked_block(old) and self.table.reserved_tables:
                self.table.release_reserved(1)
            self.mem.free_frames(self._runs.pop(chunk >> SECOND_SHIFT))
            self._free_l2_if_empty(chunk)

    def _free_l2_if_empty(self, ipa: int) -> None:
        l1pa = self.l1_pa(ipa)
        l1 = self._read(l1pa)
        table = l1 & ADDR_MASK_40
        if any(self.mem.read_table(table)):
            return
        self.write_entry(1, ipa, l1pa, 0)
        self._free_table(table)

    # --- splits -----------------------------------------------------------------------------
    def split_gb(self, ipa: int, table: int | None = None) -> bool:
        """Replace a 1GB block at ``ipa``'s root entry by a table of 512 2MB blocks.

        Break-before-make: the caller flushes the guest TLB (the block is unchanged in
        meaning). ``table``: a level-2 table of this p2m's PageTable (``table.new_table(2)``)
        to use, so that a caller can take every frame it needs before changing anything;
        None allocates one. Returns False (and uses nothing) if there was no 1GB block.
        Raises RangeError for a bad IPA or table or a freed p2m, OutOfSpace when no frame is
        left (nothing changed).
        """
        l1pa = self.l1_pa(ipa)
        l1 = self._read(l1pa)
        if table is not None and not any(
            pa == table and level == 2 for level, pa in self.table.owned_tables()
        ):
            raise RangeError(f"{self!r}.split_gb: {shown(table)} is not a level-2 table of it")
        if not is_block(l1):
            return False
        base = l1 & ADDR_MASK_40 & ~(FIRST_SIZE - 1)
        attrs = l1 & ~ADDR_MASK_40
        values = [base + (i << SECOND_SHIFT) | attrs for i in range(LPAE_ENTRIES)]
        if table is None:
            table = self._new_table(2, values)
        else:
            self._fill(table, values)
        self.write_entry(1, ipa, l1pa, 0)
        self.write_entry(1, ipa, l1pa, table | P2M_TABLE_ATTRS)
        return True

    def split_block(self, ipa: int, invalidate: Callable[[], None] | None = None) -> int:
        """Split the 2MB block mapping ``ipa`` into a level-3 table of 512 pages.

        The pages keep the block's attributes and type. Writes the level-2 entry
        break-before-make: invalid first, then ``invalidate()`` (the caller's stage-2 TLB
        maintenance), then the table. A ``ram_logdirty`` block takes the frame reserved for
        it (no allocation: the log-dirty fault path cannot run out of memory); any other
        block allocates one. Returns the new table's PA. Raises MappingError if no 2MB block
        maps ipa, RangeError for a bad IPA, an ``invalidate`` that is not callable or a freed
        p2m, OutOfSpace when no frame is left (nothing changed).
        """
        if invalidate is not None and not callable(invalidate):
            raise RangeError(f"{self!r}.split_block: invalidate={invalidate!r} is not callable")
        l2pa = self.l2_pa(ipa)
        old = self._read(l2pa) if l2pa is not None else 0
        if l2pa is None or not is_block(old):
            raise MappingError(f"{self.name}: no 2MB block maps IPA {ipa:#x}")
        base = old & ADDR_MASK_40 & ~(SECOND_SIZE - 1)
        attrs = (old & ~ADDR_MASK_40) | TABLE
        reserved = _is_tracked_block(old) and self.table.reserved_tables > 0
        values = [base + (i << PAGE_SHIFT) | attrs for i in range(LPAE_ENTRIES)]
        table = self._new_table(3, values, reserved=reserved)
        self.write_entry(2, ipa, l2pa, 0)
        if invalidate is not None:
            invalidate()
        self.write_entry(2, ipa, l2pa, table | P2M_TABLE_ATTRS)
        return table

    # --- the split reserve (log-dirty) -------------------------------------------------------
    def tracked_blocks(self) -> int:
        """2MB blocks that log-dirty tracks or would track: ``ram_rw`` (writable) and
        ``ram_logdirty`` blocks, a 1GB block of those types counting for its 512. O(tables).
        Raises RangeError for a freed p2m."""
        self._need_live("tracked_blocks")
        count = 0
        for e in self.mem.read_table(self.root, P2M_ROOT_ENTRIES):
            if is_block(e) and _is_tracked_block(e):
                count += LPAE_ENTRIES
        for _gb, l2 in self.l2_tables():
            count += sum(1 for e in self.mem.read_table(l2) if is_block(e) and _is_tracked_block(e))
        return count

    def reserve_split_frames(self, n: int) -> None:
        """Reserve ``n`` more split frames (see the class docstring). All or none; raises
        RangeError for a bad ``n`` or a freed p2m, OutOfSpace (nothing changed)."""
        self._need_live("reserve_split_frames")
        self.table.reserve_tables(n)

    def release_split_reserve(self) -> int:
        """Give every reserved split frame back; return how many. Raises RangeError for a
        freed p2m."""
        self._need_live("release_split_reserve")
        return self.table.release_reserved()

    @property
    def split_reserve(self) -> int:
        """Split frames reserved now (while tracking: one per ``ram_logdirty`` 2MB block)."""
        return self.table.reserved_tables if self.root >= 0 else 0

    # --- bulk walks -------------------------------------------------------------------------
    def l2_tables(self) -> Iterator[tuple[int, int]]:
        """Yield ``(gb_index, l2_table_pa)`` for every root entry that is a table. Raises
        RangeError for a freed p2m."""
        self._need_live("l2_tables")
        entries = self.mem.read_table(self.root, P2M_ROOT_ENTRIES)
        return iter([(i, e & ADDR_MASK_40) for i, e in enumerate(entries) if is_table(e)])

    def _edit_leaves(self, edit: Callable[[list[int]], tuple[list[int], int]]) -> int:
        """Apply a whole-table edit to every leaf table and to 2MB blocks; returns #changed."""
        changed = 0
        for _gb, l2 in self.l2_tables():
            entries = self.mem.read_table(l2)
            blocks = [e if is_block(e) else 0 for e in entries]
            new_blocks, n = edit(blocks)
            if n:
                merged = [
                    nb if is_block(e) else e for e, nb in zip(entries, new_blocks, strict=True)
                ]
                self.mem.write_table(l2, merged)
                changed += n
            for e in entries:
                if is_table(e):
                    t = e & ADDR_MASK_40
                    new, n = edit(self.mem.read_table(t))
                    if n:
                        self.mem.write_table(t, new)
                        changed += n
        self.ledger.add("p2m_pte_writes", changed)
        return changed

    def protect_all(self) -> int:
        """Write-protect every ``ram_rw`` leaf as ``ram_logdirty``. O(tables). Returns #leaves.
        Raises RangeError for a freed p2m."""
        return self._edit_leaves(_protect_table)

    def unprotect_all(self) -> int:
        """Make every ``ram_logdirty`` leaf ``ram_rw`` and writable. Returns #leaves changed.
        Raises RangeError for a freed p2m."""
        return self._edit_leaves(_unprotect_table)

    def leaves(self) -> Iterator[tuple[int, int, int]]:
        """``(ipa, size, descriptor)`` for every valid leaf, ascending. Raises RangeError for
        a freed p2m (when called, not when iterated)."""
        return self._leaves(self.l2_tables())

    def _leaves(self, l2_tables: Iterator[tuple[int, int]]) -> Iterator[tuple[int, int, int]]:
        for gb, l2 in l2_tables:
            for i2, e in enumerate(self.mem.read_table(l2)):
                base = (gb << FIRST_SHIFT) + (i2 << SECOND_SHIFT)
                if is_block(e):
                    yield base, SECOND_SIZE, e
                elif is_table(e):
                    for i3, leaf in enumerate(self.mem.read_table(e & ADDR_MASK_40)):
                        if is_table(leaf):
                            yield base + (i3 << PAGE_SHIFT), PAGE_SIZE, leaf

    def populated(self, ipa: int) -> bool:
        """True if the 2MB piece holding ``ipa`` has RAM. Raises RangeError for a bad IPA."""
        self.check_ipa(ipa)
        return ipa >> SECOND_SHIFT in self._runs

    def runs(self) -> list[tuple[int, int]]:
        """``(ipa, pa)`` of every 2MB piece's RAM run, ascending."""
        return [(i << SECOND_SHIFT, pa) for i, pa in sorted(self._runs.items())]

    @property
    def frames(self) -> int:
        """Number of table frames this p2m holds (root pages included). Raises RangeError for
        a freed p2m."""
        self._need_live("frames")
        return sum(1 for _ in self.table.owned_tables()) - 1 + P2M_ROOT_PAGES

    @property
    def live(self) -> bool:
        """False once :meth:`free` has run."""
        return self.root >= 0

    def free(self) -> None:
        """Free every RAM run, table frame (root included) and reserved frame. The P2M is dead
        afterwards: every further call raises RangeError. Raises InvalidFree when it was
        already freed."""
        if self.root < 0:
            raise InvalidFree(f"{self!r}.free(): already freed")
        for run in self._runs.values():
            self.mem.free_frames(run)
        self._runs.clear()
        self.table.free()
        self.root = -1


def _is_tracked_block(desc: int) -> bool:
    """A block whose type log-dirty write-protects or has write-protected."""
    kind = desc & _MATCH_MASK
    return kind in (_RW_WRITABLE, P2M_LOGDIRTY_TYPE_BITS)
