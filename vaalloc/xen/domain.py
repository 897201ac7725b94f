"""A guest domain of the model: its identity, RAM, p2m and log-dirty state."""

from __future__ import annotations

from vaalloc.lpae import PageTable
from vaalloc.xen.layout import PAGE_SHIFT
from vaalloc.xen.p2m import P2M

__all__ = ["Domain"]


class Domain:
    """One guest: ``domid``, ``vmid`` (8-bit, tags its stage-2 TLB entries), RAM at
    ``[ram_base, ram_base + ram_size)`` of IPA, ``stage2`` (the :class:`P2M` that owns its
    tables and frames) and ``p2m`` (a :class:`vaalloc.lpae.PageTable` adopting the same root,
    for walks).

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
        p2m: PageTable,
    ) -> None:
        self.domid = domid
        self.vmid = vmid
        self.ram_base = ram_base
        self.ram_size = ram_size
        self.superpages = superpages
        self.stage2 = stage2
        self.p2m = p2m
        self.logdirty = False
        self.dirty: set[int] = set()
        self.alive = True

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
