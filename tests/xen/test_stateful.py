"""A random life of a Xen system: domains, CPUs, log-dirty, writes, p2m changes, switches.

Invariants after every step: every VLPT read (leaf and second-level view, on every CPU) equals
the p2m entry; peek returns exactly the pages written since the last clean; no two domains'
slots overlap and the slots equal the p2m first-level entries; context switches write no slot;
the stale-TLB detector stays silent; frames return to the boot value once every domain is gone.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from vaalloc.errors import LogDirtyError, MappingError
from vaalloc.lpae import Translation
from vaalloc.lpae.descriptor import is_table
from vaalloc.xen import Domain, Xen

MB = 1 << 20
GB = 1 << 30
CHUNK = 2 * MB
CPUS = 3
SIZES = [(2 * MB, False), (4 * MB, False), (6 * MB, True), (8 * MB, True)]
BIG = GB + 4 * MB  # spans two p2m first-level entries: two slots; superpages keep it cheap


class XenMachine(RuleBasedStateMachine):
    domains = Bundle("domains")

    def __init__(self) -> None:
        super().__init__()
        self.xen = Xen(cpus=CPUS, stale_check=True)
        self.expected: dict[int, set[int]] = {}
        self.populated: dict[int, set[int]] = {}  # domid -> populated 2MB chunk bases

    def live(self) -> list[Domain]:
        return list(self.xen.domains.values())

    @precondition(lambda self: len(self.xen.domains) < 4)
    @rule(target=domains, size=st.sampled_from(SIZES))
    def create(self, size: tuple[int, bool]) -> Domain:
        ram, superpages = size
        d = self.xen.create_domain(ram=ram, superpages=superpages)
        self.expected[d.domid] = set()
        self.populated[d.domid] = set(range(d.ram_base, d.ram_end, CHUNK))
        return d

    @precondition(lambda self: all(d.ram_size < GB for d in self.xen.domains.values()))
    @rule(target=domains)
    def create_big(self) -> Domain:
        return self.create((BIG, True))

    @rule(d=consumes(domains))
    def destroy(self, d: Domain) -> None:
        if d.logdirty:
            try:
                self.xen.destroy_domain(d)
            except LogDirtyError:
                self.xen.logdirty.disable(d)
            else:
                raise AssertionError("destroy while tracking must raise")
        self.xen.destroy_domain(d)
        del self.expected[d.domid]
        if not self.xen.domains:
            assert self.xen.mem.frames_in_use == self.xen.boot_frames

    @rule(d=domains)
    def enable(self, d: Domain) -> None:
        if not d.alive:
            return
        if d.logdirty:
            try:
                self.xen.logdirty.enable(d)
            except LogDirtyError:
                return
            raise AssertionError("enable twice must raise")
        self.xen.logdirty.enable(d)
        self.expected[d.domid] = set()

    @rule(d=domains)
    def disable(self, d: Domain) -> None:
        if not d.alive:
            return
        if not d.logdirty:
            try:
                self.xen.logdirty.disable(d)
            except LogDirtyError:
                return
            raise AssertionError("disable when off must raise")
        self.xen.logdirty.disable(d)
        self.expected[d.domid] = set()

    @rule(d=domains, page=st.integers(0, 4095), cpu=st.integers(0, CPUS - 1), hi=st.booleans())
    def write(self, d: Domain, page: int, cpu: int, hi: bool) -> None:
        if not d.alive:
            return
        pages = d.ram_size >> 12
        ipa = d.ram_base + ((pages - 1 - page if hi else page) % pages) * 4096
        if ipa & ~(CHUNK - 1) not in self.populated[d.domid]:
            try:
                self.xen.guest_write(d, ipa, cpu=cpu)
            except MappingError:
                return
            raise AssertionError("write to unpopulated RAM must fault")
        self.xen.guest_write(d, ipa, cpu=cpu, value=ipa)
        assert self.xen.guest_read(d, ipa, cpu=(cpu + 1) % CPUS) == ipa
        if d.logdirty:
            self.expected[d.domid].add(ipa >> 12)

    @rule(d=domains, clean=st.booleans())
    def peek(self, d: Domain, clean: bool) -> None:
        if not d.alive or not d.logdirty:
            return
        assert self.xen.logdirty.peek(d, clean=clean) == self.expected[d.domid]
        if clean:
            self.expected[d.domid] = set()

    @rule(cpu=st.integers(0, CPUS - 1), d=st.one_of(st.none(), domains))
    def switch(self, cpu: int, d: Domain | None) -> None:
        if d is not None and not d.alive:
            return
        before = self.xen.ledger.counts["xen_second_writes"]
        self.xen.context_switch(cpu, d)
        assert self.xen.ledger.counts["xen_second_writes"] == before

    @rule(d=domains, which=st.integers(0, 600))
    def balloon(self, d: Domain, which: int) -> None:
        if not d.alive:
            return
        chunks = list(range(d.ram_base, d.ram_end, CHUNK))
        chunk = chunks[which % len(chunks)]
        if chunk in self.populated[d.domid]:
            self.xen.p2m_depopulate(d, chunk, CHUNK)
            self.populated[d.domid].discard(chunk)
            lo, hi = chunk >> 12, (chunk + CHUNK) >> 12
            self.expected[d.domid] = {g for g in self.expected[d.domid] if not lo <= g < hi}
        else:
            self.xen.p2m_populate(d, chunk, CHUNK)
            self.populated[d.domid].add(chunk)

    @invariant()
    def vlpt_reads_equal_p2m(self) -> None:
        xen = self.xen
        for d in self.live():
            if not d.logdirty:
                continue
            for chunk in sorted(self.populated[d.domid])[:6] + sorted(self.populated[d.domid])[-2:]:
                for ipa in (chunk, chunk + CHUNK - 4096):
                    cpu = (ipa >> 21) % CPUS
                    l2 = xen.read_va(cpu, xen.vlpt.second_va(d, ipa))
                    assert l2 == xen.mem.read64(d.p2m.entry_pa(ipa, 2))
                    if is_table(l2):
                        t = d.p2m.walk(ipa)
                        assert isinstance(t, Translation)
                        assert xen.read_va(cpu, xen.vlpt.third_va(d, ipa)) == t.descriptor

    @invariant()
    def consistent(self) -> None:
        self.xen.check()
        assert self.xen.stale_hits() == []
        assert self.xen.ledger.counts["context_switch_slot_writes"] == 0
        assert self.xen.ledger.counts["context_switch_tlbi"] == 0

    def teardown(self) -> None:
        for d in self.live():
            if d.logdirty:
                self.xen.logdirty.disable(d)
            self.xen.destroy_domain(d)
        assert self.xen.mem.frames_in_use == self.xen.boot_frames


TestXenMachine = XenMachine.TestCase
