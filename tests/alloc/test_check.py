"""check() must notice every kind of internal inconsistency (it is the tests' main invariant,
so it has to be able to fail).

The bitmap is built from the run tags on demand, so "a bit set" or "a bit cleared" is now a
tag that the run list or the free lists do not follow; every case of the first index's list is
kept, expressed against the tags, free lists and heads of the second.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vaalloc.alloc import RangeAllocator
from vaalloc.alloc.extents import PROMOTE, BlockList
from vaalloc.errors import InvariantError

G = 4096


def generic() -> RangeAllocator:
    a = RangeAllocator(0, 4096 * G, name="victim")
    for n in (1, 2, 70, 3, 5):
        a.alloc(n)
    a.free(2 * G)  # the 2-granule run (guard at 1): leaves the interior hole [1, 5)
    # Runs at 0, 5 (70), 76 (3), 80 (5); holes [1, 5), [75, 76), [79, 80), [85, 4096).
    return a


def xen() -> RangeAllocator:
    x = RangeAllocator.xen_vmap(0x1000_0000, 0x4000_0000, name="vmap")
    for n in (1, 2, 70, 3, 5):
        x.alloc(n)
    x.free(0x1000_9000)
    # Bitmap pages [0, 6); runs at 7, 12 (70), 83 (3), 87 (5); holes [6, 7), [8, 12), ...
    return x


def retag(a: RangeAllocator, u: int, nr: int, nxt: int, prev: int) -> None:
    """Overwrite (or add) the tag at ``u`` behind the index's back."""
    a._index.runs[u] = a._index.pack(u, nr, nxt, prev)


def _bucket_of_top_hole(a: RangeAllocator) -> int:
    filed = a._index.filing(85, 4096)
    assert filed is not None
    return filed[1]


TAMPER: list[tuple[str, Callable[[], RangeAllocator], Callable[[RangeAllocator], None]]] = [
    # A used granule that nothing links: the bitmap built from the tags has it, the index not.
    ("bitmap bit set", generic, lambda a: retag(a, 4000, 1, 4096, 80)),
    # A run's tag loses its last granule: the bitmap shows it free, the counter does not.
    ("bitmap bit cleared", generic, lambda a: retag(a, 5, 69, 76, 0)),
    ("live run lengthened", generic, lambda a: retag(a, 0, 2, 5, -1)),
    ("live run forgotten", generic, lambda a: a._index.runs.pop(76)),
    ("hole dropped", generic, lambda a: a._index._hole(80, 85, 4096, False)),
    # The run before [1, 5) links to a run at 4 that does not exist: the hole's end moved.
    ("hole end shifted", generic, lambda a: retag(a, 0, 1, 4, -1)),
    ("link back broken", generic, lambda a: retag(a, 76, 3, 80, 0)),
    ("class head stale", generic, lambda a: a._index.class_head.__setitem__(5, 1 << 100)),
    ("class mask stale", generic, lambda a: setattr(a._index, "class_mask", 0)),
    (
        "free-list head stale",
        generic,
        lambda a: a._index.list_head.__setitem__(_bucket_of_top_hole(a), 1),
    ),
    ("group minimum stale", generic, lambda a: a._index.group_min.__setitem__(0, 3)),
    ("hole counter", generic, lambda a: setattr(a._index, "holes", 9)),
    ("used counter", generic, lambda a: setattr(a, "_used", 1)),
    ("vm_low inside a run", xen, lambda a: setattr(a, "_vm_low", 7)),
    ("vm_low past vm_top", xen, lambda a: setattr(a, "_vm_low", 40000)),
    ("vm_top unreachable", xen, lambda a: a._index.set_top(40000)),
    # A run at bit 6, right after the bitmap pages, without the guard bit Xen keeps there.
    ("run glued to the bitmap pages", xen, lambda a: a._index.take(0, 6, 1)),
    # The bitmap pages' own tag (the floor sentinel) grown over the guard bit.
    ("bitmap pages lengthened", xen, lambda a: retag(a, 0, 7, 7, 0)),
]


@pytest.mark.parametrize("what,make,tamper", TAMPER, ids=[t[0] for t in TAMPER])
def test_check_detects(
    what: str,
    make: Callable[[], RangeAllocator],
    tamper: Callable[[RangeAllocator], None],
) -> None:
    a = make()
    a.check()  # consistent before
    tamper(a)
    with pytest.raises(InvariantError) as info:
        a.check()
    assert a.name in str(info.value)


def test_best_fit_length_index_checked() -> None:
    a = RangeAllocator(0, 256 * G, policy="best-fit", name="bf")
    a.alloc(3)
    a.alloc(4)
    a.free(0)
    a.check()
    # File a hole of usable length 7 that is not there (the first index's by_len.add((7, s))).
    a._index._hole(4, 100, 109, True)
    with pytest.raises(InvariantError):
        a.check()


def promoted() -> RangeAllocator:
    """More than PROMOTE holes of one length and colour: their free list becomes blocks."""
    a = RangeAllocator(0, 8 * (2 * PROMOTE + 300) * G, guard=True, name="blocks")
    vas = [a.alloc(3, 8) for _ in range(2 * PROMOTE + 200)]  # runs at 8i .. 8i + 2
    for va in vas[1::2]:
        a.free(va)  # holes [8i + 3, 8i + 16): usable [8i + 4, 8i + 15), length 11, colour 4
    return a


def test_block_lists_are_used_and_checked() -> None:
    a = promoted()
    a.check()
    lists = [fl for fl in a._index.freelists if isinstance(fl, BlockList)]
    assert len(lists) == 1 and len(lists[0]) == PROMOTE + 99  # the last freed joins the top
    assert len(lists[0].blocks) > 1
    lists[0].firsts[1] += 1  # a block's first entry forgotten
    with pytest.raises(InvariantError):
        a.check()


def test_block_list_order_checked() -> None:
    a = promoted()
    block = next(fl for fl in a._index.freelists if isinstance(fl, BlockList)).blocks[0]
    block[0], block[1] = block[1], block[0]
    with pytest.raises(InvariantError):
        a.check()
