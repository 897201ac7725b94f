"""The stale detector watches the guest-access path without changing it.

Two systems run the same random guest accesses in lockstep: one with the stale detector on
(every TLB hit re-walked and compared), one with it off. Results, errors, TLB contents, MMU
counters and the ledger must agree after every step.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vaalloc.errors import MappingError
from vaalloc.xen import Xen

MB = 1 << 20

ops = st.lists(
    st.tuples(
        st.sampled_from(["write", "read", "peek", "balloon"]),
        st.integers(0, 8 * 256 - 1),  # page of an 8MB guest
        st.integers(0, 1),  # cpu
    ),
    max_size=60,
)


def run(xen: Xen, op: str, page: int, cpu: int) -> object:
    d = xen.domains[1]
    ipa = d.ram_base + page * 4096
    try:
        if op == "write":
            return xen.guest_write(d, ipa, cpu=cpu)
        if op == "read":
            return xen.guest_read(d, ipa, cpu=cpu)
        if op == "peek":
            return sorted(xen.logdirty.peek(d, clean=bool(page & 1)))
        chunk = ipa & ~(2 * MB - 1)
        if d.stage2.populated(chunk):
            xen.p2m_depopulate(d, chunk, 2 * MB)
        else:
            xen.p2m_populate(d, chunk, 2 * MB)
        return None
    except MappingError as error:
        return ("MappingError", str(error))


def observable(xen: Xen) -> object:
    return (
        [list(m.tlb.entries.items()) for m in xen.mmus],
        [(m.hits, m.misses, m.walks, m.walk_reads) for m in xen.mmus],
        xen.ledger.snapshot(),
    )


@given(ops, st.booleans())
def test_fast_path_matches_mmu_path(sequence: list[tuple[str, int, int]], superpages: bool) -> None:
    slow = Xen(cpus=2, stale_check=True, tlb_entries=16)
    fast = Xen(cpus=2, stale_check=False, tlb_entries=16)
    for xen in (slow, fast):
        d = xen.create_domain(ram=8 * MB, superpages=superpages)
        xen.logdirty.enable(d)
    for op, page, cpu in sequence:
        # Same inputs, same outputs, same translation state.
        assert run(slow, op, page, cpu) == run(fast, op, page, cpu)
        assert observable(slow) == observable(fast)
    assert slow.stale_hits() == []
