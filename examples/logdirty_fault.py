"""Log-dirty on the Xen model: a guest write faults, the handler finds the p2m leaf through the
VLPT (a Xen virtual address), marks the page dirty, and peek() reports it.

Run: python examples/logdirty_fault.py
"""

from __future__ import annotations

from vaalloc.lpae import Translation
from vaalloc.xen import Xen

xen = Xen(cpus=2, stale_check=True)  # every TLB hit is checked against a fresh walk
d = xen.create_domain(ram=256 << 20)  # guest RAM at IPA 0x80000000, 4KB pages
xen.logdirty.enable(d)
run = xen.vlpt.run(d)
print(f"d{d.domid}: VLPT slots {run.first_slot}..{run.first_slot + run.nr - 1} at {run.va:#x}")

ipa = d.ram_base + 0x123_4000
third, second = xen.vlpt.third_va(d, ipa), xen.vlpt.second_va(d, ipa)
leaf = d.p2m.walk(ipa)
assert isinstance(leaf, Translation)
assert xen.read_va(0, third) == leaf.descriptor  # the leaf, read through Xen's own MMU
assert not leaf.writable  # write-protected by enable
print(f"p2m leaf of {ipa:#x} at Xen VA {third:#x}, level-2 entry at {second:#x}")

with xen.ledger.measure() as cost:
    xen.guest_write(d, ipa, cpu=1)  # stage-2 permission fault -> the log-dirty handler
print("one guest write:", ", ".join(f"{k}={v}" for k, v in sorted(cost.items())))
assert cost["faults"] == 1 and cost["vlpt_reads"] == 2 and cost["vlpt_writes"] == 1

with xen.ledger.measure() as again:
    xen.guest_write(d, ipa, cpu=1)  # now writable: no fault
assert "faults" not in again

dirty = xen.logdirty.peek(d, clean=True)
print(f"peek(clean=True) -> {sorted(hex(g) for g in dirty)}")
assert dirty == {ipa >> 12}
assert xen.logdirty.peek(d, clean=True) == set()  # cleaned: re-protected, nothing new

xen.context_switch(0, d)
assert xen.ledger.counts["context_switch_slot_writes"] == 0  # per-domain slots: never rewritten
assert xen.stale_hits() == []
print("context switch wrote 0 slots; stale TLB hits: 0")
xen.logdirty.disable(d)
