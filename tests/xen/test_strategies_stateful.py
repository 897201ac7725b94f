"""Every p2m lookup strategy under the same random life: same dirty sets, 0 stale TLB hits.

The machine mirrors tests/xen/test_stateful.py (domains, log-dirty, writes on any CPU, peeks,
switches, balloons) but is parametrised by strategy and checks, after every step: the dirty
set equals the pages written since the last clean; the strategy's own reads (level-2 entry and
leaf, on a CPU where the handler could run for that domain) equal the p2m; ``xen.check()``
(which runs the strategy's ``check``); the stale-TLB detector is silent on every MMU, the arm64
direct-map MMUs included; and frames return to their boot value once every domain is gone.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from vaalloc.errors import LogDirtyError, MappingError, OutOfSpace
from vaalloc.lpae import Translation
from vaalloc.lpae.descriptor import is_table
from vaalloc.xen import Domain, Xen
from vaalloc.xen.lookup import DirectMapWalk, SwitchedVLPT

MB = 1 << 20
GB = 1 << 30
CHUNK = 2 * MB
CPUS = 3
SIZES = [(2 * MB, False), (4 * MB, False), (6 * MB, True), (GB + 4 * MB, True)]

# (strategy, capacity): hybrid with one slot so the fallback walk is exercised; switched with
# one slot per CPU so a 2-slot domain is refused.
CASES = [
    ("partitioned", None),
    ("switched", None),
    ("switched-va", 1),
    ("switched-auto", None),
    ("switched-lazy", None),
    ("walk", None),
    ("walk64", None),
    ("hybrid", 1),
]


def machine_for(strategy: str, capacity: int | None) -> type[RuleBasedStateMachine]:
    class StrategyMachine(RuleBasedStateMachine):
        domains = Bundle("domains")

        def __init__(self) -> None:
            super().__init__()
            self.xen = Xen(CPUS, lookup=strategy, capacity=capacity, stale_check=True)
            self.expected: dict[int, set[int]] = {}
            self.populated: dict[int, set[int]] = {}

        @precondition(lambda self: len(self.xen.domains) < 4)
        @rule(target=domains, size=st.sampled_from(SIZES))
        def create(self, size: tuple[int, bool]) -> Domain:
            d = self.xen.create_domain(ram=size[0], superpages=size[1])
            self.expected[d.domid] = set()
            self.populated[d.domid] = set(range(d.ram_base, d.ram_end, CHUNK))
            return d

        @rule(d=consumes(domains))
        def destroy(self, d: Domain) -> None:
            if d.logdirty:
                self.xen.logdirty.disable(d)
            self.xen.destroy_domain(d)
            if not self.xen.domains:
                assert self.xen.mem.frames_in_use == self.xen.boot_frames

        @rule(d=domains)
        def enable(self, d: Domain) -> None:
            if not d.alive or d.logdirty:
                return
            try:
                self.xen.logdirty.enable(d)
            except OutOfSpace:
                assert not d.logdirty  # refused, nothing changed (checked by invariants)
                return
            self.expected[d.domid] = set()

        @rule(d=domains)
        def disable(self, d: Domain) -> None:
            if not d.alive:
                return
            if not d.logdirty:
                with pytest.raises(LogDirtyError):
                    self.xen.logdirty.disable(d)
                return
            self.xen.logdirty.disable(d)
            self.expected[d.domid] = set()

        @rule(d=domains, page=st.integers(0, 4095), cpu=st.integers(0, CPUS - 1), hi=st.booleans())
        def write(self, d: Domain, page: int, cpu: int, hi: bool) -> None:
            if not d.alive:
                return
            pages = d.ram_size >> 12
            ipa = d.ram_base + ((pages - 1 - page if hi else page) % pages) * 4096
            if ipa & ~(CHUNK - 1) not in self.populated[d.domid]:
                with pytest.raises(MappingError):
                    self.xen.guest_write(d, ipa, cpu=cpu)
                return
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
            self.xen.context_switch(cpu, d)

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

        def handler_cpu(self, d: Domain) -> int | None:
            """A CPU on which the fault handler could look ``d`` up right now."""
            lookup = self.xen.lookup
            if isinstance(lookup, SwitchedVLPT):
                shown = [c for c, x in enumerate(lookup.installed) if x is d]
                return shown[0] if shown else None
            return d.domid % CPUS

        @invariant()
        def lookups_equal_p2m(self) -> None:
            xen, lookup = self.xen, self.xen.lookup
            for d in list(xen.domains.values()):
                cpu = self.handler_cpu(d)
                if not d.logdirty or cpu is None:
                    continue
                chunks = sorted(self.populated[d.domid])
                for chunk in chunks[:3] + chunks[-2:]:
                    for ipa in (chunk, chunk + CHUNK - 4096):
                        l2 = lookup.read_second(cpu, d, ipa)
                        assert l2 == xen.mem.read64(d.p2m.entry_pa(ipa, 2))
                        if is_table(l2):
                            t = d.p2m.walk(ipa)
                            assert isinstance(t, Translation)
                            assert lookup.read_leaf(cpu, d, ipa) == t.descriptor
                            release = getattr(lookup, "release", None)
                            if release is not None:  # a walk keeps a leaf mapped for writing
                                release(cpu)

        @invariant()
        def consistent(self) -> None:
            self.xen.check()
            assert self.xen.stale_hits() == []
            lookup = self.xen.lookup
            if isinstance(lookup, DirectMapWalk):
                assert lookup.stale_hits() == 0

        def teardown(self) -> None:
            for d in list(self.xen.domains.values()):
                if d.logdirty:
                    self.xen.logdirty.disable(d)
                self.xen.destroy_domain(d)
            assert self.xen.mem.frames_in_use == self.xen.boot_frames

    StrategyMachine.__name__ = f"Machine_{strategy.replace('-', '_')}"
    return StrategyMachine


@pytest.mark.parametrize(("strategy", "capacity"), CASES, ids=[c[0] for c in CASES])
def test_strategy_life(strategy: str, capacity: int | None) -> None:
    machine = machine_for(strategy, capacity)
    # Eight strategies share the CI budget: a sixth of the profile's examples each.
    profile = settings()
    run = settings(profile, max_examples=max(5, profile.max_examples // 6))
    machine.TestCase.settings = run
    machine.TestCase().runTest()
