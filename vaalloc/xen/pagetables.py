"""Xen's own hyp stage-1 tables on ARM32, laid out as Xen 4.3's ``setup_pagetables`` does.

* ``xen_pgtable``: one first-level page per CPU (what HTTBR holds). Entries 0-1 point at the
  shared ``xen_second`` pages 0-1 (VA 0-2GB); entries 2-3 at the CPU's ``xen_dommap`` pages
  (VA 2-4GB, the per-CPU domheap). CPU 0's dommap is ``xen_second`` pages 2-3, as in Xen.
* ``xen_second``: 4 contiguous, 4-page-aligned pages, 2048 second-level entries indexed by
  ``va >> 21``. Shared: a slot written once is seen by every CPU (the VLPT relies on it).
* ``xen_xenmap`` (level 3, Xen's image at 2MB), ``xen_fixmap`` (level 3, at 4MB), the
  xenheap as 2MB blocks from 1GB, vmap level-3 tables created on demand, and the VLPT loop
  slot (``xen_second[127]`` -> ``xen_second`` page 0), installed once at boot.

Every store goes through :meth:`XenPageTables.write_second` or :meth:`write_pte`, which count
``xen_second_writes`` / ``xen_pte_writes`` in the ledger. TLB maintenance is the caller's job
(it owns the MMUs).
"""

from __future__ import annotations

from vaalloc.errors import InvalidFree, OutOfSpace, RangeError
from vaalloc.lpae import PhysicalMemory
from vaalloc.lpae._checks import check_bool, check_int, shown
from vaalloc.lpae.descriptor import ADDR_MASK_40, is_table
from vaalloc.xen.layout import (
    DOMHEAP_ENTRIES,
    DOMHEAP_SECOND_PAGES,
    DOMHEAP_VIRT_START,
    FIRST_SHIFT,
    FIXMAP_VIRT_START,
    HYP_VA_END,
    LPAE_ENTRIES,
    LPAE_ENTRY_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_SIZE,
    SECOND_SHIFT,
    SECOND_SIZE,
    VLPT_LOOP_SLOT,
    VLPT_XEN_SECOND_PAGE,
    XEN_ENTRY_ATTRS,
    XEN_PGTABLE_USED,
    XEN_SECOND_ENTRIES,
    XEN_SECOND_PAGES,
    XEN_SECOND_SHARED_PAGES,
    XEN_TABLE_ATTRS,
    XEN_VIRT_START,
    XENHEAP_VIRT_END,
    XENHEAP_VIRT_START,
)
from vaalloc.xen.ledger import Ledger

__all__ = ["XenPageTables"]

#: Pages of Xen's own image mapped at XEN_VIRT_START (text, data, bss of the model's Xen).
XEN_IMAGE_PAGES = 64


