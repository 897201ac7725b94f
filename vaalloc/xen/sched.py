"""Context switch: what Xen does to a CPU's translation state when it runs another domain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaalloc.errors import RangeError
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.lookup.base import P2MLookup

if TYPE_CHECKING:
    from vaalloc.xen.domain import Domain

__all__ = ["context_switch"]


def context_switch(core: Hypervisor, lookup: P2MLookup, cpu: int, d: Domain | None) -> None:
    """Make ``d`` (or the idle domain, ``None``) current on ``cpu``.

    Loads VTTBR with ``d``'s p2m root and VMID: stage-2 TLB entries are VMID-tagged, so no TLB
    maintenance is needed. The lookup strategy's hook runs first; whatever it writes into
    ``xen_second`` and whatever TLB maintenance it issues is counted as
    ``context_switch_slot_writes`` / ``context_switch_tlbi`` (0 and 0 for the partitioned VLPT).
    Raises RangeError for a ``core`` that is not a Hypervisor, a ``lookup`` that is not a
    P2MLookup, a bad CPU or a domain that is not live (nothing changed then).
    """
    check_core(core, "context_switch").check_cpu(cpu)
    if not isinstance(lookup, P2MLookup):
        raise RangeError(f"context_switch(lookup={lookup!r}): expected a P2MLookup")
    if d is not None:
        core.check_domain(d)
    ledger = core.ledger
    prev = core.current[cpu]
    writes = ledger.counts["xen_second_writes"]
    tlbi = ledger.counts["tlbi"]
    lookup.on_context_switch(cpu, prev, d)
    if d is not None:
        core.load_stage2(cpu, d)
    core.current[cpu] = d
    ledger.add("context_switches")
    ledger.add("context_switch_slot_writes", ledger.counts["xen_second_writes"] - writes)
    ledger.add("context_switch_tlbi", ledger.counts["tlbi"] - tlbi)
