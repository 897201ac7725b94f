"""The whole observable state of a model, as one comparable value, and a frame-allocation
fault injector.

``xen_state(xen)`` is what "a failed call changed nothing" is checked against: every populated
frame and its bytes, every frame allocation and which object owns it as a table, every CPU's
TLB (entries in replacement order) and counters, the ledger, every allocator's snapshot
(vmap area, VLPT window, the frames), the strategy's per-domain state, the domains (ids, RAM,
log-dirty state, dirty set, p2m tables and split reserve, RAM runs) and what each CPU runs.
``lpae_state(mem, tables, mmus)`` is the same for a bare lpae model.

Everything is read through public calls (``frames()``, ``allocated()``, ``table_allocations()``,
``tlb.entries``, ``counters``, ``snapshot()``...), so the helper checks the model the way a
user can observe it.

``FailAt(k)`` is installed as ``PhysicalMemory.alloc_hook`` (the public seam) and makes the
k-th frame allocation after installation raise OutOfSpace; ``count_allocations`` counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from vaalloc.errors import OutOfSpace
from vaalloc.lpae import MMU, PageTable, PhysicalMemory
from vaalloc.xen import Xen


def mem_state(mem: PhysicalMemory) -> dict[str, Any]:
    """Contents, allocations and table ownership of ``mem`` (owners by identity)."""
    return {
        "frames": dict(mem.frames()),
        "allocated": list(mem.allocated()),
        "in_use": mem.frames_in_use,
        "free": mem.frames_free,
        "tables": [(pa, id(owner)) for pa, owner in mem.table_allocations()],
    }


def mmu_state(mmu: MMU) -> dict[str, Any]:
    """One MMU: its TLB's entries in replacement order, its counters and its tags."""
    return {
        "tlb": list(mmu.tlb.entries.items()),
        "counters": mmu.counters,
        "vmid": mmu.vmid,
        "asid": mmu.asid,
        "stale": list(mmu.stale_hits),
    }


def table_state(pt: PageTable) -> dict[str, Any]:
    """A PageTable's own records (its tables' contents are in the memory's state)."""
    if not pt.live:
        return {"live": False}
    return {"live": True, "owned": list(pt.owned_tables()), "reserved": pt.reserved_tables}


def lpae_state(
    mem: PhysicalMemory, tables: Iterable[PageTable] = (), mmus: Iterable[MMU] = ()
) -> dict[str, Any]:
    """The state of a bare lpae model: memory, page tables, MMUs."""
    return {
        "mem": mem_state(mem),
        "tables": [table_state(pt) for pt in tables],
        "mmus": [mmu_state(m) for m in mmus],
    }


def _strategy_state(xen: Xen) -> dict[str, Any]:
    lookup = xen.lookup
    out: dict[str, Any] = {"name": lookup.name}
    for part in (lookup, getattr(lookup, "vlpt", None), getattr(lookup, "walk", None)):
        if part is None:
            continue
        window = getattr(part, "window", None)
        if window is not None:
            out[f"{type(part).__name__}.window"] = window.snapshot()
        for attr in ("runs", "installed", "walked"):
            value = getattr(part, attr, None)
            if value is not None:
                shown = [getattr(v, "domid", v) for v in value] if attr == "installed" else value
                out[f"{type(part).__name__}.{attr}"] = (
                    dict(shown) if isinstance(shown, dict) else sorted(shown, key=repr)
                )
        for mmu_list in ("mmus64",):
            mmus = getattr(part, mmu_list, None)
            if mmus is not None:
                out[mmu_list] = [mmu_state(m) for m in mmus]
    return out


def xen_state(xen: Xen) -> dict[str, Any]:
    """Everything a failed call of the Xen model must leave as it was."""
    return {
        "mem": mem_state(xen.mem),
        "mmus": [mmu_state(m) for m in xen.mmus],
        "ledger": xen.ledger.snapshot(),
        "vmap": xen.vmap_area.allocator.snapshot(),
        "xen_frames": xen.pagetables.frames,
        "strategy": _strategy_state(xen),
        "current": [None if d is None else d.domid for d in xen.current],
        "domains": {
            domid: {
                "vmid": d.vmid,
                "ram": (d.ram_base, d.ram_size, d.superpages),
                "alive": d.alive,
                "logdirty": d.logdirty,
                "dirty": sorted(d.dirty),
                "p2m": table_state(d.p2m),
                "runs": d.stage2.runs(),
            }
            for domid, d in xen.domains.items()
        },
    }


class FailAt:
    """An ``alloc_hook`` failing the ``k``-th allocation (1-based) after installation;
    ``calls`` counts every allocation asked for, ``fired`` says whether it failed one."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0
        self.fired = False

    def __call__(self, n: int, align: int) -> None:
        self.calls += 1
        if self.calls == self.k:
            self.fired = True
            raise OutOfSpace(f"injected: allocation {self.k} (n={n}, align={align}) fails")


@contextmanager
def hooked(mem: PhysicalMemory, hook: Callable[[int, int], None]) -> Iterator[None]:
    """Install ``hook`` as ``mem.alloc_hook`` for the block."""
    mem.alloc_hook = hook
    try:
        yield
    finally:
        mem.alloc_hook = None


def count_allocations(mem: PhysicalMemory, call: Callable[[], object]) -> int:
    """How many frame allocations ``call()`` makes (it runs for real)."""
    counter = FailAt(0)
    with hooked(mem, counter):
        call()
    return counter.calls


def inject_every(
    mem: PhysicalMemory,
    call: Callable[[], object],
    state: Callable[[], object],
    check: Callable[[], None] = lambda: None,
) -> int:
    """Fail ``call``'s k-th frame allocation for k = 1, 2, ... until it succeeds; after each
    failure assert that ``state()`` is what it was and that ``check()`` passes. Every failure
    leaves the model as it was, so the next k starts from the same state. Returns how many
    failure points were tried (the allocations of the successful call)."""
    before = state()
    k = 0
    while True:
        k += 1
        hook = FailAt(k)
        with hooked(mem, hook):
            try:
                call()
            except OutOfSpace:
                if not hook.fired:
                    raise
            else:
                assert not hook.fired
                return k - 1
        after = state()
        assert after == before, f"allocation {k} failed and the state changed"
        check()
