"""A guest domain of the model: its identity, RAM, p2m and log-dirty state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaalloc.errors import RangeError
from vaalloc.lpae._checks import check_bool, check_int
from vaalloc.xen.layout import MAX_VMID, P2M_IPA_BITS, PAGE_SHIFT
from vaalloc.xen.p2m import P2M

if TYPE_CHECKING:
    from vaalloc.lpae import PageTable

__all__ = ["Domain"]


class Domain:
    """One guest: ``domid``, ``vmid`` (8-bit, tags its stage-2 TLB entries), RAM at
    ``[ram_base, ram_base + ram_size)`` of IPA, ``stage2`` (the :class:`P2M` that writes its
    tables as Xen does and owns its RAM frames) and ``p2m`` (the
    :class:`vaalloc.lpae.PageTable` that owns those tables: walk it, check it).

    Log-dirty state: ``logdirty`` (tracking on/off) and ``dirty`` (guest frame numbers,
    ``ipa >> 12``, written since the last clean). ``alive`` turns False when the domain is
    destroyed; every Xen call refuses it from then on (RangeError). Created by
    ``Xen.create_domain`` only; the constructor raises RangeError for a bad argument.
    """

    def __init__(
        self,
        domid: int,
        vmid: int,
        ram_base: int,
        ram_size: int,
        superpages: bool,
        stage2: P2M,
    ) -> None:
        check_int(domid, "Domain", "domid", 0)
        check_int(vmid, "Domain", "vmid", 0, MAX_VMID + 1)
        check_int(ram_base, "Domain", "ram_base", 0, 1 << P2M_IPA_BITS)
        check_int(ram_size, "Domain", "ram_size", 1, (1 << P2M_IPA_BITS) - ram_base + 1)
        check_bool(superpages, "Domain", "superpages")
        if not isinstance(stage2, P2M):
            raise RangeError(f"Domain(stage2={stage2!r}): expected a P2M")
        self.domid = domid
        self.vmid = vmid
        self.ram_base = ram_base
        self.ram_size = ram_size
        self.superpages = superpages
        self.stage2 = stage2
        self.logdirty = False
        self.dirty: set[int] = set()
        self.alive = True

    @property
    def p2m(self) -> PageTable:
        """The stage-2 tables as a :class:`vaalloc.lpae.PageTable` (root: two concatenated
        level-1 pages). Its record of owned tables is the p2m's own, kept as tables come and
        go, so ``d.p2m.check()`` and ``d.p2m.owned_tables()`` are true at every moment."""
        return self.stage2.table

    @property
    def ram_end(self) -> int:
        """First IPA past guest RAM."""
        return self.ram_base + self.ram_size

    @property
    def gfns(self) -> range:
        """Guest frame numbers of the RAM range."""
        return range(self.ram_base >> PAGE_SHIFT, self.ram_end >> PAGE_SHIFT)

    def in_ram(self, ipa: int) -> bool:
        """True if ``ipa`` lies in the RAM range (populated or not). Raises RangeError for an
        ``ipa`` that is not an int."""
        if ipa.__class__ is not int:
            raise RangeError(f"{self!r}.in_ram({ipa!r}): an IPA is an int")
        return self.ram_base <= ipa < self.ram_end

    def __repr__(self) -> str:
        state = "logdirty" if self.logdirty else "normal"
        return (
            f"Domain(d{self.domid}, vmid={self.vmid}, ram=[{self.ram_base:#x}, "
            f"{self.ram_end:#x}), {state})"
        )
