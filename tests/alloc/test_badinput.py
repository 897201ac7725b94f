"""Bad input to every public call raises a typed error naming the value and the instance, and
changes nothing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from vaalloc.alloc import InUse, RangeAllocator, Unsupported
from vaalloc.errors import (
    AlignmentError,
    InvalidFree,
    OutOfSpace,
    RangeError,
    SnapshotError,
    VAAllocError,
)

G = 4096
START, END = 0x10_0000, 0x20_0000  # 256 granules


def busy() -> tuple[RangeAllocator, list[int]]:
    a = RangeAllocator(START, END, name="victim")
    vas = [a.alloc(n) for n in (1, 4, 2)]
    return a, vas


@pytest.mark.parametrize(
    "args,error",
    [
        ((0, 0), RangeError),
        ((G, G), RangeError),
        ((2 * G, G), RangeError),
        ((-G, G), RangeError),
        ((0, G, 3000), AlignmentError),
        ((0, G, 0), AlignmentError),
        ((0, G, -4096), AlignmentError),
        ((100, 2 * G), AlignmentError),
        ((0, G + 1), AlignmentError),
        ((0.0, G), RangeError),
        ((0, True), RangeError),
        ((0, G, G, "worst-fit"), RangeError),
        ((0, G, G, "first-fit", 1), RangeError),
        ((0, G, G, "first-fit", True, 7), RangeError),
    ],
)
def test_constructor(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        RangeAllocator(*args)


@pytest.mark.parametrize(
    "args,error",
    [((0, 0), RangeError), ((G, 0), RangeError), ((1, 2 * G), AlignmentError)],
)
def test_xen_vmap_constructor(args: tuple[int, int], error: type[Exception]) -> None:
    with pytest.raises(error):
        RangeAllocator.xen_vmap(*args)


BAD_ALLOCS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"nr": 0}, RangeError, "nr=0"),
    ({"nr": -3}, RangeError, "nr=-3"),
    ({"nr": 1.5}, RangeError, "1.5"),
    ({"nr": True}, RangeError, "True"),
    ({"nr": "2"}, RangeError, "'2'"),
    ({"nr": 1, "align": 3}, AlignmentError, "align=3"),
    ({"nr": 1, "align": 0}, AlignmentError, "align=0"),
    ({"nr": 1, "align": -4}, AlignmentError, "align=-4"),
    ({"nr": 1, "align": 2.0}, AlignmentError, "2.0"),
    ({"nr": 1, "align": 4, "phase": 4}, AlignmentError, "phase=4"),
    ({"nr": 1, "align": 4, "phase": -1}, AlignmentError, "phase=-1"),
    ({"nr": 1, "nocross": 6}, AlignmentError, "nocross=6"),
    ({"nr": 9, "nocross": 8}, AlignmentError, "nocross=8"),
    ({"nr": 4, "align": 4, "phase": 3, "nocross": 4}, AlignmentError, "nocross=4"),
    ({"nr": 1, "min_addr": START + 1}, AlignmentError, "min_addr"),
    ({"nr": 1, "min_addr": START - G}, RangeError, "min_addr"),
    ({"nr": 1, "max_addr": END + G}, RangeError, "max_addr"),
    ({"nr": 1, "min_addr": START + 4 * G, "max_addr": START + 4 * G}, RangeError, "max_addr"),
    ({"nr": 1, "min_addr": "0"}, RangeError, "min_addr"),
    ({"nr": 257}, OutOfSpace, "nr=257"),
    ({"nr": 248}, OutOfSpace, "nr=248"),  # only [10, 256) is usable
    ({"nr": 3, "min_addr": START, "max_addr": START + 3 * G}, OutOfSpace, "nr=3"),
]


@pytest.mark.parametrize("kwargs,error,fragment", BAD_ALLOCS)
def test_alloc(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    a, _ = busy()
    before = a.snapshot()
    with pytest.raises(error) as info:
        a.alloc(**kwargs)
    assert "victim" in str(info.value) and fragment in str(info.value)
    assert a.snapshot() == before
    assert issubclass(error, VAAllocError)


def test_free_and_size() -> None:
    a, vas = busy()
    before = a.snapshot()
    bad: list[Any] = [
        vas[1] + G,  # middle of a run
        vas[1] + 1,  # misaligned
        END,  # outside
        START - G,
        0,
        -G,
        None,
        "0x100000",
        float(vas[0]),
        True,
    ]
    for va in bad:
        with pytest.raises(InvalidFree) as info:
            a.free(va)
        assert "victim" in str(info.value)
        with pytest.raises(InvalidFree):
            a.size(va)
    assert a.snapshot() == before
    assert a.free(vas[0]) == 1
    with pytest.raises(InvalidFree):  # double free
        a.free(vas[0])
    with pytest.raises(InvalidFree):
        RangeAllocator(START, END, name="other").free(vas[1])  # foreign address


@pytest.mark.parametrize(
    "va,nr,error",
    [
        (START + 1, 1, AlignmentError),
        (END, 1, RangeError),
        (START - G, 1, RangeError),
        (END - G, 2, RangeError),
        (START + 100 * G, 0, RangeError),
        (START + 100 * G, -1, RangeError),
        ("x", 1, RangeError),
        (START, 1, OutOfSpace),  # in use
        (START + 1 * G, 1, OutOfSpace),  # the guard after the first run
        (START + 8 * G, 1, OutOfSpace),  # guard before the third run (at 9)
    ],
)
def test_reserve(va: Any, nr: Any, error: type[Exception]) -> None:
    a, _ = busy()
    before = a.snapshot()
    with pytest.raises(error):
        a.reserve(va, nr)
    assert a.snapshot() == before


def test_carve_and_release() -> None:
    a, _ = busy()
    before = a.snapshot()
    for kwargs, error in [
        ({"nr": 0}, RangeError),
        ({"nr": 1, "align": 3}, AlignmentError),
        ({"nr": 1, "policy": "nope"}, RangeError),
        ({"nr": 1, "guard": "yes"}, RangeError),
        ({"nr": 1, "name": 5}, RangeError),
        ({"nr": 1000}, OutOfSpace),
    ]:
        with pytest.raises(error):
            a.carve(**kwargs)
        assert a.snapshot() == before
    with pytest.raises(RangeError):
        a.release()  # not carved
    child = a.carve(8, name="kid")
    va = child.alloc(2)
    with pytest.raises(InUse):
        child.release()
    child.free(va)
    child.release()
    with pytest.raises(RangeError):
        child.release()
    with pytest.raises(RangeError):
        child.alloc(1)
    assert a.snapshot() == before


def _corrupt(snap: dict[str, Any]) -> list[Any]:
    out: list[Any] = [None, [], "snapshot", 42, {}]
    for key in snap:
        d = copy.deepcopy(snap)
        del d[key]
        out.append(d)
    extra = copy.deepcopy(snap)
    extra["surprise"] = 1
    out.append(extra)
    changes: list[tuple[str, Any]] = [
        ("format", "vaalloc.RangeAllocator/0"),
        ("name", "someone-else"),
        ("start", START + G),
        ("end", END - G),
        ("granule", 8192),
        ("policy", "best-fit"),
        ("guard", False),
        ("guard", 1),
        ("allocations", "none"),
        ("allocations", [[START, 1], [START, 1]]),  # overlap
        ("allocations", [[START, 1], [START + G, 1]]),  # no guard between
        ("allocations", [[START + 1, 1]]),  # misaligned
        ("allocations", [[END, 1]]),  # outside
        ("allocations", [[END - G, 2]]),  # runs past the end
        ("allocations", [[START, 0]]),  # empty
        ("allocations", [[START, True]]),
        ("allocations", [[START, 1, 2]]),
        ("allocations", [[float(START), 1]]),
        ("carves", [[START + 50 * G, 2, "ghost"]]),  # no such child
    ]
    for key, value in changes:
        d = copy.deepcopy(snap)
        d[key] = value
        out.append(d)
    return out


def test_restore_rejects_garbage_and_changes_nothing() -> None:
    a, _ = busy()
    snap = a.snapshot()
    json.dumps(snap)
    for bad in _corrupt(snap):
        with pytest.raises(SnapshotError) as info:
            a.restore(bad)
        assert "victim" in str(info.value)
        assert a.snapshot() == snap
    a.check()


def test_restore_rejects_unreachable_xen_state() -> None:
    x = RangeAllocator.xen_vmap(0x1000_0000, 0x4000_0000)
    for n in (1, 2, 3):
        x.alloc(n)
    snap = x.snapshot()
    bad_values = [
        {"vm_low": 7, "vm_top": 32768},  # inside a run's guard, not a hole start
        {"vm_low": 5, "vm_top": 32768},  # inside the bitmap pages
        {"vm_low": 8, "vm_top": 32769},  # not a bitmap-page multiple
        {"vm_low": 8, "vm_top": 300000},  # beyond vm_end
        {"vm_low": 8},
        {"vm_low": "8", "vm_top": 32768},
    ]
    for xen in bad_values:
        d = copy.deepcopy(snap)
        d["xen"] = xen
        with pytest.raises(SnapshotError):
            x.restore(d)
        assert x.snapshot() == snap
    d = copy.deepcopy(snap)
    d["allocations"] = [[0x1000_6000, 1]]  # touches the bitmap pages: no guard
    with pytest.raises(SnapshotError):
        x.restore(d)
    d["allocations"] = [[0x1000_7000, 1], [0x1000_8000, 1]]  # adjacent
    with pytest.raises(SnapshotError):
        x.restore(d)
    assert x.snapshot() == snap


CALLS: list[tuple[str, Callable[[RangeAllocator], object]]] = [
    ("stats", lambda a: a.stats()),
    ("allocations", lambda a: list(a.allocations())),
    ("check", lambda a: a.check()),
    ("children", lambda a: a.children()),
]


@pytest.mark.parametrize("name,call", CALLS)
def test_inspection_calls_change_nothing(
    name: str, call: Callable[[RangeAllocator], object]
) -> None:
    a, _ = busy()
    before = a.snapshot()
    call(a)
    assert a.snapshot() == before


def test_unsupported_is_a_vaalloc_error() -> None:
    assert issubclass(Unsupported, VAAllocError) and issubclass(InUse, VAAllocError)


def test_address_space_bad_input() -> None:
    from vaalloc.alloc import AddressSpace, NameConflict, UnknownName

    with pytest.raises(RangeError):
        AddressSpace(name=3)  # type: ignore[arg-type]
    space = AddressSpace("s")
    space.create(0, 16 * G, "a")
    before = [x.name for x in space]
    for call, error in [
        (lambda: space.add("not an allocator"), RangeError),  # type: ignore[arg-type]
        (lambda: space.lookup("0x10"), RangeError),  # type: ignore[arg-type]
        (lambda: space.create(8 * G, 24 * G, "b"), RangeError),
        (lambda: space.create(16 * G, 32 * G, "a"), NameConflict),
        (lambda: space.remove("zzz"), UnknownName),
        (lambda: space["zzz"], UnknownName),
        (lambda: space.create(16 * G, 16 * G, "c"), RangeError),
    ]:
        with pytest.raises(error) as info:
            call()
        message = info.value.args[0]  # args[0]: str() of a KeyError adds quotes
        assert message.startswith(("s:", "address space name", "allocator 'c'")), message
        assert [x.name for x in space] == before
