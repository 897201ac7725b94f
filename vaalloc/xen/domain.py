"""A guest domain of the model: its identity, RAM, p2m and log-dirty state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaalloc.xen.layout import PAGE_SHIFT

if TYPE_CHECKING:
    from vaalloc.lpae import PageTable
    from vaalloc.xen.p2m import P2M

__all__ = ["Domain"]


class Domain:
    """One guest: ``domid``, ``vmid`` (8-bit, tags its stage-2 TLB entries), RAM at
    ``[ram_base, ram_base + ram_size)`` of IPA, ``stage2`` (the :class:`P2M` that writes its
    tables as Xen does and owns its RAM frames) and ``p2m`` (the
    :class:`vaalloc.lpae.PageTable` that owns those tables: walk it, check it).

    Log-dirty state: ``logdirty`` (tracking on/off) and ``dirty`` (guest frame numbers,
    ``ipa >> 12``, written since the last clean). Created by ``Xen.create_domain`` only.
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
        """True if ``ipa`` lies in the RAM range (populated or not)."""
        return self.ram_base <= ipa < self.ram_end

    def __repr__(self) -> str:
        state = "logdirty" if self.logdirty else "normal"
        return (
            f"Domain(d{self.domid}, vmid={self.vmid}, ram=[{self.ram_base:#x}, "
            f"{self.ram_end:#x}), {state})"
        )
