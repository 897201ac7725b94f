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

from vaalloc.errors import MappingError, RangeError
from vaalloc.lpae import ARMV7_S2_40, PageTable, PhysicalMemory
from vaalloc.lpae.descriptor import ADDR_MASK_40, S2AP_WRITE, TABLE, is_block, is_table
from vaalloc.xen.layout import (
    FIRST_SHIFT,
    FIRST_SIZE,
    LPAE_ENTRIES,
    LPAE_ENTRY_MASK,
    P2M_IPA_BITS,
    P2M_RAM_LOGDIRTY,
    P2M_RAM_LOGDIRTY_ATTRS,
    P2M_RAM_RW,
    P2M_RAM_RW_ATTRS,
    P2M_ROOT_ENTRIES,
    P2M_ROOT_PAGES,
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

_TYPE_RW = P2M_RAM_RW << P2M_TYPE_SHIFT
_TYPE_LOGDIRTY = P2M_RAM_LOGDIRTY << P2M_TYPE_SHIFT
# ram_rw + writable <-> ram_logdirty + read-only is one XOR: the write bit and the type bits
# that differ between the two types. Only entries matching exactly (type and write bit) flip.
_MATCH_MASK = P2M_TYPE_MASK | S2AP_WRITE
_RW_WRITABLE = _TYPE_RW | S2AP_WRITE
_FLIP = S2AP_WRITE | (_TYPE_RW ^ _TYPE_LOGDIRTY)


def p2m_type(desc: int) -> int:
    """The p2m type Xen keeps in software bits 55-58 of a leaf."""
    return (desc & P2M_TYPE_MASK) >> P2M_TYPE_SHIFT


def leaf_to_logdirty(desc: int) -> int:
    """Write-protect a writable ``ram_rw`` leaf as ``ram_logdirty``; others are returned as is."""
    return desc ^ _FLIP if desc & _MATCH_MASK == _RW_WRITABLE else desc


def leaf_to_rw(desc: int) -> int:
    """Make a ``ram_logdirty`` leaf ``ram_rw`` and writable; others are returned as is."""
    return desc ^ _FLIP if desc & _MATCH_MASK == _TYPE_LOGDIRTY else desc


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
    return _flip_table(values, _TYPE_LOGDIRTY)


class P2M:
    """The stage-2 tables and RAM frames of one domain, and the edits Xen makes to them.

    ``mem`` is the shared :class:`~vaalloc.lpae.PhysicalMemory`; ``ledger`` counts
    ``p2m_pte_writes``; ``on_change`` (settable) is told of every level-1/level-2 entry that
    changes, so the VLPT can update slots and flush the hyp VAs that changed.
    """

    def __init__(self, mem: PhysicalMemory, ledger: Ledger, name: str = "p2m") -> None:
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

    # --- memory helpers ---------------------------------------------------------------------
    def _mem_alloc(self, n: int, align: int) -> int:
        pa: int = self.mem.alloc_frames(n, align)
        return pa

    def _read(self, pa: int) -> int:
        v: int = self.mem.read64(pa)
        return v

    def write_entry(self, level: int, ipa: int, pa: int, value: int) -> None:
        """Store descriptor ``value`` at ``pa`` (the level-``level`` entry for ``ipa``).

        Table-level changes are reported to ``on_change`` *after* the store, with the old
        value, so the listener sees memory in its new state.
        """
        old = self._read(pa)
        self.mem.write64(pa, value)
        self.ledger.add("p2m_pte_writes")
        if level < 3 and old != value and self.on_change is not None:
            self.on_change(level, ipa, old, value)

    def _new_table(self, level: int, values: list[int] | None = None) -> int:
        pa = self.table.new_table(level)
        if values is not None:
            self.mem.write_table(pa, values)
            self.ledger.add("p2m_pte_writes", len(values))
        return pa

    def _free_table(self, pa: int) -> None:
        self.table.free_table(pa)

    # --- lookups ----------------------------------------------------------------------------
    @staticmethod
    def check_ipa(ipa: int) -> None:
        """Raise RangeError unless ``ipa`` is a valid 40-bit IPA."""
        if not 0 <= ipa < 1 << P2M_IPA_BITS:
            raise RangeError(f"IPA {ipa:#x} outside the 40-bit IPA space")

    def l1_pa(self, ipa: int) -> int:
        """PA of the level-1 (root) entry for ``ipa``."""
        return self.root + (ipa >> FIRST_SHIFT) * PTE_SIZE

    def read_l1(self, ipa: int) -> int:
        """The level-1 (root) entry covering ``ipa``."""
        return self._read(self.l1_pa(ipa))

    def l2_pa(self, ipa: int) -> int | None:
        """PA of the level-2 entry for ``ipa``, or None when level 1 is not a table."""
        l1 = self._read(self.l1_pa(ipa))
        if not is_table(l1):
            return None
        return (l1 & ADDR_MASK_40) + ((ipa >> SECOND_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE

    def l3_pa(self, ipa: int) -> int | None:
        """PA of the level-3 entry for ``ipa``, or None when level 2 is not a table."""
        l2pa = self.l2_pa(ipa)
        if l2pa is None:
            return None
        l2 = self._read(l2pa)
        if not is_table(l2):
            return None
        return (l2 & ADDR_MASK_40) + ((ipa >> PAGE_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE

    def leaf(self, ipa: int) -> tuple[int, int, int] | None:
        """``(level, entry_pa, descriptor)`` of the valid leaf mapping ``ipa``, else None."""
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
    def _ensure_l2(self, ipa: int) -> int:
        """PA of the level-2 table under ``ipa``'s root entry, created if missing.

        Xen's p2m_create_table: the entry is written with P2M_TABLE_ATTRS (AF=1, XN=1).
        """
        l1pa = self.l1_pa(ipa)
        l1 = self._read(l1pa)
        if is_table(l1):
            return l1 & ADDR_MASK_40
        if is_block(l1):
            raise MappingError(f"{self.name}: IPA {ipa:#x} is inside a 1GB block")
        table = self._new_table(2)
        self.write_entry(1, ipa, l1pa, table | P2M_TABLE_ATTRS)
        return table

    def populate(self, ipa: int, size: int, superpage: bool, *, logdirty: bool = False) -> None:
        """Map fresh RAM at ``[ipa, ipa + size)`` (2MB aligned pieces, or a partial last one).

        Each 2MB of IPA gets one RAM run (2MB aligned frames) mapped either as one 2MB block
        (``superpage`` and a whole 2MB) or as a new level-3 table of 512 pages, of type
        ``ram_rw`` or, with ``logdirty``, clean ``ram_logdirty`` (write-protected). Raises
        MappingError if any part is already mapped (checked before anything changes).
        """
        self.check_ipa(ipa)
        self.check_ipa(ipa + size - 1)
        if ipa % SECOND_SIZE or size <= 0 or size % PAGE_SIZE:
            raise RangeError(f"{self.name}: populate({ipa:#x}, {size:#x}) not 2MB/4KB aligned")
        for chunk in range(ipa, ipa + size, SECOND_SIZE):
            if chunk >> SECOND_SHIFT in self._runs:
                raise MappingError(f"{self.name}: IPA {chunk:#x} already populated")
        for chunk in range(ipa, ipa + size, SECOND_SIZE):
            n = min(SECOND_SIZE, ipa + size - chunk) >> PAGE_SHIFT
            self._populate_2mb(chunk, n, superpage and n == LPAE_ENTRIES, logdirty)

    def _populate_2mb(self, chunk: int, nr_pages: int, block: bool, logdirty: bool) -> None:
        run = self._mem_alloc(nr_pages, LPAE_ENTRIES)
        self._runs[chunk >> SECOND_SHIFT] = run
        l2 = self._ensure_l2(chunk)
        l2pa = l2 + ((chunk >> SECOND_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE
        leaf = P2M_RAM_LOGDIRTY_ATTRS if logdirty else P2M_RAM_RW_ATTRS
        if block:
            self.write_entry(2, chunk, l2pa, run | leaf)
            return
        page = leaf | TABLE
        values = [run + (i << PAGE_SHIFT) | page for i in range(nr_pages)]
        values += [0] * (LPAE_ENTRIES - nr_pages)
        table = self._new_table(3, values)
        self.write_entry(2, chunk, l2pa, table | P2M_TABLE_ATTRS)

    def depopulate(self, ipa: int, size: int) -> None:
        """Remove the RAM at ``[ipa, ipa + size)`` (whole 2MB pieces) and free its frames.

        Frees the level-3 tables that held it and any level-2 table left empty (Xen's
        balloon-out path). Raises MappingError (nothing changed) if a piece is not populated.
        """
        if ipa % SECOND_SIZE or size <= 0 or size % SECOND_SIZE:
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
    def split_gb(self, ipa: int) -> bool:
        """Replace a 1GB block at ``ipa``'s root entry by a table of 512 2MB blocks.

        Break-before-make: the caller flushes the guest TLB (the block is unchanged in
        meaning). Returns False if there was no 1GB block.
        """
        l1pa = self.l1_pa(ipa)
        l1 = self._read(l1pa)
        if not is_block(l1):
            return False
        base = l1 & ADDR_MASK_40 & ~(FIRST_SIZE - 1)
        attrs = l1 & ~ADDR_MASK_40
        table = self._new_table(
            2, [base + (i << SECOND_SHIFT) | attrs for i in range(LPAE_ENTRIES)]
        )
        self.write_entry(1, ipa, l1pa, 0)
        self.write_entry(1, ipa, l1pa, table | P2M_TABLE_ATTRS)
        return True

    def split_block(self, ipa: int, invalidate: Callable[[], None] | None = None) -> int:
        """Split the 2MB block mapping ``ipa`` into a level-3 table of 512 pages.

        The pages keep the block's attributes and type. Writes the level-2 entry
        break-before-make: invalid first, then ``invalidate()`` (the caller's stage-2 TLB
        maintenance), then the table. Returns the new table's PA. Raises MappingError if no
        2MB block maps ipa.
        """
        l2pa = self.l2_pa(ipa)
        old = self._read(l2pa) if l2pa is not None else 0
        if l2pa is None or not is_block(old):
            raise MappingError(f"{self.name}: no 2MB block maps IPA {ipa:#x}")
        base = old & ADDR_MASK_40 & ~(SECOND_SIZE - 1)
        attrs = (old & ~ADDR_MASK_40) | TABLE
        table = self._new_table(3, [base + (i << PAGE_SHIFT) | attrs for i in range(LPAE_ENTRIES)])
        self.write_entry(2, ipa, l2pa, 0)
        if invalidate is not None:
            invalidate()
        self.write_entry(2, ipa, l2pa, table | P2M_TABLE_ATTRS)
        return table

    # --- bulk walks -------------------------------------------------------------------------
    def l2_tables(self) -> Iterator[tuple[int, int]]:
        """Yield ``(gb_index, l2_table_pa)`` for every root entry that is a table."""
        for i, e in enumerate(self.mem.read_table(self.root, P2M_ROOT_ENTRIES)):
            if is_table(e):
                yield i, e & ADDR_MASK_40

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
        """Write-protect every ``ram_rw`` leaf as ``ram_logdirty``. O(tables). Returns #leaves."""
        return self._edit_leaves(_protect_table)

    def unprotect_all(self) -> int:
        """Make every ``ram_logdirty`` leaf ``ram_rw`` and writable. Returns #leaves changed."""
        return self._edit_leaves(_unprotect_table)

    def leaves(self) -> Iterator[tuple[int, int, int]]:
        """Yield ``(ipa, size, descriptor)`` for every valid leaf, ascending."""
        for gb, l2 in self.l2_tables():
            for i2, e in enumerate(self.mem.read_table(l2)):
                base = (gb << FIRST_SHIFT) + (i2 << SECOND_SHIFT)
                if is_block(e):
                    yield base, SECOND_SIZE, e
                elif is_table(e):
                    for i3, leaf in enumerate(self.mem.read_table(e & ADDR_MASK_40)):
                        if is_table(leaf):
                            yield base + (i3 << PAGE_SHIFT), PAGE_SIZE, leaf

    def populated(self, ipa: int) -> bool:
        """True if the 2MB piece holding ``ipa`` has RAM."""
        return ipa >> SECOND_SHIFT in self._runs

    @property
    def frames(self) -> int:
        """Number of table frames this p2m holds (root pages included)."""
        return sum(1 for _ in self.table.owned_tables()) - 1 + P2M_ROOT_PAGES

    def free(self) -> None:
        """Free every RAM run and table frame, root included. The P2M is dead afterwards."""
        for run in self._runs.values():
            self.mem.free_frames(run)
        self._runs.clear()
        self.table.free()
        self.root = -1
