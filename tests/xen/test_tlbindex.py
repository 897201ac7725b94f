"""VmidIndexedTLB is the LPAE TLB with a faster whole-VMID invalidation: same contents always."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vaalloc.lpae.tlb import TLB, hyp_key
from vaalloc.xen.tlbindex import VmidIndexedTLB

keys = st.one_of(
    st.builds(lambda va: hyp_key(va << 12, 12), st.integers(0, 40)),
    st.builds(lambda v, ipa: TLB.s2_key(v, ipa << 12, 12), st.integers(1, 3), st.integers(0, 40)),
    st.builds(
        lambda v, a, va: TLB.guest_key(v, a, va << 12, 12),
        st.integers(1, 3),
        st.sampled_from([-1, 5]),
        st.integers(0, 40),
    ),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), keys),
        st.tuples(st.just("vmid"), st.integers(1, 3)),
        st.tuples(st.just("ipa"), st.tuples(st.integers(1, 3), st.integers(0, 40))),
        st.tuples(st.just("all"), st.none()),
        st.tuples(st.just("guests"), st.none()),
        st.tuples(st.just("hyp"), st.integers(0, 40)),
    ),
    max_size=80,
)


@given(ops, st.integers(0, 8))
def test_same_contents_as_the_lpae_tlb(sequence: list[tuple[str, object]], capacity: int) -> None:
    plain, indexed = TLB(capacity), VmidIndexedTLB(capacity)
    for n, (op, arg) in enumerate(sequence):
        results = []
        for tlb in (plain, indexed):
            if op == "insert":
                tlb.insert(arg, (n, 7, 3, n, 12, -1, -1, -1, False, 0xFFF))  # type: ignore[arg-type]
                results.append(None)
            elif op == "vmid":
                results.append(tlb.invalidate_guest(vmid=arg))  # type: ignore[arg-type]
            elif op == "ipa":
                vmid, page = arg  # type: ignore[misc]
                results.append(tlb.invalidate_guest(vmid=vmid, va=page << 12, combined=False))
            elif op == "all":
                results.append(tlb.invalidate_all())
            elif op == "guests":
                results.append(tlb.invalidate_guest())
            else:
                results.append(tlb.invalidate_hyp(arg << 12))  # type: ignore[operator]
        assert results[0] == results[1]
        assert list(plain.entries.items()) == list(indexed.entries.items())
