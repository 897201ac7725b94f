"""check() must notice every kind of internal inconsistency (it is the tests' main invariant,
so it has to be able to fail)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvariantError

G = 4096


def generic() -> RangeAllocator:
    a = RangeAllocator(0, 4096 * G, name="victim")
    for n in (1, 2, 70, 3, 5):
        a.alloc(n)
    a.free(2 * G)  # the 2-granule run (guard at 1): leaves the interior hole [1, 5)
    return a


def xen() -> RangeAllocator:
    x = RangeAllocator.xen_vmap(0x1000_0000, 0x4000_0000, name="vmap")
    for n in (1, 2, 70, 3, 5):
        x.alloc(n)
    x.free(0x1000_9000)
    return x


TAMPER: list[tuple[str, Callable[[], RangeAllocator], Callable[[RangeAllocator], None]]] = [
    ("bitmap bit set", generic, lambda a: a._bitmap.set_run(4000, 1)),
    ("bitmap bit cleared", generic, lambda a: a._bitmap.clear_run(0, 1)),
    ("live run lengthened", generic, lambda a: a._live.__setitem__(0, 2)),
    ("live run forgotten", generic, lambda a: a._live.pop(0)),
    ("hole dropped", generic, lambda a: a._index.remove(max(a._index.start_to_end))),
    (
        "hole end shifted",
        generic,
        lambda a: a._index.start_to_end.__setitem__(1, a._index.start_to_end[1] - 1),
    ),
    ("class head stale", generic, lambda a: a._index._heads.__setitem__(5, 1 << 100)),
    ("class mask stale", generic, lambda a: setattr(a._index, "mask", 0)),
    ("used counter", generic, lambda a: setattr(a, "_used", 1)),
    ("vm_low inside a run", xen, lambda a: setattr(a, "_vm_low", 7)),
    ("vm_low past vm_top", xen, lambda a: setattr(a, "_vm_low", 40000)),
    ("vm_top unreachable", xen, lambda a: a._index.set_hi(40000)),
    ("run glued to the bitmap pages", xen, lambda a: a._bitmap.set_run(6, 1)),
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
    by_len = a._index.by_len
    assert by_len is not None
    by_len.add((7, 123))
    with pytest.raises(InvariantError):
        a.check()
