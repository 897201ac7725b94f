"""Huge ranges, carve trees, exhaustion, the last granule, AddressSpace, thread safety."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import threading
import tracemalloc

import hypothesis.strategies as st
import pytest
from hypothesis import given

import vaalloc
from vaalloc.alloc import AddressSpace, NameConflict, RangeAllocator, UnknownName
from vaalloc.errors import InvalidFree, OutOfSpace, RangeError, VAAllocError

G = 4096


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "instant-fit"])
@pytest.mark.parametrize("bits", [40, 48, 60])
def test_huge_range_is_cheap(policy: str, bits: int) -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    a = RangeAllocator(0, 1 << bits, policy=policy, guard=False, name="frames")
    vas = [a.alloc(1) for _ in range(100)] + [a.alloc(512, 512), a.alloc(1 << 18)]
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used < 1 << 20  # far below one bit per granule (2**28+ granules)
    assert vas[:3] == [0, G, 2 * G]
    top = a.reserve((1 << bits) - G, 1)  # the very last granule
    assert a.size(top) == 1
    a.check()
    for va in vas:
        a.free(va)
    a.free(top)
    assert a.stats().used == 0 and a.stats().holes == 1
    a.check()


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "instant-fit"])
@pytest.mark.parametrize("guard", [True, False])
def test_exhaustion_and_last_granule(policy: str, guard: bool) -> None:
    a = RangeAllocator(0, 16 * G, policy=policy, guard=guard)
    assert a.alloc(1) == 0  # no guard is needed before the first granule of the range
    gap = 1 if guard else 0
    # The rest of the range, ending exactly on its last granule (no guard needed there).
    rest = a.alloc(15 - gap)
    assert rest == (1 + gap) * G
    with pytest.raises(OutOfSpace):
        a.alloc(1)
    assert a.stats().free == gap and a.stats().largest_free == gap
    a.check()
    a.free(rest)
    assert a.alloc(1, min_addr=15 * G) == 15 * G  # the last granule alone
    a.free(0)
    a.free(15 * G)
    assert a.alloc(16) == 0  # the whole range, first to last granule


@given(
    sizes=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    depth=st.integers(1, 4),
    guard=st.booleans(),
)
def test_carve_trees(sizes: list[int], depth: int, guard: bool) -> None:
    root = RangeAllocator(0, 4096 * G, name="root", guard=guard)
    before = root.snapshot()
    levels = [root]
    for level in range(depth):
        parent = levels[-1]
        nr = parent.stats().largest_free // 2
        if nr < 4:
            break
        child = parent.carve(nr, align=4, name=f"l{level}", policy="best-fit")
        assert parent.start <= child.start < child.end <= parent.end
        assert child.start // G % 4 == 0
        levels.append(child)
    leaf = levels[-1]
    vas = []
    for n in sizes:
        with contextlib.suppress(OutOfSpace):
            vas.append(leaf.alloc(n))
    space = AddressSpace("test")
    space.add(root)
    for va in vas:
        assert space.owner(va) is leaf
    for node in levels:
        node.check()
    for va in vas:
        leaf.free(va)
    for node in reversed(levels[1:]):
        node.release()
    assert root.snapshot() == before


def test_snapshot_is_json_and_restores_state() -> None:
    a = RangeAllocator(0, 1 << 30, policy="best-fit", name="snap")
    rnd = random.Random(3)
    vas = [a.alloc(rnd.randint(1, 9), 1 << rnd.randint(0, 3)) for _ in range(50)]
    kid = a.carve(16, name="kid")
    for va in vas[::3]:
        a.free(va)
    snap = json.loads(json.dumps(a.snapshot()))
    nxt = [a.alloc(3), a.alloc(7, 8)]
    a.restore(snap)
    assert a.snapshot() == snap
    assert [a.alloc(3), a.alloc(7, 8)] == nxt  # same state, same choices
    assert kid.parent is a
    a.check()


def test_address_space() -> None:
    space = AddressSpace("xen-va")
    vmap = space.create_xen_vmap(0x1000_0000, 0x4000_0000)
    vlpt = space.create(0x0800_0000, 0x1000_0000, "vlpt", granule=0x20_0000, guard=False)
    with pytest.raises(RangeError) as info:
        space.create(0x3000_0000, 0x5000_0000, "heap")
    assert "vmap" in str(info.value) and "heap" in str(info.value)
    with pytest.raises(RangeError):
        space.create(0x0700_0000, 0x0900_0000, "low")
    with pytest.raises(NameConflict):
        space.create(0x4000_0000, 0x8000_0000, "vlpt")
    heap = space.create(0x4000_0000, 0x8000_0000, "xenheap")
    assert [a.name for a in space] == ["vlpt", "vmap", "xenheap"]
    assert space["vmap"] is vmap and "vlpt" in space and len(space) == 3
    assert space.lookup(0x0800_0000) is vlpt
    assert space.lookup(0x0FFF_FFFF) is vlpt
    assert space.lookup(0x1000_0000) is vmap
    assert space.lookup(0x8000_0000) is None and space.lookup(0) is None
    assert space.owner(heap.alloc(1)) is heap
    assert space.remove("xenheap") is heap
    with pytest.raises(UnknownName):
        space["xenheap"]
    with pytest.raises(UnknownName):
        space.remove("xenheap")
    space.create(0x4000_0000, 0x5000_0000, "xenheap2")


def test_top_level_names() -> None:
    assert vaalloc.OutOfSpace is not None
    assert issubclass(UnknownName, vaalloc.VAAllocError)


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "instant-fit", "xen"])
def test_threaded_stress_no_overlap_no_lost_pages(policy: str) -> None:
    if policy == "xen":
        a = RangeAllocator.xen_vmap(0x1000_0000, 0x1000_0000 + 65536 * G)
    else:
        a = RangeAllocator(0, 8192 * G, policy=policy, guard=True)
    base_used = a.stats().used
    errors: list[BaseException] = []
    owned: dict[int, list[tuple[int, int]]] = {}

    def worker(tid: int) -> None:
        rnd = random.Random(tid)
        mine: list[tuple[int, int]] = []
        try:
            for _ in range(400):
                if mine and rnd.random() < 0.45:
                    va, nr = mine.pop(rnd.randrange(len(mine)))
                    assert a.free(va) == nr
                else:
                    nr = rnd.randint(1, 12)
                    with contextlib.suppress(OutOfSpace):
                        mine.append((a.alloc(nr, 1 << rnd.randint(0, 2)), nr))
        except BaseException as exc:  # reported below, with the thread's id
            errors.append(exc)
        owned[tid] = mine

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    runs = sorted(r for mine in owned.values() for r in mine)
    for (va1, nr1), (va2, _) in itertools.pairwise(runs):
        assert va1 + nr1 * G < va2  # disjoint, with a guard granule between
    assert sorted(a.allocations()) == runs
    assert a.stats().used == base_used + sum(nr for _, nr in runs)
    a.check()
    for va, _ in runs:
        a.free(va)
    with pytest.raises(InvalidFree):
        a.free(runs[0][0]) if runs else a.free(-1)
    assert a.stats().used == base_used


def test_a_child_returns_through_the_parents_public_reclaim() -> None:
    parent = RangeAllocator(0, 256 * G, name="parent")
    other = RangeAllocator(0, 256 * G, name="other")
    child = parent.carve(8, name="kid")
    before = parent.snapshot()
    with pytest.raises(RangeError):
        parent.reclaim(child)  # not released: the parent refuses, nothing changes
    with pytest.raises(RangeError):
        other.reclaim(child)  # not this instance's child
    assert parent.snapshot() == before and not child.released
    child.release()  # calls parent.reclaim(child)
    assert child.released and parent.children() == []
    assert parent.stats().used == 0
    with pytest.raises(RangeError):
        parent.reclaim(child)  # already taken back
    assert parent.alloc(8) == 0  # the range is free again


def test_a_released_child_refuses_every_further_use() -> None:
    """Issue 12: a carved child given back to its parent manages nothing; each call says so."""

    parent = RangeAllocator(0x1000_0000, 0x2000_0000, name="parent")
    child = parent.carve(16, name="child")
    va = child.alloc(2)
    child.free(va)
    child.release()
    assert child.released
    calls = {
        "alloc": lambda: child.alloc(1),
        "free": lambda: child.free(child.start),
        "size": lambda: child.size(child.start),
        "reserve": lambda: child.reserve(child.start, 1),
        "carve": lambda: child.carve(1),
        "stats": child.stats,
        "snapshot": child.snapshot,
        "restore": lambda: child.restore({}),
        "allocations": child.allocations,
        "children": child.children,
        "bitmap": child.bitmap,
        "release": child.release,
    }
    for name, call in calls.items():
        with pytest.raises(VAAllocError, match="released"):
            call()
        assert parent.stats().used == 0, name  # the range stayed the parent's, free
    with pytest.raises(RangeError, match="released"):
        AddressSpace().add(child)


def test_address_space_names_are_strs() -> None:
    space = AddressSpace()
    space.create(0x1000_0000, 0x2000_0000, "vmap")
    with pytest.raises(RangeError, match="str"):
        space[["vmap"]]  # type: ignore[index]
    assert ["vmap"] not in space and "vmap" in space
