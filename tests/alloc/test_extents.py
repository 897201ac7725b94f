"""The extent index's parts on their own: BlockList against a sorted list, the size classes,
and the colour tables that decide near misses (each against a brute force)."""

from __future__ import annotations

import random
from bisect import bisect_left

import hypothesis.strategies as st
import pytest
from hypothesis import given

from tests.alloc.model import Model
from vaalloc.alloc import RangeAllocator, extents
from vaalloc.alloc.extents import (
    BLOCK,
    EXACT,
    FITS,
    NEAR,
    BlockList,
    class_lower_bound,
    fit_in,
    size_class,
)
from vaalloc.errors import OutOfSpace

VALUES = st.integers(0, 40 * BLOCK)


@given(
    start=st.lists(VALUES, min_size=1, max_size=6 * BLOCK, unique=True),
    ops=st.lists(st.tuples(st.booleans(), VALUES), max_size=300),
    probes=st.lists(st.integers(-1, 40 * BLOCK + 1), max_size=20),
)
def test_block_list_is_a_sorted_list(
    start: list[int], ops: list[tuple[bool, int]], probes: list[int]
) -> None:
    model = sorted(start)
    bl = BlockList(list(model))
    for add, x in ops:
        if add and x not in model:
            bl.add(x)
            model.insert(bisect_left(model, x), x)
        elif not add and x in model and len(model) > 1:
            bl.remove(x)
            model.remove(x)
        assert bl.problem() is None
    assert list(bl) == model and len(bl) == len(model)
    for x in probes:
        i = bisect_left(model, x)
        assert list(bl.entries_from(x)) == model[max(i - 1, 0) :]


def test_size_classes_are_exact_then_eight_per_power_of_two() -> None:
    assert [size_class(n) for n in (1, 2, 63)] == [1, 2, 63]
    ks = [size_class(n) for n in range(1, 1 << 14)]
    assert ks == sorted(ks)  # monotone
    for k in range(1, size_class((1 << 14) - 1)):
        lo = class_lower_bound(k)
        assert size_class(lo) == k and size_class(lo - 1) == k - 1
    assert size_class(1 << 20) - size_class(1 << 19) == 8


def test_colour_tables_decide_near_misses_like_fit_in() -> None:
    # A hole of usable length nr + d starting at colour r holds the request exactly when the
    # table says so, wherever in the address space it lies.
    for align in (2, 4, 8):
        for phase in range(align):
            near = NEAR[align | phase]
            assert near is not None
            offsets = set(range(8 * (align - 1)))
            picked = set(near(list(offsets)))
            for nr in (1, 5, EXACT - align):
                for d in range(align - 1):
                    fits_d = set(FITS[align | phase][d](list(range(8))))  # type: ignore[operator]
                    for r in range(8):
                        for base in (0, 8 * 1000, 8 * 123457):
                            us = base + r
                            fits = fit_in(us, us + nr + d, nr, align, phase, 0) >= 0
                            assert fits == (d * 8 + r in picked) == (r in fits_d)


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "instant-fit"])
def test_searches_through_block_lists_agree_with_the_model(
    policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free lists long enough to be BlockLists (the thresholds lowered so that a small range,
    which the brute-force model can check, has them), searched by every path that walks them:
    windows, nocross, align > 8, reserve, frees that merge."""
    monkeypatch.setattr(extents, "SHORT", 4)  # list -> array beyond 4 holes
    monkeypatch.setattr(extents, "PROMOTE", 12)  # array -> BlockList beyond 12
    monkeypatch.setattr(extents, "BLOCK", 3)
    g = 4096
    size = 600
    rnd = random.Random(policy)
    a = RangeAllocator(0, size * g, g, policy, True, name="long-lists")
    m = Model(0, size, policy, True)
    live: list[int] = []
    for _ in range(60):  # many 3-unit holes at colour 4: one long free list
        u = m.place(3, 8)
        assert u is not None and a.alloc(3, 8) == u * g
        m.take(u, 3)
        live.append(u)
    for u in live[1::2]:
        a.free(u * g)
        m.give(u)
    live = live[::2]
    # The long list went list -> array -> BlockList on the way here.
    assert any(isinstance(fl, BlockList) for fl in a._index.freelists)
    for _ in range(150):
        roll = rnd.random()
        if roll < 0.35 and live:
            u = live.pop(rnd.randrange(len(live)))
            assert a.free(u * g) == m.give(u)
        elif roll < 0.45:
            u, nr = rnd.randrange(size), rnd.randint(1, 4)
            if u + nr <= size and m.valid(u, nr, 1, 0, 0, 0, size):
                assert a.reserve(u * g, nr) == u * g
                m.take(u, nr)
                live.append(u)
        else:
            nr = rnd.randint(1, 12)
            align = rnd.choice([1, 2, 8, 16, 32])
            phase = rnd.randrange(align) if rnd.random() < 0.3 else 0
            nocross = rnd.choice([0, 0, 16, 64])
            if nocross and phase % min(align, nocross) + nr > nocross:
                continue
            lo = rnd.randrange(size - 1) if rnd.random() < 0.4 else None
            hi = rnd.randrange((lo or 0) + 1, size + 1) if rnd.random() < 0.4 else None
            kwargs: dict[str, int] = {"phase": phase, "nocross": nocross}
            if lo is not None:
                kwargs["min_addr"] = lo * g
            if hi is not None:
                kwargs["max_addr"] = hi * g
            want = m.place(nr, align, phase, nocross, lo, hi)
            if want is None:
                with pytest.raises(OutOfSpace):
                    a.alloc(nr, align, **kwargs)
                continue
            assert a.alloc(nr, align, **kwargs) == want * g
            m.take(want, nr)
            live.append(want)
        a.check()
