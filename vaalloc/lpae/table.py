"""Page tables in :class:`~vaalloc.lpae.memory.PhysicalMemory`: map, unmap, protect, walk.

A :class:`PageTable` is a root table plus the tables it created (or adopted).  Everything it
knows lives in memory as real descriptors; the object only remembers which table frames it
*owns* (``pa -> level``), so that it descends into its own tables when changing mappings and
treats any other table descriptor as an opaque link.  Links are what the VLPT plants: a slot
pointing at another domain's p2m, or at the table itself (a loop).  ``map``/``unmap`` never
write through a link into somebody else's tables and never free what they do not own; the
walker (:meth:`PageTable.walk`, :meth:`PageTable.mappings`) follows links like hardware does.

Write ordering is the architecture's (ARM ARM "break-before-make"): a valid descriptor is
never replaced by another valid one with a different output address or block size.  The old
entry is written invalid, the ``flush`` callback (TLB maintenance: the caller's DSB; TLBI; DSB)
runs, then the new entry is written.  A new table is filled completely before the descriptor
that links it is written, and a table is freed only after it is unlinked and flushed.

Every changing call is atomic: it keeps a journal of the descriptors it overwrote and the
frames it allocated; if anything fails (overlap found half-way, out of frames) the journal is
replayed backwards and the new frames freed, so tables and ``frames_in_use`` are as before.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Mapping

from vaalloc.errors import (
    AlignmentError,
    InvalidFree,
    InvariantError,
    MappingError,
    OutOfSpace,
    RangeError,
)
from vaalloc.lpae._checks import check_bool, check_int
from vaalloc.lpae._checks import shown as _shown
from vaalloc.lpae.descriptor import LEAF_ATTR_MASK, S1Attrs, S2Attrs
from vaalloc.lpae.fastwalk import translate_fn
from vaalloc.lpae.geometry import Format
from vaalloc.lpae.memory import FRAME_SIZE, PhysicalMemory
from vaalloc.lpae.walk import (
    ACCESS_BITS,
    Fault,
    Translation,
    geometry_of,
    leaf_pa,
    walk,
)

__all__ = ["PageTable"]

FlushHook = Callable[[int, int], None]
_PERMISSION_BITS = (3 << 6) | (1 << 53) | (1 << 54) | (0xF << 55) | (1 << 10)


def _classify(desc: int, level: int, first_block_level: int) -> tuple[bool, bool]:
    """``(is_leaf, is_table)`` of ``desc`` at ``level``, the one reading the plan and the
    change both follow: at level 3 0b11 is a page and anything else translates nothing;
    above it 0b11 is a table and 0b01 a block where the format has blocks at that level."""
    if level == 3:
        return desc & 3 == 3, False
    return desc & 3 == 1 and level >= first_block_level, desc & 3 == 3


class _Txn:
    """Undo journal of one changing call (see the module docstring).

    It holds the owning PageTable's ownership records (``tables``: pa -> level, ``allocated``)
    by reference, so that tables it creates are owned at once and forgotten on rollback."""

    __slots__ = (
        "allocated",
        "created",
        "frees",
        "fresh",
        "journal",
        "mem",
        "owner",
        "pool",
        "release",
        "tables",
    )

    def __init__(
        self,
        mem: PhysicalMemory,
        owner: PageTable,
        tables: dict[int, int],
        allocated: set[int],
        release: Callable[[int], None],
        pool: list[int],
    ) -> None:
        self.mem = mem
        self.owner = owner
        self.tables = tables
        self.allocated = allocated
        self.release = release
        # The frames of every table this call may create, allocated before anything changed
        # (lowest last, so pop() hands them out in allocation order).
        self.pool = pool
        self.journal: list[tuple[int, int]] = []  # (slot pa, old value), in write order
        self.fresh: dict[int, int] = {}  # tables allocated by this call: pa -> level
        self.frees: list[int] = []  # owned tables unlinked by this call, freed on commit
        # Storage frames this call brought into existence (a table never written before):
        # a rollback drops them again, so even mem.frames() is as it was.
        self.created: set[int] = set()

    def touch(self, slot: int, n: int = 1) -> None:
        """Note the storage frames of ``n`` descriptors from ``slot`` that do not exist yet."""
        storage = self.mem.storage
        for frame in range(slot >> 12, ((slot + 8 * n - 1) >> 12) + 1):
            if frame not in storage:
                self.created.add(frame)

    def new_table(self, level: int) -> int:
        if not self.pool:
            raise InvariantError(f"{self.owner!r}: a change needed more tables than planned")
        pa = self.pool.pop()
        self.fresh[pa] = level
        self.tables[pa] = level
        self.allocated.add(pa)
        return pa

    def write(self, table: int, slot: int, value: int) -> None:
        if table not in self.fresh:
            self.touch(slot)
            self.journal.append((slot, self.mem.load64(slot)))
        self.mem.store64(slot, value)

    def commit(self) -> None:
        for pa in self.frees:
            self.release(pa)

    def rollback(self) -> None:
        mem = self.mem
        for slot, old in reversed(self.journal):
            mem.store64(slot, old)
        for frame in self.created:
            mem.drop(frame << 12)
        for pa in self.fresh:
            del self.tables[pa]
            self.allocated.discard(pa)
            mem.free_frames(pa, owner=self.owner)


class PageTable:
    """A translation table tree of one format, rooted at ``root``, in ``mem``.

    ``PageTable(mem, fmt)`` allocates a zeroed root (for ARMv7 40-bit stage 2: two
    concatenated pages, 8KB aligned).  ``PageTable(mem, fmt, root=pa)`` adopts tables already
    in memory: it claims the root and every table reachable from it once (a loop back to an
    already claimed table stays a link); claimed tables that are live frame allocations and
    not yet another owner's tables become this PageTable's (:meth:`free` frees them).

    Every table frame this object allocates is registered with ``mem`` as its table
    (:meth:`PhysicalMemory.alloc_frames` with ``owner``): ``mem.free_frames`` refuses it while
    the PageTable lives.  After :meth:`free` the object refuses every further use.

    ``table_attrs`` is ORed into every table descriptor ``map`` writes.  Stage 1 can use it for
    APTable/XNTable; Xen's p2m sets AF and the memory attributes there, which is what makes a
    p2m table entry readable as a page through the VLPT.  ``flush(va, size)`` is called after
    descriptors covering ``[va, va+size)`` were invalidated and before they are reused or
    their tables freed: the place for TLB maintenance.  A changing call that raises has called
    no ``flush``: everything that can make it fail (a bad range, an overlap, a frame it needs)
    is found before its first store.

    Raises RangeError for a ``mem`` that is not a PhysicalMemory, a ``fmt`` that is not a
    Format, bad ``table_attrs``, a ``flush`` that is not callable or a bad root,
    AlignmentError for a misaligned root, OutOfSpace if no root frame is left.
    """

    def __init__(
        self,
        mem: PhysicalMemory,
        fmt: Format,
        *,
        root: int | None = None,
        table_attrs: int = 0,
        flush: FlushHook | None = None,
    ) -> None:
        if not isinstance(mem, PhysicalMemory):
            raise RangeError(f"PageTable(mem={mem!r}): expected a PhysicalMemory")
        if not isinstance(fmt, Format):
            raise RangeError(f"PageTable: {fmt!r} is not a Format")
        check_int(table_attrs, f"PageTable({fmt.name})", "table_attrs", 0, 1 << 64)
        if table_attrs & fmt.addr_mask or table_attrs & 3:
            raise RangeError(
                f"PageTable({fmt.name}): table_attrs {table_attrs:#x} overlaps address/type bits"
            )
        if flush is not None and not callable(flush):
            raise RangeError(f"PageTable({fmt.name}): flush={flush!r} is not callable")
        self.mem = mem
        self.fmt = fmt
        self.table_attrs = table_attrs
        self.flush = flush
        self._geo = geometry_of(fmt)
        self._translate = translate_fn(self._geo)
        self._frames = mem.storage
        self._live = True
        # Owned tables, pa -> level; the invariant map/unmap rely on: a table descriptor at
        # level L is followed by them only if it points at an owned table of level L + 1.
        self._tables: dict[int, int] = {}
        self._allocated: set[int] = set()  # owned tables that are frame allocations to free
        self._reserve: list[int] = []  # zeroed table frames kept for new_table(reserved=True)
        root_frames = fmt.root_bytes // FRAME_SIZE
        if root is None:
            root = mem.alloc_frames(root_frames, root_frames, owner=self)
            self._allocated.add(root)
            self._tables[root] = fmt.start_level
        else:
            self._adopt(root)
        self.root = root

    def __repr__(self) -> str:
        state = f"tables={len(self._tables)}" if self._live else "freed"
        return f"PageTable({self.fmt.name}, root={self.root:#x}, {state})"

    def _need_live(self, op: str) -> None:
        if not self._live:
            raise RangeError(f"{self!r}.{op}: this PageTable was freed")

    def _txn(self, pool: list[int]) -> _Txn:
        return _Txn(self.mem, self, self._tables, self._allocated, self._release, pool)

    def _table_frames(self) -> int:
        return self.fmt.granule // FRAME_SIZE

    def _alloc_tables(self, n: int, op: str) -> list[int]:
        """``n`` table frames, all or none (OutOfSpace, nothing changed), registered as this
        PageTable's tables; lowest last.  Refuses at once when RAM cannot hold them."""
        if not n:
            return []
        frames = self._table_frames()
        free = self.mem.frames_free
        if n * frames > free:
            raise OutOfSpace(
                f"{self!r}.{op}: needs {n} new tables ({n * frames} frames), {free} frames are free"
            )
        got: list[int] = []
        try:
            for _ in range(n):
                got.append(self.mem.alloc_frames(frames, frames, owner=self))
        except BaseException:
            self._free_frames(got)
            raise
        got.reverse()
        return got

    def _free_frames(self, frames: list[int]) -> None:
        for pa in reversed(frames):
            self.mem.free_frames(pa, owner=self)
        frames.clear()

    def _run(self, op: str, needed: int, change: Callable[[_Txn], None]) -> _Txn:
        """Run ``change`` in a transaction whose ``needed`` new tables were allocated first:
        once it starts, nothing can fail for want of a frame."""
        pool = self._alloc_tables(needed, op)
        txn = self._txn(pool)
        try:
            change(txn)
        except BaseException:
            txn.rollback()
            self._free_frames(pool)
            raise
        if pool:  # pragma: no cover - the plan is exact (tests check it); never leak
            self._free_frames(pool)
        return txn

    # -- construction helpers ---------------------------------------------------------------

    def _adopt(self, root: int) -> None:
        fmt = self.fmt
        if isinstance(root, bool) or not isinstance(root, int):
            raise RangeError(f"PageTable({fmt.name}): root {root!r} is not an address")
        if root % min(fmt.root_bytes, fmt.granule) or root % 8:
            raise AlignmentError(f"PageTable({fmt.name}): root {root:#x} is not table-aligned")
        if not 0 <= root < min(self.mem.limit, 1 << fmt.oa_bits):
            raise RangeError(f"PageTable({fmt.name}): root {root:#x} beyond the output size")
        self._tables[root] = fmt.start_level
        stack = [(root, fmt.start_level)]
        while stack:
            table, level = stack.pop()
            if level == 3:
                continue
            for _, desc in self._entries(table, level):
                child = desc & fmt.addr_mask
                if desc & 3 == 3 and not desc & self._geo.oa_excess and child not in self._tables:
                    self._tables[child] = level + 1
                    stack.append((child, level + 1))
        mem = self.mem
        for pa in self._tables:
            # A live allocation nobody registered becomes ours; another owner's stays theirs.
            if mem.is_allocation(pa) and mem.table_owner(pa) is None:
                mem.claim_table(pa, self)
                self._allocated.add(pa)

    # -- raw storage ------------------------------------------------------------------------

    def _read(self, slot: int) -> int:
        return self.mem.load64(slot)

    def _write_run(self, slot: int, values: array[int]) -> None:
        """Store consecutive descriptors from ``slot`` (may cross storage frames)."""
        self.mem.write_table(slot, values)

    def _read_run(self, slot: int, n: int) -> list[int]:
        return self.mem.read_table(slot, n)

    def _entries(self, table: int, level: int) -> Iterator[tuple[int, int]]:
        """(index, descriptor) of the valid entries of ``table`` read at ``level``."""
        for index, desc in enumerate(self._read_run(table, self._table_entries(level))):
            if desc & 1:
                yield index, desc

    def _table_entries(self, level: int) -> int:
        fmt = self.fmt
        return fmt.root_entries if level == fmt.start_level else fmt.entries_per_table

    def _is_empty(self, table: int, level: int) -> bool:
        return not any(d & 1 for d in self._read_run(table, self._table_entries(level)))

    def _release(self, pa: int) -> None:
        del self._tables[pa]
        if pa in self._allocated:
            self._allocated.discard(pa)
            self.mem.free_frames(pa, owner=self)

    def _owned_child(self, desc: int, level: int) -> int | None:
        """The owned table a table descriptor at ``level`` leads to, or None for a link."""
        if level == 3 or desc & 3 != 3:
            return None
        child = desc & self.fmt.addr_mask
        return child if self._tables.get(child) == level + 1 else None

    def _subtree(self, table: int, level: int) -> Iterator[int]:
        """Owned tables under (and including) ``table``, children first."""
        if level < 3:
            for _, desc in self._entries(table, level):
                child = self._owned_child(desc, level)
                if child is not None:
                    yield from self._subtree(child, level + 1)
        yield table

    def _leaf_type(self, level: int) -> int:
        return 3 if level == 3 else 1

    # -- validation -------------------------------------------------------------------------

    def _check_range(self, va: int, size: int, op: str) -> None:
        self._need_live(op)
        fmt = self.fmt
        for name, value in (("va", va), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RangeError(f"{self!r}.{op}: {name} {value!r} is not an integer")
        if size <= 0:
            raise RangeError(f"{self!r}.{op}: size {size:#x} must be positive")
        if va % fmt.granule or size % fmt.granule:
            raise AlignmentError(
                f"{self!r}.{op}: va {va:#x} / size {size:#x} not {fmt.granule:#x}-aligned"
            )
        if va < 0 or va + size > 1 << fmt.ia_bits:
            raise RangeError(
                f"{self!r}.{op}: [{va:#x}, {va + size:#x}) beyond the {fmt.ia_bits}-bit input"
            )

    def _attr_bits(self, attrs: S1Attrs | S2Attrs, op: str) -> int:
        expected = S1Attrs if self.fmt.stage == 1 else S2Attrs
        if not isinstance(attrs, expected):
            raise MappingError(
                f"{self!r}.{op}: {type(attrs).__name__} given, a stage-{self.fmt.stage} "
                f"table takes {expected.__name__}"
            )
        return attrs.bits

    # -- map --------------------------------------------------------------------------------

    def map(
        self,
        va: int,
        pa: int,
        size: int,
        attrs: S1Attrs | S2Attrs,
        *,
        replace: bool = False,
        max_level_block: int | None = None,
    ) -> None:
        """Map ``[va, va+size)`` to ``[pa, pa+size)`` with ``attrs``, using the largest legal
        blocks (1GB/2MB with 4KB pages) wherever va and pa are both aligned to them.

        ``max_level_block`` is the shallowest level a leaf may be placed at (3 = pages only,
        2 = up to 2MB blocks); default: the format's first block level.  Without ``replace``
        any existing entry in the range is an overlap (MappingError); with it, existing leaves
        are replaced (blocks partly covered are split, break-before-make) and owned tables
        entirely covered by a new block are freed.

        Cost: O(tables touched + leaves written); whole runs of leaves in one table are
        written with one slice store, so 1M 4KB pages cost ~2050 table allocations and as many
        bulk stores.  Raises AlignmentError (va/pa/size not granule aligned), RangeError
        (beyond the input or output size, or a bad ``max_level_block``), MappingError (overlap,
        or attrs of the wrong stage), OutOfSpace (no frame for a table).  Nothing changes
        when it raises: a bad argument, an overlap or a missing frame is found before the first
        store (the tables it needs are allocated first), so no ``flush`` has run either.
        RangeError also for a ``replace`` that is not a bool, or a freed PageTable.
        """
        fmt = self.fmt
        self._check_range(va, size, "map")
        if isinstance(pa, bool) or not isinstance(pa, int) or pa % fmt.granule:
            raise AlignmentError(f"{self!r}.map: pa {pa!r} is not {fmt.granule:#x}-aligned")
        limit = min(1 << fmt.oa_bits, self.mem.limit)
        if pa < 0 or pa + size > limit:
            raise RangeError(
                f"{self!r}.map: pa range [{pa:#x}, {pa + size:#x}) beyond the output size "
                f"({limit:#x})"
            )
        bits = self._attr_bits(attrs, "map")
        check_bool(replace, f"{self!r}.map", "replace")
        if max_level_block is None:
            min_level = fmt.first_block_level
        elif (
            isinstance(max_level_block, bool)
            or not isinstance(max_level_block, int)
            or not 0 <= max_level_block <= 3
        ):
            raise RangeError(f"{self!r}.map: max_level_block {max_level_block!r} not in 0..3")
        elif not fmt.can_block(max_level_block):
            raise MappingError(
                f"{self!r}.map: level {max_level_block} cannot hold a block in {fmt.name}"
            )
        else:
            min_level = max_level_block
        root, start, end = self.root, fmt.start_level, va + size
        needed = self._plan_map(root, start, va, end, pa, replace, min_level)

        def change(txn: _Txn) -> None:
            self._map_in(txn, root, start, va, end, pa, bits, replace, min_level)

        self._run("map", needed, change).commit()

    def _map_in(
        self,
        txn: _Txn,
        table: int,
        level: int,
        va: int,
        end: int,
        pa: int,
        bits: int,
        replace: bool,
        min_level: int,
    ) -> None:
        fmt = self.fmt
        shift = fmt.shifts[level]
        size = 1 << shift
        mask = size - 1
        index_mask = self._table_entries(level) - 1
        leaves_here = level >= min_level and fmt.can_block(level) and not (va - pa) & mask
        while va < end:
            slot_end = (va | mask) + 1
            if leaves_here and not va & mask and end >= slot_end:
                # A run of whole slots becomes leaves: one bulk store.
                n = min((end - va) >> shift, index_mask + 1 - ((va >> shift) & index_mask))
                slot = table + (((va >> shift) & index_mask) << 3)
                self._store_leaves(txn, table, level, slot, va, pa, n, bits, replace)
                va += n << shift
                pa += n << shift
                continue
            chunk_end = min(end, slot_end)
            slot = table + (((va >> shift) & index_mask) << 3)
            child, is_new = self._child_for_write(txn, table, level, slot, va, replace)
            self._map_in(txn, child, level + 1, va, chunk_end, pa, bits, replace, min_level)
            if is_new:  # filled before it is linked
                self._link(txn, table, level, slot, child, va)
            pa += chunk_end - va
            va = chunk_end

    def _store_leaves(
        self,
        txn: _Txn,
        table: int,
        level: int,
        slot: int,
        va: int,
        pa: int,
        n: int,
        bits: int,
        replace: bool,
    ) -> None:
        size = 1 << self.fmt.shifts[level]
        first = pa | bits | self._leaf_type(level)
        new = array("Q", range(first, first + n * size, size))
        if table in txn.fresh:
            self._write_run(slot, new)
            return
        old = self._read_run(slot, n)
        valid = [i for i, desc in enumerate(old) if desc & 1]
        if valid and not replace:  # pragma: no cover - the plan found it first
            raise self._overlap(va, level, old, valid[0])
        for i in valid:  # break...
            child = self._owned_child(old[i], level)
            if child is not None:
                txn.frees.extend(self._subtree(child, level + 1))
            txn.write(table, slot + 8 * i, 0)
        if valid and self.flush is not None:
            self.flush(va, n * size)
        broken = set(valid)
        txn.journal.extend((slot + 8 * i, old[i]) for i in range(n) if i not in broken)
        txn.touch(slot, n)
        self._write_run(slot, new)  # ...before make

    def _child_for_write(
        self, txn: _Txn, table: int, level: int, slot: int, va: int, replace: bool
    ) -> tuple[int, bool]:
        """The owned table below ``slot`` to continue a write into: the existing child, or a
        new table (filled with the pieces of a block being split, when replacing)."""
        old = self._read(slot)
        if not old & 1:
            return txn.new_table(level + 1), True
        child = self._owned_child(old, level)
        if child is not None:
            return child, False
        if not replace:  # pragma: no cover - the plan found it first
            raise self._covered(va, level, old)
        new = txn.new_table(level + 1)
        if old & 3 == 1 and self.fmt.can_block(level):  # a real block: keep what it mapped
            self._fill_split(new, level, old)
        return new, True

    def _fill_split(self, new: int, level: int, block: int) -> None:
        """Write into ``new`` (level+1) the entries that map what ``block`` maps."""
        fmt = self.fmt
        child_size = 1 << fmt.shifts[level + 1]
        low_bits = block & ~fmt.addr_mask & ~3
        base = block & fmt.addr_mask & ~((1 << fmt.shifts[level]) - 1)
        first = base | low_bits | self._leaf_type(level + 1)
        n = fmt.entries_per_table
        self._write_run(new, array("Q", range(first, first + n * child_size, child_size)))

    def _link(self, txn: _Txn, table: int, level: int, slot: int, child: int, va: int) -> None:
        """Make ``slot`` point at ``child`` if it does not already (break-before-make if the
        slot held a block or a foreign link)."""
        desc = child | self.table_attrs | 3
        old = self._read(slot)
        if old == desc:
            return
        if old & 1:
            txn.write(table, slot, 0)
            if self.flush is not None:
                size = 1 << self.fmt.shifts[level]
                self.flush(va & ~(size - 1), size)
        txn.write(table, slot, desc)

    # -- plans: what a change will need, found before it writes anything ---------------------
    #
    # map/unmap/protect first walk the range read-only with the same decisions the change
    # makes: every error the change could meet is raised here, before any store or flush, and
    # the plan returns the number of tables the change will create, which are allocated
    # before it starts.  A change therefore never fails half-way (its journal stays as the
    # defence against a flush callback that raises).  Inside a table the change creates
    # (empty, or a split block: all entries alike), what is needed depends only on the range
    # and on va - pa, so it is counted arithmetically, O(levels), not slot by slot.

    def _overlap(self, va: int, level: int, old: list[int], i: int) -> MappingError:
        where = va + i * (1 << self.fmt.shifts[level])
        return MappingError(
            f"{self!r}.map: {where:#x} is already mapped (level {level} entry "
            f"{old[i]:#x}); pass replace=True to overwrite"
        )

    def _covered(self, va: int, level: int, old: int) -> MappingError:
        kind = "block" if old & 3 == 1 else "link to a table not owned here"
        return MappingError(
            f"{self!r}.map: {va:#x} is covered by a level-{level} {kind} ({old:#x}); "
            "pass replace=True to overwrite"
        )

    def _plan_map(
        self, table: int, level: int, va: int, end: int, pa: int, replace: bool, min_level: int
    ) -> int:
        """Tables :meth:`_map_in` will create for ``[va, end)`` in owned ``table``; raises the
        MappingError it would raise."""
        fmt = self.fmt
        shift = fmt.shifts[level]
        mask = (1 << shift) - 1
        index_mask = self._table_entries(level) - 1
        leaves_here = level >= min_level and fmt.can_block(level) and not (va - pa) & mask
        count = 0
        while va < end:
            slot_end = (va | mask) + 1
            slot = table + (((va >> shift) & index_mask) << 3)
            if leaves_here and not va & mask and end >= slot_end:
                n = min((end - va) >> shift, index_mask + 1 - ((va >> shift) & index_mask))
                if not replace:
                    run = self._read_run(slot, n)
                    for i, desc in enumerate(run):
                        if desc & 1:
                            raise self._overlap(va, level, run, i)
                va += n << shift
                pa += n << shift
                continue
            chunk_end = min(end, slot_end)
            old = self._read(slot)
            child = self._owned_child(old, level) if old & 1 else None
            if child is not None:
                count += self._plan_map(child, level + 1, va, chunk_end, pa, replace, min_level)
            elif old & 1 and not replace:
                raise self._covered(va, level, old)
            else:  # a new table: empty, or the pieces of the block it replaces
                count += 1 + self._plan_new(level + 1, va, chunk_end, pa, min_level)
            pa += chunk_end - va
            va = chunk_end
        return count

    def _plan_new(self, level: int, va: int, end: int, pa: int, min_level: int) -> int:
        """Tables needed below a table created at ``level`` (all its entries invalid, or all
        leaves of a split block) to map ``[va, end)`` (inside that table) to ``pa``."""
        if level == 3:  # pages: va and pa are granule-aligned, nothing below
            return 0
        fmt = self.fmt
        shift = fmt.shifts[level]
        mask = (1 << shift) - 1
        leaves_here = level >= min_level and fmt.can_block(level) and not (va - pa) & mask
        count = 0
        while va < end:
            slot_end = (va | mask) + 1
            if not va & mask and end >= slot_end:  # a run of whole slots, all alike
                k = (end - va) >> shift
                if not leaves_here:
                    count += k * (1 + self._plan_new(level + 1, va, slot_end, pa, min_level))
                va += k << shift
                pa += k << shift
                continue
            chunk_end = min(end, slot_end)
            count += 1 + self._plan_new(level + 1, va, chunk_end, pa, min_level)
            pa += chunk_end - va
            va = chunk_end
        return count

    def _plan_change(
        self,
        table: int,
        level: int,
        va: int,
        end: int,
        changes_attrs: bool,
        missing_ok: bool,
        op: str,
    ) -> int:
        """Tables :meth:`_change_in` will create (splits) for ``[va, end)`` in owned
        ``table``; raises the MappingError it would raise."""
        fmt = self.fmt
        shift = fmt.shifts[level]
        mask = (1 << shift) - 1
        index_mask = self._table_entries(level) - 1
        leaf_type = self._leaf_type(level)
        count = 0
        while va < end:
            slot_end = (va | mask) + 1
            chunk_end = min(end, slot_end)
            whole = not va & mask and end >= slot_end
            slot = table + (((va >> shift) & index_mask) << 3)
            if whole and level >= fmt.first_block_level:
                n = min((end - va) >> shift, index_mask + 1 - ((va >> shift) & index_mask))
                if n > 1 and all(d & 3 == leaf_type for d in self._read_run(slot, n)):
                    va += n << shift
                    continue
            old = self._read(slot)
            is_leaf, is_table = _classify(old, level, fmt.first_block_level)
            child = self._owned_child(old, level)
            if not (is_leaf or is_table):
                if not missing_ok:
                    raise MappingError(f"{self!r}.{op}: {va:#x} is not mapped")
            elif child is not None:
                count += self._plan_change(
                    child, level + 1, va, chunk_end, changes_attrs, missing_ok, op
                )
            elif not is_leaf:
                if changes_attrs or not whole:
                    raise MappingError(
                        f"{self!r}.{op}: [{va:#x}, {chunk_end:#x}) cuts a level-{level} link "
                        f"({old:#x}) to a table this PageTable does not own"
                    )
            elif not whole:
                count += 1 + self._plan_split(level + 1, va, chunk_end)
            va = chunk_end
        return count

    def _plan_split(self, level: int, va: int, end: int) -> int:
        """Tables needed below the split of a block (a table of leaves at ``level``) to change
        ``[va, end)`` inside it: one more split per partly covered slot."""
        if level == 3:
            return 0
        shift = self.fmt.shifts[level]
        mask = (1 << shift) - 1
        count = 0
        while va < end:
            slot_end = (va | mask) + 1
            if not va & mask and end >= slot_end:  # whole leaves: changed in place
                va += ((end - va) >> shift) << shift
                continue
            chunk_end = min(end, slot_end)
            count += 1 + self._plan_split(level + 1, va, chunk_end)
            va = chunk_end
        return count

    # -- unmap / protect --------------------------------------------------------------------

    def unmap(self, va: int, size: int, *, missing_ok: bool = False) -> None:
        """Remove the mappings of ``[va, va+size)``; blocks partly covered are split (the rest
        stays mapped), owned tables left empty are unlinked and freed after ``flush``.

        Raises MappingError if part of the range is not mapped (unless ``missing_ok``) or if
        the range cuts through a link to a table this PageTable does not own (a whole link
        slot is simply cleared); AlignmentError/RangeError for a bad range, a ``missing_ok``
        that is not a bool or a freed PageTable; OutOfSpace when a split needs a frame.
        Nothing changes when it raises (and no ``flush`` has run).  O(entries in the range).
        """
        self._check_range(va, size, "unmap")
        check_bool(missing_ok, f"{self!r}.unmap", "missing_ok")
        self._change(va, size, None, missing_ok, "unmap")

    def protect(self, va: int, size: int, attrs: S1Attrs | S2Attrs) -> None:
        """Give every leaf in ``[va, va+size)`` the attributes ``attrs`` (output addresses kept);
        blocks partly covered are split first.  A change of permission bits only (AP, XN, PXN,
        S2AP, AF, software bits) is written in place, as the architecture allows; any other
        attribute change goes through break-before-make.  ``flush`` runs once at the end.

        Raises MappingError if part of the range is unmapped or crosses a link, or for attrs
        of the wrong stage; AlignmentError/RangeError for a bad range or a freed PageTable;
        OutOfSpace for a split.  Nothing changes when it raises (and no ``flush`` has run).
        O(entries in the range).
        """
        self._check_range(va, size, "protect")
        bits = self._attr_bits(attrs, "protect")
        self._change(va, size, bits, False, "protect")

    def _change(self, va: int, size: int, bits: int | None, missing_ok: bool, op: str) -> None:
        root, start, end = self.root, self.fmt.start_level, va + size
        needed = self._plan_change(root, start, va, end, bits is not None, missing_ok, op)

        def change(txn: _Txn) -> None:
            self._change_in(txn, root, start, va, end, bits, missing_ok, op)

        txn = self._run(op, needed, change)
        if self.flush is not None and (txn.journal or txn.frees):
            self.flush(va, size)
        txn.commit()

    def _change_in(
        self,
        txn: _Txn,
        table: int,
        level: int,
        va: int,
        end: int,
        bits: int | None,
        missing_ok: bool,
        op: str,
    ) -> None:
        fmt = self.fmt
        shift = fmt.shifts[level]
        mask = (1 << shift) - 1
        index_mask = self._table_entries(level) - 1
        while va < end:
            slot_end = (va | mask) + 1
            chunk_end = min(end, slot_end)
            whole = not va & mask and end >= slot_end
            slot = table + (((va >> shift) & index_mask) << 3)
            if whole and level >= fmt.first_block_level:
                n = min((end - va) >> shift, index_mask + 1 - ((va >> shift) & index_mask))
                if n > 1 and self._change_leaf_run(txn, table, level, slot, n, bits, va):
                    va += n << shift
                    continue
            old = self._read(slot)
            child = self._owned_child(old, level)
            is_leaf, is_table = _classify(old, level, fmt.first_block_level)
            if not (is_leaf or is_table):
                if not missing_ok:  # pragma: no cover - the plan found it first
                    raise MappingError(f"{self!r}.{op}: {va:#x} is not mapped")
            elif child is not None:
                self._change_in(txn, child, level + 1, va, chunk_end, bits, missing_ok, op)
                if bits is None and self._is_empty(child, level + 1):
                    txn.write(table, slot, 0)
                    txn.frees.append(child)
            elif not is_leaf:  # a link to a table owned elsewhere (or a loop)
                if bits is not None or not whole:  # pragma: no cover - the plan found it
                    raise MappingError(
                        f"{self!r}.{op}: [{va:#x}, {chunk_end:#x}) cuts a level-{level} link "
                        f"({old:#x}) to a table this PageTable does not own"
                    )
                txn.write(table, slot, 0)
            elif whole:
                self._change_leaf(txn, table, slot, old, bits, va, level)
            else:
                new = txn.new_table(level + 1)
                self._fill_split(new, level, old)
                self._change_in(txn, new, level + 1, va, chunk_end, bits, missing_ok, op)
                self._link(txn, table, level, slot, new, va)
            va = chunk_end

    def _change_leaf_run(
        self, txn: _Txn, table: int, level: int, slot: int, n: int, bits: int | None, va: int
    ) -> bool:
        """Unmap/protect ``n`` consecutive whole slots in one go when all are leaves; return
        False (nothing done) otherwise, so the caller goes slot by slot."""
        old = self._read_run(slot, n)
        leaf_type = self._leaf_type(level)
        if not all(desc & 3 == leaf_type for desc in old):
            return False
        if bits is None:
            new = array("Q", bytes(8 * n))
            needs_break = False
        else:
            new = array("Q", [(desc & ~LEAF_ATTR_MASK) | bits for desc in old])
            needs_break = any((a ^ b) & ~_PERMISSION_BITS for a, b in zip(old, new, strict=True))
        if table not in txn.fresh:
            txn.journal.extend((slot + 8 * i, desc) for i, desc in enumerate(old))
        if needs_break:  # memory type/shareability change: break-before-make
            self._write_run(slot, array("Q", bytes(8 * n)))
            if self.flush is not None:
                self.flush(va, n << self.fmt.shifts[level])
        self._write_run(slot, new)
        return True

    def _change_leaf(
        self, txn: _Txn, table: int, slot: int, old: int, bits: int | None, va: int, level: int
    ) -> None:
        if bits is None:
            txn.write(table, slot, 0)
            return
        new = (old & ~LEAF_ATTR_MASK) | bits
        if new == old:
            return
        if (new ^ old) & ~_PERMISSION_BITS:  # memory type/shareability change: BBM
            txn.write(table, slot, 0)
            if self.flush is not None:
                self.flush(va, 1 << self.fmt.shifts[level])
        txn.write(table, slot, new)

    # -- reading ----------------------------------------------------------------------------

    def walk(self, va: int, access: str = "read", user: bool = False) -> Translation | Fault:
        """Translate ``va`` as the MMU would (see :mod:`vaalloc.lpae.walk` for the steps):
        a :class:`Translation` or a :class:`Fault`.  O(levels).  Raises RangeError for an
        address wider than the input register, an unknown access, a ``user`` that is not a
        bool or is True in the hyp regime, or a freed PageTable."""
        self._need_live("walk")
        return walk(self.mem, self.fmt, self.root, va, access, user)

    def translate_pa(
        self,
        va: int,
        access: str = "read",
        user: bool = False,
        _bits: dict[str, int] = ACCESS_BITS,
    ) -> int:
        """The output address of ``va``, or :class:`FaultError` with the same Fault
        :meth:`walk` returns.  The lean path (no objects built on success) for hot loops.
        Raises RangeError like :meth:`walk`."""
        try:
            a = _bits.get(access, 0)
        except TypeError:  # an unhashable access: reported below
            a = 0
        if a and user is False and va.__class__ is int and 0 <= va < self._geo.ia_reg_limit:
            return self._translate(self._frames, self.root, va, a, False)
        self._need_live("translate_pa")
        geo = self._geo
        if isinstance(va, bool) or not isinstance(va, int) or not 0 <= va < geo.ia_reg_limit:
            raise RangeError(f"{self!r}.translate_pa: bad address {_shown(va)}")
        if not a:
            raise RangeError(f"{self!r}.translate_pa: bad access {access!r}")
        check_bool(user, f"{self!r}.translate_pa", "user")
        if user and self.fmt.regime != "el1&0":
            raise RangeError(f"{self!r}.translate_pa: user=True in a single-privilege regime")
        return self._translate(self._frames, self.root, va, a, user)

    def entry_pa(self, va: int, level: int) -> int:
        """PA of the descriptor slot the walk of ``va`` reads at ``level``: how a tool (the
        VLPT, a debugger) finds the entry to patch.  Follows links like the walker.  O(levels).

        Raises RangeError for a bad address or level or a freed PageTable, MappingError when
        the walk of ``va`` stops (invalid entry or block) above ``level``."""
        self._need_live("entry_pa")
        fmt = self.fmt
        geo = self._geo
        if isinstance(va, bool) or not isinstance(va, int) or not 0 <= va < 1 << fmt.ia_bits:
            raise RangeError(
                f"{self!r}.entry_pa: {_shown(va)} is outside the {fmt.ia_bits}-bit input"
            )
        if isinstance(level, bool) or not isinstance(level, int):
            raise RangeError(f"{self!r}.entry_pa: level {level!r} not in {fmt.levels}")
        if not fmt.start_level <= level <= 3:
            raise RangeError(f"{self!r}.entry_pa: level {level!r} not in {fmt.levels}")
        table = self.root
        for current in range(fmt.start_level, level + 1):
            shift = fmt.shifts[current]
            mask = geo.root_mask if current == fmt.start_level else geo.table_mask
            slot = table + (((va >> shift) & mask) << 3)
            if current == level:
                return slot
            desc = self._read(slot)
            if desc & 3 != 3 or desc & geo.oa_excess:
                raise MappingError(
                    f"{self!r}.entry_pa({va:#x}, {level}): the walk stops at level {current} "
                    f"(descriptor {desc:#x})"
                )
            table = desc & fmt.addr_mask
        raise AssertionError("unreachable")  # pragma: no cover

    def tables(self) -> Iterator[tuple[int, int]]:
        """Every table reachable from the root as ``(level, pa)``, each pa once (the level it
        is first met at, depth first), following links and loops as the walker would.
        Raises RangeError for a freed PageTable."""
        self._need_live("tables")
        return self._reachable()

    def _reachable(self) -> Iterator[tuple[int, int]]:
        seen: set[int] = set()
        stack = [(self.fmt.start_level, self.root)]
        while stack:
            level, table = stack.pop()
            if table in seen:
                continue
            seen.add(table)
            yield level, table
            if level == 3:
                continue
            children = [
                (level + 1, desc & self.fmt.addr_mask)
                for _, desc in self._entries(table, level)
                if desc & 3 == 3 and not desc & self._geo.oa_excess
            ]
            stack.extend(reversed(children))

    def owned_tables(self) -> Iterator[tuple[int, int]]:
        """The tables this PageTable created or adopted, as ``(level, pa)``, ascending pa.
        Raises RangeError for a freed PageTable."""
        self._need_live("owned_tables")
        tables = self._tables
        return iter([(tables[pa], pa) for pa in sorted(tables)])

    def leaves(self) -> Iterator[tuple[int, int, int, int, int]]:
        """Every leaf the walker can reach, as ``(va, pa, size, level, descriptor)`` in
        ascending va, following links and loops like hardware.  Leaves that would fault for
        their encoding (address beyond the output size, block at a level without blocks) are
        skipped; AF=0 leaves are included (AF is an attribute of the mapping).
        O(entries reachable).  Raises RangeError for a freed PageTable."""
        self._need_live("leaves")
        out: list[tuple[int, int, int, int, int]] = []
        self._collect(self.root, self.fmt.start_level, 0, out)
        return iter(out)

    def _collect(
        self, table: int, level: int, base: int, out: list[tuple[int, int, int, int, int]]
    ) -> None:
        fmt = self.fmt
        shift = fmt.shifts[level]
        size = 1 << shift
        excess = self._geo.oa_excess
        out_mask = fmt.addr_mask & ~(size - 1)
        is_leaf_level = level >= fmt.first_block_level
        entries = self._read_run(table, self._table_entries(level))
        if level == 3:  # the bulk of any tree: one comprehension per table
            out.extend(
                (base + (index << shift), desc & out_mask, size, 3, desc)
                for index, desc in enumerate(entries)
                if desc & 3 == 3 and not desc & excess
            )
            return
        for index, desc in enumerate(entries):
            if not desc & 1 or desc & excess:
                continue
            va = base + (index << shift)
            if level < 3 and desc & 2:
                self._collect(desc & fmt.addr_mask, level + 1, va, out)
            elif (level == 3 and desc & 2) or (level < 3 and is_leaf_level):
                out.append((va, desc & out_mask, size, level, desc))

    def mappings(self) -> Iterator[tuple[int, int, int, S1Attrs | S2Attrs]]:
        """Coalesced mappings ``(va, pa, size, attrs)``: consecutive leaves with contiguous va
        and pa and identical attributes are reported as one run.  Follows links as the walker
        does.  ``attrs`` are the leaf's own (table attributes are not folded in).
        O(entries reachable).  Raises RangeError for a freed PageTable."""
        self._need_live("mappings")
        decode = S1Attrs.from_descriptor if self.fmt.stage == 1 else S2Attrs.from_descriptor
        runs: list[list[int]] = []
        for va, pa, size, _level, desc in self.leaves():
            key = desc & LEAF_ATTR_MASK
            if runs:
                last = runs[-1]
                if last[0] + last[2] == va and last[1] + last[2] == pa and last[3] == key:
                    last[2] += size
                    continue
            runs.append([va, pa, size, key])
        return iter([(va, pa, size, decode(key)) for va, pa, size, key in runs])

    def dump(self) -> str:
        """A readable listing of the owned tables and their valid entries, one per line,
        indented by level; links are shown as links and not followed.  Raises RangeError for
        a freed PageTable."""
        self._need_live("dump")
        fmt = self.fmt
        lines = [f"{fmt.name} root {self.root:#x}"]

        def visit(table: int, level: int, base: int) -> None:
            shift = fmt.shifts[level]
            pad = "  " * (level - fmt.start_level + 1)
            for index, desc in self._entries(table, level):
                va = base + (index << shift)
                child = self._owned_child(desc, level)
                if child is not None:
                    lines.append(f"{pad}L{level}[{index:4}] va {va:#x}: table {child:#x}")
                    visit(child, level + 1, va)
                elif level < 3 and desc & 3 == 3:
                    lines.append(
                        f"{pad}L{level}[{index:4}] va {va:#x}: link -> {desc & fmt.addr_mask:#x}"
                        f" ({desc:#018x})"
                    )
                else:
                    kind = "page" if level == 3 else "block"
                    out = leaf_pa(self._geo, desc, level, 0)
                    lines.append(
                        f"{pad}L{level}[{index:4}] va {va:#x}: {kind} {1 << shift:#x} -> "
                        f"{out:#x} ({desc:#018x})"
                    )

        visit(self.root, fmt.start_level, 0)
        return "\n".join(lines)

    def check(self) -> None:
        """Verify the bookkeeping against memory; raise InvariantError on a mismatch.

        Checks: every owned table except the root is linked from exactly one owned table at
        the level above (tree edges, loops excluded), and holds at least one valid entry
        (``unmap`` frees tables it empties); every owned table that is a frame allocation is
        still allocated, and registered with the memory as this PageTable's table.
        O(owned tables x entries per table).  Raises RangeError for a freed PageTable."""
        self._need_live("check")
        parents: dict[int, int] = {}
        for pa, level in self._tables.items():
            if level == 3:
                continue
            for _, desc in self._entries(pa, level):
                child = self._owned_child(desc, level)
                if child is not None and child != self.root:
                    parents[child] = parents.get(child, 0) + 1
        for pa, level in self._tables.items():
            if pa == self.root:
                continue
            if parents.get(pa, 0) != 1:
                raise InvariantError(
                    f"{self!r}: owned level-{level} table {pa:#x} is linked "
                    f"{parents.get(pa, 0)} times from owned tables"
                )
            if self._is_empty(pa, level):
                raise InvariantError(f"{self!r}: owned level-{level} table {pa:#x} is empty")
        for pa in [*self._allocated, *self._reserve]:
            if not self.mem.is_allocation(pa):
                raise InvariantError(f"{self!r}: table {pa:#x} is no longer allocated")
            if self.mem.table_owner(pa) is not self:
                raise InvariantError(f"{self!r}: table {pa:#x} is not registered as its own")

    # -- tables written by their owner's own code ----------------------------------------------

    def new_table(self, level: int, *, reserved: bool = False) -> int:
        """Allocate a zeroed table for ``level`` that this PageTable owns, and return its PA.

        For code that writes descriptors itself (Xen's p2m code writes the exact entries Xen
        writes): the caller fills the table and links it; from then on :meth:`map`,
        :meth:`unmap`, :meth:`check` and :meth:`free` treat it as one of this tree's own.
        With ``reserved`` the frame comes from :meth:`reserve_tables` instead of the
        allocator: it cannot fail for want of memory, which is what a fault handler needs.

        Raises RangeError for a level that holds no table, a ``reserved`` that is not a bool
        or a freed PageTable; OutOfSpace when no frame is left (or, with ``reserved``, none
        is reserved)."""
        self._need_live("new_table")
        fmt = self.fmt
        if isinstance(level, bool) or not isinstance(level, int):
            raise RangeError(f"{self!r}.new_table: level {level!r} is not an int")
        if not fmt.start_level < level <= 3:
            raise RangeError(
                f"{self!r}.new_table: level {level} is not below the root level {fmt.start_level}"
            )
        check_bool(reserved, f"{self!r}.new_table", "reserved")
        if reserved:
            if not self._reserve:
                raise OutOfSpace(f"{self!r}.new_table(reserved=True): no table is reserved")
            pa = self._reserve.pop()
            for frame in range(pa, pa + fmt.granule, FRAME_SIZE):
                self.mem.drop(frame)  # zeroed even if someone wrote it meanwhile
        else:
            frames = self._table_frames()
            pa = self.mem.alloc_frames(frames, frames, owner=self)
        self._tables[pa] = level
        self._allocated.add(pa)
        return pa

    def free_table(self, pa: int) -> None:
        """Free an owned table (made by :meth:`new_table` or :meth:`map`) that the caller has
        already unlinked and flushed.  Raises InvalidFree for the root or a table not owned,
        RangeError for a freed PageTable."""
        self._need_live("free_table")
        if not isinstance(pa, int) or pa == self.root or pa not in self._allocated:
            raise InvalidFree(f"{self!r}.free_table({_shown(pa)}): not an owned, freeable table")
        self._release(pa)

    def reserve_tables(self, n: int) -> None:
        """Allocate ``n`` more table frames and keep them for :meth:`new_table` with
        ``reserved=True`` (KVM's memory cache, Xen's p2m pool: allocate while failing is
        harmless, use where it is not).  All or none.  Reserved frames count in
        ``mem.frames_in_use``, are this PageTable's tables for ``mem.free_frames``, and go
        back with :meth:`release_reserved` or :meth:`free`.

        Raises RangeError for a negative or non-int ``n`` or a freed PageTable, OutOfSpace
        when RAM cannot hold them (nothing changed; refused at once when it cannot)."""
        self._need_live("reserve_tables")
        check_int(n, f"{self!r}.reserve_tables", "n", 0)
        frames = self._alloc_tables(n, "reserve_tables")
        frames.reverse()
        self._reserve.extend(frames)

    def release_reserved(self, n: int | None = None) -> int:
        """Free ``n`` reserved table frames (None: all of them), the most recently reserved
        first; return how many were freed.  Raises RangeError for an ``n`` that is not an int
        in ``0..reserved_tables`` or a freed PageTable."""
        self._need_live("release_reserved")
        reserve = self._reserve
        count = len(reserve) if n is None else n
        check_int(count, f"{self!r}.release_reserved", "n", 0, len(reserve) + 1)
        for _ in range(count):
            self.mem.free_frames(reserve.pop(), owner=self)
        return count

    @property
    def reserved_tables(self) -> int:
        """How many table frames :meth:`reserve_tables` holds for later use."""
        return len(self._reserve)

    @property
    def live(self) -> bool:
        """False once :meth:`free` has run (every other call then raises RangeError)."""
        return self._live

    # -- teardown ---------------------------------------------------------------------------

    def free(self) -> int:
        """Free every owned table frame (root included) and every reserved one; return how
        many table allocations were freed.  The object refuses every use afterwards (its
        tables are gone).  Mappings' target frames are not touched: they belong to whoever
        mapped them.  Raises InvalidFree when it was already freed."""
        if not self._live:
            raise InvalidFree(f"{self!r}.free(): already freed")
        freed = 0
        for pa in sorted(self._allocated) + self._reserve:
            self.mem.free_frames(pa, owner=self)
            freed += 1
        self._allocated.clear()
        self._tables.clear()
        self._reserve.clear()
        self._live = False
        self._translate = _freed_translate
        return freed


def _freed_translate(
    frames: Mapping[int, array[int]], root: int, va: int, access: int, user: bool
) -> int:
    """The lean translation of a freed PageTable: its tables are gone."""
    raise RangeError(f"translate_pa({_shown(va)}): this PageTable was freed")