class XenPageTables:
    """Builds and edits Xen's hyp tables in physical memory ``mem`` for ``cpus`` CPUs.

    ``xenheap_size`` bytes of RAM (a multiple of 2MB) are mapped at 1GB with 2MB blocks.
    Every table frame is registered with ``mem`` as this object's table (``mem.free_frames``
    refuses it). Raises RangeError for a ``mem``/``ledger`` of the wrong type, a bad CPU
    count or xenheap size; OutOfSpace when RAM cannot hold the tables and the xenheap.
    """

    def __init__(self, mem: PhysicalMemory, ledger: Ledger, cpus: int, xenheap_size: int) -> None:
        if not isinstance(mem, PhysicalMemory):
            raise RangeError(f"XenPageTables(mem={mem!r}): expected a PhysicalMemory")
        if not isinstance(ledger, Ledger):
            raise RangeError(f"XenPageTables(ledger={ledger!r}): expected a Ledger")
        check_int(cpus, "XenPageTables", "cpus", 1, 33)
        check_int(xenheap_size, "XenPageTables", "xenheap_size")
        if xenheap_size < 0 or xenheap_size % SECOND_SIZE:
            raise RangeError(f"XenPageTables(xenheap_size={xenheap_size:#x}): not 2MB multiple")
        if xenheap_size > XENHEAP_VIRT_END - XENHEAP_VIRT_START:
            raise RangeError(f"XenPageTables(xenheap_size={xenheap_size:#x}): beyond 1GB")
        self.mem = mem
        self.ledger = ledger
        self._frames: list[int] = []
        self._unlinked: set[int] = set()  # tables from alloc_table not linked yet
        need = (
            XEN_SECOND_PAGES
            + cpus
            + (cpus - 1) * DOMHEAP_SECOND_PAGES
            + XEN_IMAGE_PAGES
            + 2
            + (xenheap_size >> PAGE_SHIFT)
        )
        if need > mem.frames_free:
            raise OutOfSpace(
                f"XenPageTables: {cpus} CPUs and a {xenheap_size:#x}-byte xenheap need {need} "
                f"frames, {mem.frames_free} are free"
            )
        counts = dict(ledger.counts)
        try:
            self._build(cpus, xenheap_size)
        except BaseException:  # all or nothing: the memory and the ledger as they were
            for pa in reversed(self._frames):
                mem.free_frames(pa, owner=mem.table_owner(pa))
            self._frames.clear()
            ledger.counts.clear()
            ledger.counts.update(counts)
            raise

    def _build(self, cpus: int, xenheap_size: int) -> None:
        self.xen_second = self._alloc(XEN_SECOND_PAGES, XEN_SECOND_PAGES, table=True)
        self.pgtable: list[int] = []
        self.dommap: list[int] = []
        for cpu in range(cpus):
            self._setup_cpu(cpu)
        self._map_xen_image()
        self.fixmap = self._alloc(1, 1, table=True)
        self.write_second(FIXMAP_VIRT_START >> SECOND_SHIFT, self.fixmap | XEN_TABLE_ATTRS)
        self.xenheap_pa = (
            self._alloc(xenheap_size >> PAGE_SHIFT, LPAE_ENTRIES, table=False)
            if xenheap_size
            else 0
        )
        for off in range(0, xenheap_size, SECOND_SIZE):
            index = (XENHEAP_VIRT_START + off) >> SECOND_SHIFT
            self.write_second(index, (self.xenheap_pa + off) | XEN_ENTRY_ATTRS)
        # The VLPT loop: xen_second page 0 seen as a level-3 table from slot 127.
        self.loop_target = self.xen_second + VLPT_XEN_SECOND_PAGE * PAGE_SIZE
        self.write_second(VLPT_LOOP_SLOT, self.loop_target | XEN_TABLE_ATTRS)

    # --- construction -----------------------------------------------------------------------
    def _alloc(self, n: int, align: int, *, table: bool) -> int:
        pa: int = self.mem.alloc_frames(n, align, owner=self if table else None)
        self._frames.append(pa)
        return pa

    def _setup_cpu(self, cpu: int) -> None:
        root = self._alloc(1, 1, table=True)
        if cpu == 0:
            dommap = self.xen_second + XEN_SECOND_SHARED_PAGES * PAGE_SIZE
        else:
            dommap = self._alloc(DOMHEAP_SECOND_PAGES, DOMHEAP_SECOND_PAGES, table=True)
        entries = [0] * LPAE_ENTRIES
        for i in range(XEN_PGTABLE_USED):
            if i < XEN_SECOND_SHARED_PAGES:
                target = self.xen_second + i * PAGE_SIZE
            else:
                target = dommap + (i - XEN_SECOND_SHARED_PAGES) * PAGE_SIZE
            entries[i] = target | XEN_TABLE_ATTRS
        self.mem.write_table(root, entries)
        self.ledger.add("xen_pte_writes", XEN_PGTABLE_USED)
        self.pgtable.append(root)
        self.dommap.append(dommap)

    def _map_xen_image(self) -> None:
        image = self._alloc(XEN_IMAGE_PAGES, 1, table=False)
        xenmap = self._alloc(1, 1, table=True)
        entries = [0] * LPAE_ENTRIES
        for i in range(XEN_IMAGE_PAGES):
            entries[i] = (image + i * PAGE_SIZE) | XEN_TABLE_ATTRS  # 4KB pages set bit 1
        self.mem.write_table(xenmap, entries)
        self.ledger.add("xen_pte_writes", XEN_IMAGE_PAGES)
        self.write_second(XEN_VIRT_START >> SECOND_SHIFT, xenmap | XEN_TABLE_ATTRS)
        self.xen_image_pa = image

    # --- access -----------------------------------------------------------------------------
    def second_pa(self, index: int) -> int:
        """PA of ``xen_second[index]`` (shared part: index < 1024). Raises RangeError."""
        if index.__class__ is not int or not 0 <= index < XEN_SECOND_SHARED_PAGES * LPAE_ENTRIES:
            raise RangeError(f"xen_second index {index!r} outside the shared 0..1023")
        return self.xen_second + index * PTE_SIZE

    def read_second(self, index: int) -> int:
        """The descriptor in ``xen_second[index]``. Raises RangeError for a bad index."""
        v: int = self.mem.read64(self.second_pa(index))
        return v

    def write_second(self, index: int, value: int) -> None:
        """Store ``value`` in the shared ``xen_second[index]``; counts ``xen_second_writes``.
        Raises RangeError for a bad index or a value outside [0, 2**64) (nothing stored)."""
        self.mem.write64(self.second_pa(index), value)
        self.ledger.add("xen_second_writes")

    def write_pte(self, pa: int, value: int) -> None:
        """Store a descriptor in one of Xen's other tables; counts ``xen_pte_writes``.
        Raises RangeError/AlignmentError for a bad PA or value (nothing stored)."""
        self.mem.write64(pa, value)
        self.ledger.add("xen_pte_writes")

    def third_table(self, va: int, create: bool) -> int | None:
        """PA of the level-3 table mapping ``va`` (in the shared 0-2GB half), created on demand.

        Xen's ``create_xen_table``: a zeroed frame linked from ``xen_second``. Returns None if
        absent and ``create`` is False. Raises RangeError for a VA outside 0-2GB or covered by a
        block, or a ``create`` that is not a bool; OutOfSpace when no frame is left.
        """
        check_int(va, "third_table", "va", 0, XENHEAP_VIRT_END)
        check_bool(create, "third_table", "create")
        index = va >> SECOND_SHIFT
        entry = self.read_second(index)
        if is_table(entry):
            return entry & ADDR_MASK_40
        if entry:
            raise RangeError(f"VA {va:#x} is covered by a 2MB block in xen_second[{index}]")
        if not create:
            return None
        table = self.alloc_table()
        self.link_third(va, table)
        return table

    def missing_third_tables(self, va: int, size: int) -> list[int]:
        """The 2MB-aligned VAs in ``[va, va + size)`` (shared half) whose ``xen_second`` entry
        holds no level-3 table yet: what :meth:`link_third` must be given a table for.
        Raises RangeError for a range outside 0-2GB or one crossing a 2MB block."""
        check_int(va, "missing_third_tables", "va", 0, XENHEAP_VIRT_END)
        check_int(size, "missing_third_tables", "size", 1, XENHEAP_VIRT_END - va + 1)
        out = []
        for base in range(va & ~(SECOND_SIZE - 1), va + size, SECOND_SIZE):
            entry = self.read_second(base >> SECOND_SHIFT)
            if entry and not is_table(entry):
                raise RangeError(f"VA {base:#x} is covered by a 2MB block in xen_second")
            if not entry:
                out.append(base)
        return out

    def alloc_table(self) -> int:
        """Allocate a zeroed frame for one of Xen's level-3 tables (registered as this
        object's table); link it with :meth:`link_third` or give it back with
        :meth:`free_table`. Raises OutOfSpace when no frame is left."""
        table = self._alloc(1, 1, table=True)
        self._unlinked.add(table)
        return table

    def free_table(self, pa: int) -> None:
        """Give back a table from :meth:`alloc_table` that was never linked. Raises
        InvalidFree for anything else."""
        if not isinstance(pa, int) or pa not in self._unlinked:
            raise InvalidFree(f"XenPageTables.free_table({shown(pa)}): not an unlinked table")
        self.mem.free_frames(pa, owner=self)
        self._unlinked.discard(pa)
        self._frames.remove(pa)

    def link_third(self, va: int, table: int) -> None:
        """Point the ``xen_second`` entry of ``va`` at level-3 table ``table`` (a frame from
        :meth:`alloc_table`, not linked yet); counts one ``xen_second_writes``. Raises
        RangeError for a bad VA or table or an entry that is already valid."""
        check_int(va, "link_third", "va", 0, XENHEAP_VIRT_END)
        if not isinstance(table, int) or table not in self._unlinked:
            raise RangeError(f"link_third: {shown(table)} is not a table from alloc_table")
        index = va >> SECOND_SHIFT
        if self.read_second(index):
            raise RangeError(f"link_third: xen_second[{index}] is already valid")
        self.write_second(index, table | XEN_TABLE_ATTRS)
        self._unlinked.discard(table)

    def dommap_pa(self, cpu: int, slot: int) -> int:
        """PA of CPU ``cpu``'s domheap slot entry (``xen_dommap[slot]``). Raises RangeError
        for a bad CPU or slot."""
        check_int(cpu, "dommap_pa", "cpu", 0, len(self.dommap))
        check_int(slot, "dommap_pa", "slot", 0, DOMHEAP_ENTRIES)
        return self.dommap[cpu] + slot * PTE_SIZE

    @staticmethod
    def third_index(va: int) -> int:
        """Index of ``va`` in its level-3 table. Raises RangeError for a bad VA."""
        check_int(va, "third_index", "va", 0, HYP_VA_END)
        return (va >> PAGE_SHIFT) & LPAE_ENTRY_MASK

    @property
    def frames(self) -> list[int]:
        """PAs of every frame run these tables allocated (for accounting)."""
        return list(self._frames)

    def check(self) -> None:
        """Raise InvariantError if a CPU's first level does not point where it must."""
        from vaalloc.errors import InvariantError

        for cpu, root in enumerate(self.pgtable):
            for i in range(XEN_PGTABLE_USED):
                v = self.mem.read64(root + i * PTE_SIZE)
                if i < XEN_SECOND_SHARED_PAGES:
                    want = self.xen_second + i * PAGE_SIZE
                else:
                    want = self.dommap[cpu] + (i - XEN_SECOND_SHARED_PAGES) * PAGE_SIZE
                if v & ADDR_MASK_40 != want or not is_table(v):
                    raise InvariantError(f"xen_pgtable[{cpu}][{i}] = {v:#x}, want {want:#x}")
        if (DOMHEAP_VIRT_START >> FIRST_SHIFT) != XEN_SECOND_SHARED_PAGES:
            raise InvariantError("layout: domheap does not start at xen_second page 2")
        if XEN_SECOND_ENTRIES != XEN_SECOND_PAGES * LPAE_ENTRIES:
            raise InvariantError("layout: xen_second size")
